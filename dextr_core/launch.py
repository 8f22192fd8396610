"""Where the app's files are, and ``dextr-annotate``: start the Streamlit app from any folder.

The app (``app.py``, ``pages/``, ``ui/``, ``.streamlit/config.toml``, the sample ``anno_cfg.yml``
and ``samples/images``) lives next to ``dextr_core`` in a clone of the repository; an installed
copy (``pip install .``) carries the same files as the package data of ``dextr_annotator``
(pyproject.toml maps that package onto the repository root). :func:`app_dir` finds whichever is
there, so the commands behave the same from a clone and from an installed copy.

Command line::

    dextr-annotate [--config anno_cfg.yml] [streamlit options, e.g. --server.port 8502]

Config order (as the app's own): ``--config``, ``$ANNO_CFG``, ``./anno_cfg.yml`` in the current
folder, the sample ``anno_cfg.yml`` next to app.py. The server settings of the app's
``.streamlit/config.toml`` are passed on the command line (Streamlit reads that file only from the
current folder); options given here win. ``.streamlit/secrets.toml`` (the lead role) is read by
Streamlit from the current folder or ``~/.streamlit/``.

This module never imports Streamlit: it starts ``python -m streamlit run``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tomllib
from pathlib import Path

#: Environment variable naming the config file (the app reads the same one).
CONFIG_ENV = "ANNO_CFG"
CONFIG_NAME = "anno_cfg.yml"


class AppNotFoundError(RuntimeError):
    """Neither a clone's app.py nor the installed ``dextr_annotator`` package is there."""


def app_dir() -> Path:
    """The folder holding ``app.py`` (and ``pages/``, ``ui/``, the sample ``anno_cfg.yml``).

    A clone: the repository root (the parent of this package). An installed copy: the
    ``dextr_annotator`` package folder. Raises :class:`AppNotFoundError` when neither exists.
    """
    clone = Path(__file__).resolve().parents[1]
    if (clone / "app.py").is_file() and (clone / "ui").is_dir():
        return clone
    spec = importlib.util.find_spec("dextr_annotator")
    if spec is not None and spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations))).resolve()
        if (folder / "app.py").is_file():
            return folder
    raise AppNotFoundError(
        "the app's files (app.py, pages/, ui/) are not installed next to dextr_core; install the "
        "package with `pip install .` from a clone of the repository, or run `streamlit run "
        "app.py` in the clone")


def default_config_path(cwd: Path | None = None) -> Path:
    """The config used when none is named: ``$ANNO_CFG``, else ``./anno_cfg.yml`` when the
    current folder has one, else the sample ``anno_cfg.yml`` next to app.py (absolute path)."""
    env = os.environ.get(CONFIG_ENV, "").strip()
    if env:
        return Path(os.path.expanduser(env)).absolute()
    here = (cwd or Path.cwd()) / CONFIG_NAME
    if here.is_file():
        return here.absolute()
    try:
        return app_dir() / CONFIG_NAME
    except AppNotFoundError:
        return here.absolute()


def streamlit_flags(folder: Path) -> list[str]:
    """``--section.key=value`` flags for every setting of ``<folder>/.streamlit/config.toml``."""
    path = folder / ".streamlit" / "config.toml"
    if not path.is_file():
        return []
    flags = []
    for section, values in tomllib.loads(path.read_text(encoding="utf-8")).items():
        if isinstance(values, dict):
            for key, value in values.items():
                text = str(value).lower() if isinstance(value, bool) else str(value)
                flags.append(f"--{section}.{key}={text}")
    return flags


def command(argv: list[str] | None = None) -> list[str]:
    """The ``python -m streamlit run ...`` argument list that :func:`main` executes."""
    parser = argparse.ArgumentParser(
        prog="dextr-annotate",
        description="Start the DEXTR annotator (Streamlit). Other options go to streamlit run.")
    parser.add_argument("--config", help="annotation config (default: $ANNO_CFG, "
                        "./anno_cfg.yml, else the bundled sample config)")
    args, rest = parser.parse_known_args(argv)
    folder = app_dir()
    config = (Path(os.path.expanduser(args.config)).absolute() if args.config
              else default_config_path())
    given = {a.split("=", 1)[0] for a in rest if a.startswith("--")}
    flags = [f for f in streamlit_flags(folder) if f.split("=", 1)[0] not in given]
    return [sys.executable, "-m", "streamlit", "run", str(folder / "app.py"), *flags, *rest,
            "--", "--config", str(config)]


def main(argv: list[str] | None = None) -> int:
    """``dextr-annotate``: replace this process with the Streamlit server (see the docstring)."""
    try:
        cmd = command(argv)
    except AppNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    os.execv(cmd[0], cmd)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
