"""The package: a wheel built from the repository's files, imported from a folder outside the
repository in a fresh interpreter (no network: ``pip wheel --no-deps --no-build-isolation
--no-index`` with the installed setuptools)."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = {"dextr-annotate": "dextr_core.launch:main", "dextr-export": "dextr_core.export:main",
           "dextr-evaluate": "dextr_core.evaluate:main",
           "dextr-download": "dextr_core.download:main",
           "dextr-import": "dextr_core.importer:main"}


_NOT_SOURCES = {".git", "__pycache__", ".pytest_cache", ".ruff_cache", ".venv", "build", "dist",
                "test-artifacts", "exports", "masks"}


def _repo_files() -> list[str]:
    """The files a clean clone has: tracked, plus new files git does not ignore (without git,
    e.g. an unpacked archive: every file but caches, build output and weights)."""
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                             capture_output=True, check=True).stdout.decode()
        return [f for f in out.split("\0") if f and (REPO / f).is_file()]
    except (OSError, subprocess.CalledProcessError):
        pass
    files = []
    for folder, dirs, names in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in _NOT_SOURCES and not d.endswith(".egg-info")]
        for name in names:
            if not name.endswith((".pyc", ".h5", ".part")) and not name.startswith(".dextr_"):
                files.append(os.path.relpath(os.path.join(folder, name), REPO))
    return files


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel, built in a copy of the clone and unpacked into ``site/`` (what pip install
    puts in site-packages)."""
    root = tmp_path_factory.mktemp("pkg")
    src = root / "src"
    src.mkdir()
    bundle = root / "src.tar"
    with tarfile.open(bundle, "w") as tar:
        for name in _repo_files():
            tar.add(REPO / name, arcname=name)
    with tarfile.open(bundle) as tar:
        tar.extractall(src, filter="data")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "-q", "-w", str(root / "dist"), str(src)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (root / "dist").glob("dextr_annotator-*.whl")
    site = root / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    return site


def _run(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ANNO_CFG")}
    env["PYTHONPATH"] = str(site)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_wheel_imports_from_a_folder_outside_the_repository(installed, tmp_path):
    code = ("import dextr_core, dextr_core.export, dextr_core.config, dextr_core.download;"
            "from dextr_core.launch import app_dir;"
            "print(dextr_core.__file__); print(app_dir())")
    result = _run(installed, tmp_path, "-c", code)
    assert result.returncode == 0, result.stderr
    module_file, app = result.stdout.split()
    assert Path(module_file).is_relative_to(installed)
    assert Path(app) == installed / "dextr_annotator"
    assert not Path(module_file).is_relative_to(REPO)


def test_python_m_dextr_core_export_help_works_from_any_folder(installed, tmp_path):
    result = _run(installed, tmp_path, "-m", "dextr_core.export", "--help")
    assert result.returncode == 0, result.stderr
    assert "--format" in result.stdout and "yolo" in result.stdout  # dextr_core.formats installed
    result = _run(installed, tmp_path, "-m", "dextr_core.importer", "--help")
    assert result.returncode == 0, result.stderr
    assert "--coco" in result.stdout


def test_the_wheel_carries_the_app_and_its_console_scripts(installed):
    app = installed / "dextr_annotator"
    for name in ("app.py", "pages/annotate.py", "pages/progress.py", "ui/resources.py",
                 "ui/roles.py", ".streamlit/config.toml", "anno_cfg.yml",
                 "samples/images/astronaut.jpg", "models/README.md", "docs/roles.md"):
        assert (app / name).is_file(), name
    assert not (app / "setup.py").exists() and not (installed / "tests").exists()
    (entry_points,) = installed.glob("dextr_annotator-*.dist-info/entry_points.txt")
    text = entry_points.read_text()
    for script, target in SCRIPTS.items():
        assert f"{script} = {target}" in text


def test_the_app_launcher_starts_streamlit_on_the_installed_app(installed, tmp_path):
    """dextr-annotate's command line (not executed): the installed app.py, the app's server
    settings, and the config (the bundled sample, which loads)."""
    code = ("import json; from dextr_core.launch import command;"
            "from dextr_core.config import load_config;"
            "cmd = command(['--server.port', '8600']); print(json.dumps(cmd));"
            "print(load_config(cmd[-1]).source)")
    result = _run(installed, tmp_path, "-c", code)
    assert result.returncode == 0, result.stderr
    import json

    first, source = result.stdout.splitlines()
    cmd = json.loads(first)
    app = installed / "dextr_annotator"
    assert cmd[1:5] == ["-m", "streamlit", "run", str(app / "app.py")]
    assert "--server.headless=true" in cmd and "--server.port" in cmd
    assert not any(a.startswith("--server.port=") for a in cmd), "the caller's option wins"
    assert cmd[-2:] == ["--config", str(app / "anno_cfg.yml")]
    assert Path(source) == app / "samples" / "images"


@pytest.mark.slow  # a venv and four interpreter starts: ~40 s
def test_pip_install_into_a_fresh_venv_gives_working_console_scripts(installed, tmp_path):
    """The venv sees this machine's packages (no network for the dependencies); the wheel
    itself is installed into it with pip."""
    (wheel,) = (installed.parent / "dist").glob("dextr_annotator-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, timeout=300)
    bin_dir = venv / "bin"
    result = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--no-deps",
                             "--no-index", "--disable-pip-version-check", "-q", str(wheel)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ANNO_CFG")}
    for script in ("dextr-export", "dextr-import", "dextr-download", "dextr-evaluate",
                   "dextr-annotate"):
        run = subprocess.run([str(bin_dir / script), "--help"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, (script, run.stderr)
        assert "usage" in run.stdout.lower(), script


@pytest.mark.slow  # a fresh interpreter runs the whole app once: ~30 s
def test_the_installed_app_runs_from_its_installed_copy(installed, tmp_path):
    """app.py of the installed copy, run headless (AppTest) in a fresh interpreter that sees only
    the installed packages, on a config outside the repository. app.py's folder goes first on
    sys.path as ``streamlit run`` puts it there."""
    import shutil

    photos = tmp_path / "project" / "photos"
    photos.mkdir(parents=True)
    for name in ("astronaut.jpg", "coffee.jpg"):
        shutil.copy(installed / "dextr_annotator" / "samples" / "images" / name, photos)
    cfg = tmp_path / "project" / "anno_cfg.yml"
    cfg.write_text("required:\n  source: photos\n  destination: masks\n")
    code = """
import sys
from dextr_core.launch import app_dir
sys.path.insert(0, str(app_dir()))
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(str(app_dir() / "app.py"), default_timeout=240).run()
assert not at.exception, at.exception
print("ERRORS", [e.value for e in at.error])
print("SIDEBAR", [w.value for w in at.sidebar.warning], [c.value for c in at.sidebar.caption])
import ui.resources
print("UI", ui.resources.__file__)
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(installed), ANNO_CFG=str(cfg))
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "ERRORS []" in out
    shown = out.replace("\\", "")  # markdown escapes in the sidebar's text
    assert "Fallback segmenter" in shown and str(cfg) in shown
    assert f"UI {installed / 'dextr_annotator' / 'ui' / 'resources.py'}" in out
    assert (tmp_path / "project" / "photos" / ".dextr_progress.json").is_file()


def test_the_default_config_is_anno_cfg_env_then_the_current_folder_then_the_sample(
        tmp_path, monkeypatch):
    from dextr_core.launch import app_dir, command, default_config_path

    monkeypatch.delenv("ANNO_CFG", raising=False)
    assert default_config_path(tmp_path) == REPO / "anno_cfg.yml" == app_dir() / "anno_cfg.yml"
    (tmp_path / "anno_cfg.yml").write_text("required: {}\n")
    assert default_config_path(tmp_path) == tmp_path / "anno_cfg.yml"
    monkeypatch.setenv("ANNO_CFG", str(tmp_path / "elsewhere.yml"))
    assert default_config_path(tmp_path) == tmp_path / "elsewhere.yml"
    cmd = command(["--config", str(tmp_path / "given.yml")])
    assert cmd[-2:] == ["--config", str(tmp_path / "given.yml")]
    assert cmd[4] == str(REPO / "app.py"), "from a clone the clone's own app.py runs"
