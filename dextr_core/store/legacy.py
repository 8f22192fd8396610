"""DEXTR-AnnoTool's progress file (``admin.progress_file``, default ``<source>/.anno_prog``): read,
never written.

DEXTR-AnnoTool (its ``helpers/annotools.py``) keeps it in the source folder and rewrites it with
ruamel.yaml as images are marked, in this shape::

    required:                        # a copy of the config's required: section (paths)
      source: ./sample_images
      destination: ./sample_images/segMasks
    annotated:
      bear.jpg: yes                  # yes / true -> done
      dog-cat.jpg: skip              # skip -> skipped
      plane.jpg: no                  # no / false -> to do

Its first version wrote the flat mapping ``{image: yes/no/skip}``, read the same way. PyYAML
reads yes/no as booleans; the strings and true/false are accepted too.

``required:`` is the seed's config at the time the file was made, not a list of images; the seed
tool itself never read it back. Its relative paths were resolved against the folder the tool ran
in, which is the folder holding ``anno_cfg.yml`` (``annotate.py`` opens it by that name), so they
are resolved here against the config's folder, as this tool's config does.
:func:`path_differences` says in words where they disagree with this config's folders: a
message, not a refusal, because the file's place (the source folder) and the image names decide
which photos it describes; the paths only tell where the seed's masks went.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import DextrError

__all__ = ["LegacyProgress", "LegacyProgressError", "legacy_status", "path_differences",
           "read_legacy_progress"]


class LegacyProgressError(DextrError):
    """DEXTR-AnnoTool's progress file cannot be read or is not of its shape (the message says
    which); nothing is imported from it."""


@dataclass(frozen=True)
class LegacyProgress:
    """A parsed DEXTR-AnnoTool progress file.

    ``annotated``: image name as written -> "done" | "skipped" | "todo"; ``bad``: the entries
    whose value is none of yes/no/skip, as ``"name: value"``; ``source`` / ``destination``: the
    ``required:`` section's paths as written (None when absent, e.g. the flat first version).
    """

    path: Path
    annotated: dict[str, str] = field(default_factory=dict)
    bad: list[str] = field(default_factory=list)
    source: str | None = None
    destination: str | None = None


def legacy_status(value: Any) -> str | None:
    """The store status for one ``annotated:`` value (True/"yes" -> done, False/None/"no" ->
    todo, "skip" -> skipped); None when it is none of those."""
    if value is True:
        return "done"
    if value is False or value is None:
        return "todo"
    text = str(value).strip().lower()
    if text in ("yes", "y", "true", "done", "1"):
        return "done"
    if text in ("no", "n", "false", "todo", "0", ""):
        return "todo"
    if text in ("skip", "skipped"):
        return "skipped"
    return None


def read_legacy_progress(path: Path) -> LegacyProgress:
    """Read DEXTR-AnnoTool's progress file at ``path`` (the file is only read).

    Raises :class:`LegacyProgressError` when it cannot be read (I/O, not UTF-8, not YAML) or
    is not of the shape above; the message says what is wrong with it.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise LegacyProgressError(f"could not be read ({exc})") from exc
    if data is None:
        return LegacyProgress(path)
    if not isinstance(data, dict):
        raise LegacyProgressError(
            f"is not a mapping (it holds a {type(data).__name__}); DEXTR-AnnoTool writes "
            "'required:' (source and destination) and 'annotated:' (image: yes/no/skip)")
    required: Any = {}
    annotated: Any = data
    if "annotated" in data or "required" in data:
        annotated = data.get("annotated") or {}
        required = data.get("required") or {}
    if not isinstance(annotated, dict):
        raise LegacyProgressError(f"has 'annotated:' holding a {type(annotated).__name__}, not "
                                  "a mapping of image: yes/no/skip")
    if not isinstance(required, dict):
        raise LegacyProgressError(
            f"has 'required:' holding a {type(required).__name__}, not DEXTR-AnnoTool's copy of "
            "the config's required: section (source: and destination:)")
    statuses, bad = {}, []
    for key, value in annotated.items():
        status = legacy_status(value)
        if status is None:
            bad.append(f"{key}: {value!r}")
        else:
            statuses[str(key)] = status
    paths = {k: v.strip() if isinstance(v, str) and v.strip() else None
             for k, v in ((k, required.get(k)) for k in ("source", "destination"))}
    return LegacyProgress(path, statuses, bad, paths["source"], paths["destination"])


def _folder(written: str, base: Path) -> Path:
    p = Path(os.path.expanduser(written))
    return Path(os.path.normpath(p if p.is_absolute() else base / p))


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return os.path.normpath(a) == os.path.normpath(b)


def path_differences(progress: LegacyProgress, base: Path, source: Path,
                     destination: Path | None, masks_found: tuple[int, int] | None = None
                     ) -> list[str]:
    """Sentences for each folder of the seed's ``required:`` that is not this config's.

    ``base``: the folder relative paths are resolved against (the config's folder); ``source``
    / ``destination``: this config's folders; ``masks_found``: (found, looked for) mask files of
    the images imported as done, quoted in the destination sentence. [] when both agree or the
    file has no ``required:`` paths.
    """
    out = []
    name = progress.path
    if progress.source is not None:
        seed = _folder(progress.source, base)
        if not _same(seed, source):
            out.append(
                f"DEXTR-AnnoTool's progress file {name} was made for the photos in {seed} (its "
                f"required.source: {progress.source!r}, relative to the config's folder "
                f"{base}); this config's source is {source}. Its entries were matched by file "
                f"name in {source}. If these are other photos, a lead can reset the progress "
                "on the Progress page (the file is not imported again).")
    if progress.destination is not None and destination is not None:
        seed = _folder(progress.destination, base)
        if not _same(seed, destination):
            found = ""
            if masks_found is not None:
                found = (f" (found for {masks_found[0]} of the {masks_found[1]} images it marked "
                         "done)")
            out.append(
                f"DEXTR-AnnoTool's progress file {name} says its masks were saved to {seed} "
                f"(its required.destination: {progress.destination!r}); this config's "
                f"destination is {destination}, where they were looked for{found}. If the masks "
                f"are in {seed}, copy them into {destination} or set required.destination to "
                "that folder, then restart the app.")
    return out
