"""Fetch published weights: ``python -m dextr_core.download [pascal-sbd|pascal|coco|sam-vit-b|
sam-vit-l|sam-vit-h|mobile-sam]`` (DEXTR's three files; SAM's and MobileSAM's checkpoints, see
:data:`SAM_FILES` for what is checked).

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
import hashlib
import http.client
import os
import shlex
import shutil
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
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

@dataclass(frozen=True)
class SamFile:
    """A published SAM-family checkpoint: its file name, where it is published, the MD5 the
    file must have (None where no published checksum is known: then only its layout is checked)
    and the variant :func:`dextr_core.sam.read_checkpoint` must find in it."""

    name: str
    url_base: str
    md5: str | None
    variant: str


#: SAM checkpoints (Apache-2.0). The ViT MD5s are the ones the SAM files are named after (the
#: first six hex digits are in the names) as listed by several projects that verify them;
#: MobileSAM publishes no checksum, so its download is checked by layout only (and its MD5 printed).
SAM_FILES = {
    "sam-vit-b": SamFile("sam_vit_b_01ec64.pth", "https://dl.fbaipublicfiles.com/segment_anything/",
                         "01ec64d29a2fca3f0661936605ae66f8", "vit_b"),
    "sam-vit-l": SamFile("sam_vit_l_0b3195.pth", "https://dl.fbaipublicfiles.com/segment_anything/",
                         "0b3195507c641ddb6910d2bb5adee89c", "vit_l"),
    "sam-vit-h": SamFile("sam_vit_h_4b8939.pth", "https://dl.fbaipublicfiles.com/segment_anything/",
                         "4b8939a88964f0f4ff5f5b2642c598a6", "vit_h"),
    "mobile-sam": SamFile("mobile_sam.pt",
                          "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/",
                          None, "mobile_sam"),
}
#: Every model the command knows -> its file name.
ALL_FILES = {**WEIGHT_FILES, **{model: f.name for model, f in SAM_FILES.items()}}
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
    return next((m for m, f in ALL_FILES.items() if f == name), "pascal-sbd")


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


def check_sam_layout(path: str | os.PathLike, model: str, md5: str | None = None) -> None:
    """Raise :class:`DownloadError` unless ``path`` is the SAM checkpoint ``model`` (a key of
    :data:`SAM_FILES`): its MD5 (``md5``: the file's, computed while downloading; else read) is
    the published one where that is known, and :func:`dextr_core.sam.read_checkpoint` finds the
    expected variant (without torch installed: that it is a PyTorch file)."""
    from .sam import describe_file, read_checkpoint
    from .weights import WeightsError

    published = SAM_FILES[model]
    if published.md5 is not None:
        md5 = md5 or file_md5(path)
        if md5 != published.md5:
            raise DownloadError(f"the downloaded file's MD5 is {md5}, not the published "
                                f"{published.md5}: a damaged or different file")
    try:
        variant, _ = read_checkpoint(path)
    except WeightsError as exc:
        if isinstance(exc.__cause__, ImportError) and describe_file(path) == "torch":
            return  # no torch here: the MD5 (where known) and the file type are what is checked
        raise DownloadError(f"the downloaded file is not a SAM checkpoint ({exc})") from exc
    if variant != published.variant:
        raise DownloadError(f"the downloaded file is a {variant} checkpoint, not {published.name}")


def file_md5(path: str | os.PathLike) -> str:
    """Hex MD5 of a file (read in 1 MiB blocks)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def check_file(path: str | os.PathLike, model: str, md5: str | None = None) -> None:
    """:func:`check_sam_layout` for a SAM model, else :func:`check_weights_layout`."""
    if model in SAM_FILES:
        check_sam_layout(path, model, md5)
    else:
        check_weights_layout(path)


def _manual_route(url: str, dest: Path, file_name: str) -> str:
    return (
        f"Download {url} by another route (a browser, another machine) and put it in {dest}/ as "
        f"{file_name}; see models/README.md."
    )


def download(
    model: str = "pascal-sbd",
    dest: str | os.PathLike = DEFAULT_DEST,
    *,
    url_base: str | None = None,
    timeout: float = 60.0,
    progress: bool = True,
    out: str | os.PathLike | None = None,
) -> Path:
    """Download the published weights ``model`` (a key of :data:`WEIGHT_FILES` or
    :data:`SAM_FILES`) into ``dest`` under its published name, or as the file ``out`` when given.
    ``url_base``: the folder URL to fetch the file from (default: where it is published).

    Returns the final path. Raises :class:`DownloadError` (offline, HTTP error, interrupted
    transfer, not a DEXTR file); then no file exists under the final name that was not there
    before and the ``.part`` file is removed.
    """
    from tqdm import tqdm

    if model not in ALL_FILES:
        raise DownloadError(f"unknown model {model!r}; choose one of {', '.join(ALL_FILES)}")
    file_name = ALL_FILES[model]
    if url_base is None:
        url_base = SAM_FILES[model].url_base if model in SAM_FILES else URL_BASE
    url = url_base.rstrip("/") + "/" + file_name
    digest = hashlib.md5(usedforsecurity=False)
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
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
        if total is not None and received != total:
            raise DownloadError(f"the transfer stopped after {received} of {total} bytes")
        check_file(part, model, digest.hexdigest())
        os.replace(part, final)
        if model in SAM_FILES and SAM_FILES[model].md5 is None and progress:
            print(f"MD5 of {final.name}: {digest.hexdigest()} (no published checksum to compare)")
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
        return model, Path(args.dest).expanduser().absolute() / ALL_FILES[model], None
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
        description="Download published DEXTR (or SAM) weights to where the server looks for them: "
                    "optional.weights of the config (--config, default: $ANNO_CFG, "
                    "./anno_cfg.yml, else the sample config), or --out FILE / --dest DIR.",
    )
    parser.add_argument(
        "model",
        nargs="?",
        default=None,
        choices=sorted(ALL_FILES),
        help="which weights (default: the one the config names, else pascal-sbd, the best on "
             "PASCAL); sam-vit-b / mobile-sam: a SAM checkpoint (needs pip install \".[sam]\" "
             "to run)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--config", help="save as this config's optional.weights")
    where.add_argument("--out", type=Path, help="save as this file")
    where.add_argument("--dest", type=Path,
                       help="save into this folder under the published name")
    parser.add_argument("--url-base", default=None, help=argparse.SUPPRESS)
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
            check_file(existing, model)
        except DownloadError:
            print(
                f"{existing} exists but is not a valid {ALL_FILES[model]}; downloading it again.",
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
