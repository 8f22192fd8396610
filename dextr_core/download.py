"""Fetch the published DEXTR weights: ``python -m dextr_core.download [pascal-sbd|pascal|coco]``.

The file is written to ``<dest>/<name>.part`` and renamed to ``<dest>/<name>`` only once the whole
file has arrived and opens as a DEXTR weights file (HDF5 with the expected layer names), so an
interrupted download never leaves a broken file under the real name. Without internet access, put
the file in models/ by hand (models/README.md). Exit code 0 on success, 1 on any failure.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import h5py

from .errors import DextrError
from .weights import expected_layer_names

#: Where the DEXTR project publishes its weights.
URL_BASE = "https://data.vision.ee.ethz.ch/csergi/share/DEXTR/"
#: Model name on the command line -> published file name.
WEIGHT_FILES = {
    "pascal-sbd": "dextr_pascal-sbd.h5",
    "pascal": "dextr_pascal.h5",
    "coco": "dextr_coco.h5",
}
#: Default destination: models/ of this repository.
DEFAULT_DEST = Path(__file__).resolve().parents[1] / "models"
CHUNK_BYTES = 1 << 20


class DownloadError(DextrError):
    """A download that failed; the message says what failed and the manual route."""


def check_weights_layout(path: str | os.PathLike) -> None:
    """Raise :class:`DownloadError` unless ``path`` opens as HDF5 and lists every DEXTR layer."""
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
) -> Path:
    """Download the published weights ``model`` (a key of :data:`WEIGHT_FILES`) into ``dest``.

    Returns the final path. Raises :class:`DownloadError` (offline, HTTP error, interrupted
    transfer, not a DEXTR file); then no file exists under the final name that was not there
    before and the ``.part`` file is removed.
    """
    from tqdm import tqdm

    if model not in WEIGHT_FILES:
        raise DownloadError(f"unknown model {model!r}; choose one of {', '.join(WEIGHT_FILES)}")
    file_name = WEIGHT_FILES[model]
    dest = Path(dest)
    url = url_base.rstrip("/") + "/" + file_name
    final = dest / file_name
    part = dest / (file_name + ".part")
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
        f"{_manual_route(url, dest, file_name)}"
    )


def main(argv: list[str] | None = None) -> int:
    """Command line entry; returns the exit code (0 success, 1 failure)."""
    parser = argparse.ArgumentParser(
        prog="python -m dextr_core.download",
        description="Download published DEXTR weights into models/ (or --dest).",
    )
    parser.add_argument(
        "model",
        nargs="?",
        default="pascal-sbd",
        choices=sorted(WEIGHT_FILES),
        help="which weights (default: pascal-sbd, the best on PASCAL)",
    )
    parser.add_argument(
        "--dest",
        type=Path,
        default=DEFAULT_DEST,
        help=f"folder to save into (default: {DEFAULT_DEST})",
    )
    parser.add_argument("--url-base", default=URL_BASE, help=argparse.SUPPRESS)
    parser.add_argument(
        "--force", action="store_true", help="download again even if a valid file is already there"
    )
    args = parser.parse_args(argv)

    existing = args.dest / WEIGHT_FILES[args.model]
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
        path = download(args.model, args.dest, url_base=args.url_base)
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"Saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
