"""Shared test fixtures: where the repo, its samples and the shared evaluation data are, a private
engine cache for the run, a DEXTR network with seeded weights in the published layout, and the
throwaway PostgreSQL server with the fixtures that run a test on both store backends
(tests/pg_server.py). Helpers that build small projects are plain functions in tests/projects.py."""

import os
from pathlib import Path

import pytest
from clocks import Clock
from pg_server import pg_server, pg_url, store_backend, store_location  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parents[1]
#: ``DEXTR_TESTS_NO_SHARED=1`` runs the suite as on a clone with nothing beside it (.ci/run does
#: that once): every test that needs ``../shared`` must then skip with that reason.
NO_SHARED_ENV = "DEXTR_TESTS_NO_SHARED"
SHARED = (REPO.parent / "shared") if not os.environ.get(NO_SHARED_ENV) \
    else REPO / "tests" / "data" / "no-shared-here"
EVALDATA = SHARED / "evaldata"
SAMPLES = REPO / "samples" / "images"
#: The published files' layer layout (facts, copied from ../shared/dextr/weights-manifest.json;
#: tests/test_weights.py checks that the copy still equals the shared file where it is present).
MANIFEST = REPO / "tests" / "data" / "weights-manifest.json"


@pytest.fixture(scope="session")
def evaldata_dir() -> Path:
    """``../shared/evaldata`` read in place; tests using it skip where it is absent."""
    if not (EVALDATA / "grabcut").is_dir():
        pytest.skip("needs the shared evaluation photos: ../shared/evaldata is not present")
    return EVALDATA


@pytest.fixture(scope="session")
def spec_manifest() -> list:
    """The 219 weighted layers of the published DEXTR files: [name, [weight names], [shapes]]
    (tests/data/weights-manifest.json, in the repository)."""
    import json

    return json.loads(MANIFEST.read_text())


@pytest.fixture(scope="session", autouse=True)
def private_engine_cache(tmp_path_factory) -> Path:
    """The OpenVINO export cache (dextr_core.ir_cache) in a fresh folder for this test run, so
    tests start cold and never touch the user's ~/.cache."""
    folder = tmp_path_factory.mktemp("dextr-cache")
    os.environ["DEXTR_CACHE_DIR"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def seeded_dextr(tmp_path_factory):
    """``(model, path)``: a DEXTR network with seeded weights (``dextr_core.weights.seeded_dextr``)
    and those weights written to ``seeded_dextr.h5`` in the published layout."""
    from dextr_core.weights import save_dextr_weights, seeded_dextr

    model = seeded_dextr(1234)
    path = tmp_path_factory.mktemp("weights") / "seeded_dextr.h5"
    save_dextr_weights(model, path)
    yield model, path
    path.unlink()  # ~196 MB; pytest keeps the last runs' tmp folders


_shared_skips: list[str] = []


def pytest_runtest_logreport(report):
    """Remember tests skipped for want of ../shared (see :func:`pytest_sessionfinish`)."""
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2])
        if "shared" in reason:
            _shared_skips.append(f"{report.nodeid}: {reason}")


#: Skip reasons allowed when ../shared is absent: the evaluation photos are data a newcomer does
#: not have; the manifest comparison has nothing to compare with.
ALLOWED_SHARED_SKIPS = ("needs the shared evaluation photos", "nothing to compare with")


def pytest_sessionfinish(session, exitstatus):
    """With DEXTR_TESTS_NO_SHARED set, a test skipped because ../shared is absent for any other
    reason than the evaluation photos fails the run: the tests must be self-contained."""
    if not os.environ.get(NO_SHARED_ENV):
        return
    bad = [s for s in _shared_skips if not any(ok in s for ok in ALLOWED_SHARED_SKIPS)]
    if bad:
        print("\nTests that skip without ../shared but should not:\n  " + "\n  ".join(bad))
        session.exitstatus = 1


@pytest.fixture(autouse=True)
def _fresh_lead_password_limiter():
    """ui.roles counts wrong lead passwords per server process; each test starts with none."""
    import sys

    limiter = getattr(sys.modules.get("ui.roles"), "LIMITER", None)
    if limiter is not None:
        limiter.reset()
    yield


@pytest.fixture
def clock() -> Clock:
    """The injected clock (tests/clocks.py) a store or session under test reads."""
    return Clock()
