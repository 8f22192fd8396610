"""Fetch the published DEXTR weights: ``python -m dextr_core.download [pascal-sbd|pascal|coco]``.

One weights location rule, shared by the config, this command, the sidebar and models/README.md:
the server looks for the file that ``optional.weights`` names, relative to the config file's
folder, by default ``<config folder>/models/dextr_pascal-sbd.h5`` (:func:`default_weights_path`).
This command saves exactly there: ``--config FILE`` reads that config's ``optional.weights``;
with no option it uses the config the app would use by default (``$ANNO_CFG``, ``./anno_cfg.yml``,
else the sample next to app.py). ``--out FILE`` or ``--dest DIR`` save elsewhere.
:func:`install_command` is the exact command for a given path (the sidebar shows it).

The file is written to ``<final>.part`` and renamed to its final name only once the whole file
has arrived and opens as a DEXTR weights file (HDF5 with the expected layer names), so an
interrupted download never leaves a broken file under the real name. Without internet access, put
the file there by hand (models/README.md). Exit code 0 on success, 1 on any failure.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import shlex
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

from .config import DEFAULT_WEIGHTS_FILE, DEFAULT_WEIGHTS_FOLDER, ConfigError, load_config
from .errors import DextrError
from .weights import expected_layer_names

#: Where the DEXTR project publishes its weights.
URL_BASE = "https://data.vision.ee.ethz.ch/csergi/share/DEXTR/"
#: Model name on the command line -> published file name (the first is the config's default).
WEIGHT_FILES = {
    "pascal-sbd": DEFAULT_WEIGHTS_FILE,
    "pascal": "dextr_pascal.h5",
    "coco": "dextr_coco.h5",
}
CHUNK_BYTES = 1 << 20


def default_weights_path(config_dir: str | os.PathLike | None = None) -> Path:
    """The weights file a config in ``config_dir`` uses when it names none (absolute path):
    ``<config_dir>/models/dextr_pascal-sbd.h5``. ``config_dir`` None: the folder of the config the
    app uses by default (:func:`dextr_core.launch.default_config_path`)."""
    if config_dir is None:
        from .launch import default_config_path

        config_dir = default_config_path().parent
    return Path(os.path.abspath(Path(config_dir).expanduser())) / DEFAULT_WEIGHTS_FOLDER \
        / DEFAULT_WEIGHTS_FILE


#: Kept for callers of the first version: the default folder of the default config.
DEFAULT_DEST = default_weights_path().parent


def _python() -> str:
    """``python`` when that is this interpreter on PATH, else this interpreter's full path."""
    found = shutil.which("python")
    if found and os.path.realpath(found) == os.path.realpath(sys.executable):
        return "python"
    return shlex.quote(sys.executable)


def model_for(path: str | os.PathLike) -> str:
    """The model key whose published file name is ``path``'s name, else "pascal-sbd"."""
    name = Path(path).name
    return next((m for m, f in WEIGHT_FILES.items() if f == name), "pascal-sbd")


def install_command(path: str | os.PathLike) -> str:
    """The exact shell command that downloads the weights and saves them as ``path`` (the file
    the server looks for), e.g. ``python -m dextr_core.download pascal-sbd --out
    /srv/anno/models/dextr_pascal-sbd.h5``. It works from any folder (absolute path, quoted)."""
    target = Path(os.path.abspath(Path(path).expanduser()))
    return (f"{_python()} -m dextr_core.download {model_for(target)} "
            f"--out {shlex.quote(str(target))}")


class DownloadError(DextrError):
    """A download that failed; the message says what failed and the manual route."""


def check_weights_layout(path: str | os.PathLike) -> None:
    """Raise :class:`DownloadError` unless ``path`` opens as HDF5 and lists every DEXTR layer."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            names = {
                n.decode() if isinstance(n, bytes) else str(n)
                for n in f.attrs.get("layer_names", [])
            }
            missing = [n for n in expected_layer_names() if n not in names or n not in f]
    except OSError as exc:
        raise DownloadError(f"the downloaded file does not open as HDF5 ({exc})") from exc
    if missing:
        raise DownloadError(
            f"the downloaded file is HDF5 but not a DEXTR weights file: {len(missing)} layers "
            f"missing, the first '{missing[0]}'"
        )


def _manual_route(url: str, dest: Path, file_name: str) -> str:
    return (
        f"Download {url} by another route (a browser, another machine) and put it in {dest}/ as "
        f"{file_name}; see models/README.md."
    )


def download(
    model: str = "pascal-sbd",
    dest: str | os.PathLike = DEFAULT_DEST,
    *,
    url_base: str = URL_BASE,
    timeout: float = 60.0,
    progress: bool = True,
    out: str | os.PathLike | None = None,
) -> Path:
    """Download the published weights ``model`` (a key of :data:`WEIGHT_FILES`) into ``dest``
    under its published name, or as the file ``out`` when given.

    Returns the final path. Raises :class:`DownloadError` (offline, HTTP error, interrupted
    transfer, not a DEXTR file); then no file exists under the final name that was not there
    before and the ``.part`` file is removed.
    """
    from tqdm import tqdm

    if model not in WEIGHT_FILES:
        raise DownloadError(f"unknown model {model!r}; choose one of {', '.join(WEIGHT_FILES)}")
    file_name = WEIGHT_FILES[model]
    url = url_base.rstrip("/") + "/" + file_name
    final = Path(out) if out is not None else Path(dest) / file_name
    dest = final.parent
    part = final.with_name(final.name + ".part")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            total = response.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            received = 0
            with (
                open(part, "wb") as out,
                tqdm(
                    total=total, unit="B", unit_scale=True, desc=file_name, disable=not progress
                ) as bar,
            ):
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
        if total is not None and received != total:
            raise DownloadError(f"the transfer stopped after {received} of {total} bytes")
        check_weights_layout(part)
        os.replace(part, final)
        return final
    except urllib.error.HTTPError as exc:
        message = f"the server answered HTTP {exc.code} {exc.reason}"
        error = DownloadError(message)
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        error = DownloadError(f"{type(exc).__name__}: {reason}")
    except DownloadError as exc:
        error = exc
    finally:
        if part.exists():
            with contextlib.suppress(OSError):
                part.unlink()
    raise DownloadError(
        f"Could not download {url}: {error}. No file was saved as {final}. "
        f"Check the internet connection (or proxy settings) and try again, or: "
        f"{_manual_route(url, dest, final.name)}"
    )


def _target(args: argparse.Namespace) -> tuple[str, Path, str | None]:
    """(model, final path, note) from the command line: --out, --dest, --config, else the
    default config's optional.weights."""
    if args.out is not None:
        return args.model or model_for(args.out), Path(args.out).expanduser().absolute(), None
    if args.dest is not None:
        model = args.model or "pascal-sbd"
        return model, Path(args.dest).expanduser().absolute() / WEIGHT_FILES[model], None
    from .launch import default_config_path

    config = Path(args.config).expanduser().absolute() if args.config else default_config_path()
    try:
        weights = load_config(config).weights
        note = f"the file optional.weights of {config} names"
    except ConfigError as exc:
        if args.config:
            raise
        weights = default_weights_path(config.parent)
        note = f"the default for a config in {config.parent} ({exc.problems[0]})"
    return args.model or model_for(weights), weights, note


def main(argv: list[str] | None = None) -> int:
    """Command line entry; returns the exit code (0 success, 1 failure)."""
    parser = argparse.ArgumentParser(
        prog="python -m dextr_core.download",
        description="Download published DEXTR weights to where the server looks for them: "
                    "optional.weights of the config (--config, default: $ANNO_CFG, "
                    "./anno_cfg.yml, else the sample config), or --out FILE / --dest DIR.",
    )
    parser.add_argument(
        "model",
        nargs="?",
        default=None,
        choices=sorted(WEIGHT_FILES),
        help="which weights (default: the one the config names, else pascal-sbd, the best on "
             "PASCAL)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--config", help="save as this config's optional.weights")
    where.add_argument("--out", type=Path, help="save as this file")
    where.add_argument("--dest", type=Path,
                       help="save into this folder under the published name")
    parser.add_argument("--url-base", default=URL_BASE, help=argparse.SUPPRESS)
    parser.add_argument(
        "--force", action="store_true", help="download again even if a valid file is already there"
    )
    args = parser.parse_args(argv)

    try:
        model, existing, note = _target(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if note:
        print(f"Weights go to {existing}: {note}.")
    if existing.is_file() and not args.force:
        try:
            check_weights_layout(existing)
        except DownloadError:
            print(
                f"{existing} exists but is not a valid DEXTR file; downloading it again.",
                file=sys.stderr,
            )
        else:
            print(f"{existing} is already there (use --force to download it again).")
            return 0
    try:
        path = download(model, existing.parent, url_base=args.url_base, out=existing)
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"Saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
