"""The annotation config (``anno_cfg.yml``): read once, validated once, every problem reported.

Layout (DEXTR-AnnoTool's keys plus a few new optional ones)::

    required:
      source: images            # folder of photos (sub-folders included)
      destination: masks        # where the per-image label maps go (sub-folders mirrored)
    optional:
      update: true              # look for new / vanished images at start
      mask_suffix: _mask        # img.jpg -> img_mask.png ("" = same stem as the image)
      save_format: png          # png | npy
      labels: [object]          # class names offered for each object
      weights: models/dextr_pascal-sbd.h5
      threshold: 0.8            # 0 < t < 1, DEXTR probability -> mask
      sam_prompt: box+points    # SAM weights only: box+points | box | points (dextr_core.sam)
      claim_timeout_min: 30     # an image left open this long goes back to the queue
      max_image_megapixels: 200 # larger photos are refused before decoding (marked unreadable)
    admin:
      progress_file: .dextr_progress.json   # relative to required.source (DEXTR-AnnoTool's rule)
      database: .dextr_progress.json        # a path (relative to source) or postgresql:// URL
      reset_progress: false

Relative paths of ``source``, ``destination`` and ``weights`` are resolved against the folder
that holds the YAML file, not against the folder the app was started from, so a config keeps
meaning the same thing wherever it is run from; ``~`` is expanded. ``admin.progress_file`` (and
``admin.database``) are relative to ``required.source``, as in DEXTR-AnnoTool. A progress file
whose name does not end in ``.json`` is DEXTR-AnnoTool's own (YAML, e.g. ``.anno_prog``): it is
imported, never written (:attr:`AnnoConfig.legacy_progress_file`), and this tool's store lives
beside it as ``.dextr_progress.json``. A key written with no value takes its default, except
``mask_suffix``, where an empty value means "no suffix".

The YAML is read with a loader that refuses a key written twice in one section (both line numbers
are named), and numbers must be finite (``.inf`` and ``.nan`` are refused).
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import DextrError
from .sam import PROMPTS as SAM_PROMPTS  # values of optional.sam_prompt (no torch imported)

DEFAULT_MASK_SUFFIX = "_mask"
DEFAULT_SAVE_FORMAT = "png"
DEFAULT_LABELS = ("object",)
#: The weights file a config uses when ``optional.weights`` is not given (the published
#: PASCAL+SBD model), and its folder relative to the config file's folder.
DEFAULT_WEIGHTS_FILE = "dextr_pascal-sbd.h5"
DEFAULT_WEIGHTS_FOLDER = "models"
#: ``optional.weights`` when absent, relative to the config's folder: the one weights location
#: rule of :func:`dextr_core.download.default_weights_path`.
DEFAULT_WEIGHTS = f"{DEFAULT_WEIGHTS_FOLDER}/{DEFAULT_WEIGHTS_FILE}"
DEFAULT_THRESHOLD = 0.8
DEFAULT_CLAIM_TIMEOUT_MIN = 30.0
DEFAULT_PROGRESS_NAME = ".dextr_progress.json"
#: DEXTR-AnnoTool's progress file in the source folder (imported when present, never written).
LEGACY_PROGRESS_NAME = ".anno_prog"
DEFAULT_MAX_IMAGE_MEGAPIXELS = 200.0
#: Characters a file name needs beyond the mask's own name while it is written (the temporary
#: ``.<name>.<12 hex>.tmp`` of dextr_core.fileio.atomic_write takes 18): mask names must leave
#: this much room below the file system's NAME_MAX.
TEMP_NAME_MARGIN = 24

#: Every key the config knows, by section.
KNOWN_KEYS: dict[str, tuple[str, ...]] = {
    "required": ("source", "destination"),
    "optional": (
        "update",
        "mask_suffix",
        "save_format",
        "labels",
        "weights",
        "threshold",
        "claim_timeout_min",
        "max_image_megapixels",
        "model_server",
        "sam_prompt",
    ),
    "admin": ("progress_file", "database", "reset_progress"),
}


class ConfigError(DextrError):
    """A config that cannot be used. ``problems`` lists each one: the key, what is wrong, the fix."""

    def __init__(self, path: str | os.PathLike, problems: list[str]):
        self.path = Path(path)
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"The config file {self.path} has {len(self.problems)} problem(s):\n{lines}"
        )


@dataclass(frozen=True)
class AnnoConfig:
    """A validated annotation config; every path is absolute.

    Attributes: ``path`` (the YAML file), ``source`` (image folder), ``destination`` (mask folder),
    ``update`` (sync the image list at start), ``mask_suffix``, ``save_format`` ("png" | "npy"),
    ``labels`` (class names, at least one), ``weights`` (DEXTR .h5 file; it may be missing, then the
    fallback segmenter is used), ``threshold`` (0 < t < 1), ``claim_timeout_min`` (minutes),
    ``progress_file`` (the store's JSON file), ``reset_progress`` (back the store up and start over),
    ``legacy_progress_file`` (DEXTR-AnnoTool's YAML progress file to import, never written; None
    when there is none), ``max_image_pixels`` (width x height above which a photo is refused before
    decoding), ``database`` (where the store lives: a file path as text, or a ``postgresql://``
    URL; default ``str(progress_file)``), ``model_server`` (the address of a DEXTR model service,
    ``http://host:port/...``, see :mod:`dextr_core.serve`; "" = run the model in this process),
    ``sam_prompt`` (how a SAM checkpoint is prompted from the clicks: ``box+points`` (default),
    ``box`` or ``points``; see :mod:`dextr_core.sam`),
    ``warnings`` (things that still work but should be fixed, for the app to show).
    """

    path: Path
    source: Path
    destination: Path
    update: bool = True
    mask_suffix: str = DEFAULT_MASK_SUFFIX
    save_format: str = DEFAULT_SAVE_FORMAT
    labels: tuple[str, ...] = DEFAULT_LABELS
    weights: Path = Path(DEFAULT_WEIGHTS)
    threshold: float = DEFAULT_THRESHOLD
    claim_timeout_min: float = DEFAULT_CLAIM_TIMEOUT_MIN
    progress_file: Path = Path(DEFAULT_PROGRESS_NAME)
    reset_progress: bool = False
    legacy_progress_file: Path | None = None
    max_image_pixels: int = int(DEFAULT_MAX_IMAGE_MEGAPIXELS * 1_000_000)
    database: str = ""
    model_server: str = ""
    sam_prompt: str = SAM_PROMPTS[0]
    warnings: tuple[str, ...] = ()


def _suggest(word: str, choices: tuple[str, ...], noun: str = "keys") -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]}?"
    return f"remove it; the known {noun} are {', '.join(choices)}"


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    return {bool: "true/false", int: "a number", float: "a number", str: "text",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


class _Checker:
    """Collects problems while reading one section's values."""

    def __init__(self, base: Path):
        self.base = base
        self.problems: list[str] = []

    def problem(self, key: str, text: str) -> None:
        self.problems.append(f"{key}: {text}")

    def path(self, key: str, value: Any, default: str | None) -> Path | None:
        if value is None:
            if default is None:
                self.problem(key, "is missing; add it (a folder path, relative to the config file)")
                return None
            value = default
        if not isinstance(value, str) or not value.strip():
            self.problem(key, f"must be a path written as text, got {_type_name(value)} ({value!r})")
            return None
        p = Path(os.path.expanduser(value.strip()))
        if not p.is_absolute():
            p = self.base / p
        return Path(os.path.normpath(p))

    def boolean(self, key: str, value: Any, default: bool) -> bool:
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        self.problem(key, f"must be true or false, got {_type_name(value)} ({value!r})")
        return default

    def number(self, key: str, value: Any, default: float, rule: str) -> float:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(key, f"must be a number {rule}, got {_type_name(value)} ({value!r})")
            return default
        if not math.isfinite(value):
            self.problem(key, f"must be a finite number {rule}, got {value!r} (.inf / .nan are "
                         "not allowed); write a plain number")
            return default
        return float(value)


class _DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key: str, first_line: int, second_line: int):
        super().__init__(key)
        self.key, self.first_line, self.second_line = key, first_line, second_line


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key written twice in one mapping is an error (PyYAML
    silently keeps the last value). ``path`` is the dotted path of the mapping being built."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    continue  # reported by PyYAML itself below
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise _DuplicateKeyError(self._dotted(node, key), seen[key], line)
                seen[key] = line
        return super().construct_mapping(node, deep=deep)

    def _dotted(self, node, key) -> str:
        # the section name when the duplicate is one level down (required/optional/admin)
        root = self.__dict__.get("_root")
        if root is not None and node is not root:
            for k_node, v_node in root.value:
                if v_node is node:
                    return f"{k_node.value}.{key}"
        return str(key)

    def construct_document(self, node):
        self._root = node if isinstance(node, yaml.MappingNode) else None
        return super().construct_document(node)


def _read_yaml(path: Path) -> Any:
    if not path.exists():
        raise ConfigError(path, [
            f"config file: {path} does not exist; create it (see anno_cfg.yml in the repository "
            "for an example) or pass the right path (--config FILE or ANNO_CFG)"
        ])
    if not path.is_file():
        raise ConfigError(path, [f"config file: {path} is a folder, not a YAML file; "
                                 "pass the path of the .yml file itself"])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, [f"config file: cannot read {path} ({exc}); "
                                 "check its permissions and that it is UTF-8 text"]) from exc
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKeyError as exc:
        raise ConfigError(path, [
            f"{exc.key}: is written twice (line {exc.first_line} and line {exc.second_line}); "
            "keep one of them (YAML would silently use the last one)"
        ]) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(path, [
            f"config file: not valid YAML{where} ({what}); fix the indentation or quoting there "
            "(keys are 'name: value', nested keys indented by two spaces)"
        ]) from exc


def _section(data: dict, name: str, checker: _Checker) -> dict:
    value = data.get(name)
    if value is None:
        if name == "required":
            checker.problem(
                "required", "section is missing; add 'required:' with 'source:' (image folder) "
                "and 'destination:' (mask folder) under it"
            )
        return {}
    if not isinstance(value, dict):
        checker.problem(name, f"must be a section of 'key: value' lines, got {_type_name(value)}")
        return {}
    known = KNOWN_KEYS[name]
    for key in value:
        if key not in known:
            checker.problem(f"{name}.{key}", f"unknown key; {_suggest(str(key), known)}")
    return value


def load_config(path: str | os.PathLike) -> AnnoConfig:
    """Read and validate an annotation config (YAML) and return it with absolute paths.

    Raises :class:`ConfigError` listing every problem found (each names the key, e.g.
    ``optional.save_format``, and the fix). Nothing is created or written on disk.
    """
    cfg_path = Path(os.path.expanduser(str(path))).absolute()
    data = _read_yaml(cfg_path)
    if data is None:
        raise ConfigError(cfg_path, [
            "config file: is empty; it needs a 'required:' section with 'source:' and "
            "'destination:'"
        ])
    if not isinstance(data, dict):
        raise ConfigError(cfg_path, [
            f"config file: must be a mapping of sections (required, optional, admin), got "
            f"{_type_name(data)}; write 'required:' on its own line with indented keys under it"
        ])

    check = _Checker(cfg_path.parent)
    for key in data:
        if key not in KNOWN_KEYS:
            check.problem(str(key), f"unknown section; {_suggest(str(key), tuple(KNOWN_KEYS), 'sections')}")
    required = _section(data, "required", check)
    optional = _section(data, "optional", check)
    admin = _section(data, "admin", check)

    source = check.path("required.source", required.get("source"), None)
    destination = check.path("required.destination", required.get("destination"), None)
    update = check.boolean("optional.update", optional.get("update"), True)
    mask_suffix = _mask_suffix(check, optional)
    save_format = _save_format(check, optional)
    labels = _labels(check, optional)
    weights = check.path("optional.weights", optional.get("weights"), DEFAULT_WEIGHTS)
    threshold = check.number(
        "optional.threshold", optional.get("threshold"), DEFAULT_THRESHOLD, "between 0 and 1"
    )
    if not 0.0 < threshold < 1.0:
        check.problem("optional.threshold",
                      f"must lie strictly between 0 and 1, got {threshold}; 0.8 is DEXTR's default")
    timeout = check.number("optional.claim_timeout_min", optional.get("claim_timeout_min"),
                           DEFAULT_CLAIM_TIMEOUT_MIN, "of minutes above 0")
    if not timeout > 0:
        check.problem("optional.claim_timeout_min",
                      f"must be above 0 minutes, got {timeout}; e.g. 30")
    megapixels = check.number("optional.max_image_megapixels",
                              optional.get("max_image_megapixels"),
                              DEFAULT_MAX_IMAGE_MEGAPIXELS, "of megapixels above 0")
    if not megapixels > 0:
        check.problem("optional.max_image_megapixels",
                      f"must be above 0 megapixels, got {megapixels}; e.g. 200")
        megapixels = DEFAULT_MAX_IMAGE_MEGAPIXELS
    model_server = _model_server(check, optional)
    sam_prompt = _sam_prompt(check, optional)
    warnings: list[str] = []
    progress_file, legacy_file = _progress_files(check, admin, source, cfg_path.parent, warnings)
    database = _database(check, admin, source, progress_file)
    reset_progress = check.boolean("admin.reset_progress", admin.get("reset_progress"), False)

    _check_folders(check, source, destination, mask_suffix, save_format, progress_file)
    _check_name_length(check, source, destination, mask_suffix, save_format)
    if check.problems:
        raise ConfigError(cfg_path, check.problems)
    assert source and destination and weights and progress_file  # guaranteed by the checks above
    return AnnoConfig(
        path=cfg_path,
        source=source,
        destination=destination,
        update=update,
        mask_suffix=mask_suffix,
        save_format=save_format,
        labels=labels,
        weights=weights,
        threshold=threshold,
        claim_timeout_min=timeout,
        progress_file=progress_file,
        reset_progress=reset_progress,
        legacy_progress_file=legacy_file,
        max_image_pixels=int(round(megapixels * 1_000_000)),
        database=database or str(progress_file),
        model_server=model_server,
        sam_prompt=sam_prompt,
        warnings=tuple(warnings),
    )


def _sam_prompt(check: _Checker, optional: dict) -> str:
    value = optional.get("sam_prompt")
    if value is None or value == "":
        return SAM_PROMPTS[0]
    if value not in SAM_PROMPTS:
        check.problem("optional.sam_prompt",
                      f"must be one of {', '.join(SAM_PROMPTS)}, got {value!r}; box+points (the "
                      "box of the four clicks plus the clicks) is the default")
        return SAM_PROMPTS[0]
    return value


def _model_server(check: _Checker, optional: dict) -> str:
    value = optional.get("model_server")
    if value is None or value == "":
        return ""
    text = str(value).strip() if isinstance(value, str) else None
    if not text or not text.lower().startswith(("http://", "https://")):
        check.problem("optional.model_server",
                      f"must be the model service's http:// or https:// address, got {value!r}; "
                      "e.g. http://gpu1:8000/dextr (start it with python -m dextr_core.serve), "
                      "or remove the key to run the model in this server")
        return ""
    return text


def _progress_files(check: _Checker, admin: dict, source: Path | None, config_dir: Path,
                    warnings: list[str]) -> tuple[Path | None, Path | None]:
    """(this tool's store file, DEXTR-AnnoTool's progress file or None) from admin.progress_file.

    A relative path is relative to the source folder. A name not ending in ``.json`` is
    DEXTR-AnnoTool's YAML file: imported, never written; the store goes beside it.
    """
    key = "admin.progress_file"
    value = admin.get("progress_file")
    if source is None:
        return None, None
    if value is None:
        legacy = source / LEGACY_PROGRESS_NAME
        return source / DEFAULT_PROGRESS_NAME, (legacy if legacy.is_file() else None)
    if not isinstance(value, str) or not value.strip():
        check.problem(key, f"must be a file path written as text, got {_type_name(value)} "
                      f"({value!r})")
        return None, None
    raw = Path(os.path.expanduser(value.strip()))
    path = Path(os.path.normpath(raw if raw.is_absolute() else source / raw))
    if path.name.lower().endswith(".json"):
        if not raw.is_absolute():
            # Before this rule a relative progress_file was relative to the config's folder;
            # an existing store found only there keeps being used, with a warning.
            old = Path(os.path.normpath(config_dir / raw))
            if old != path and not path.exists() and old.is_file():
                warnings.append(
                    f"admin.progress_file: {value!r} is now relative to required.source "
                    f"({source}), but the progress file is at {old}; it is used from there. "
                    f"Write progress_file: {old} (or move the file to {path}) to silence this.")
                path = old
        legacy = source / LEGACY_PROGRESS_NAME
        return path, (legacy if legacy.is_file() else None)
    if path.is_dir():
        check.problem(key, f"{path} is a folder; give a file name such as {DEFAULT_PROGRESS_NAME}"
                      f" or DEXTR-AnnoTool's {LEGACY_PROGRESS_NAME}")
        return None, None
    if _is_own_store(path):
        # this tool's own store under a name without .json: keep using it (never import it)
        warnings.append(f"admin.progress_file: {path} is this tool's progress store, not a "
                        "DEXTR-AnnoTool file; it is used as the store. Give it a name ending in "
                        ".json (rename the file and its .journal) to silence this.")
        return path, None
    return path.parent / DEFAULT_PROGRESS_NAME, path


#: The "format" value a progress store snapshot of this tool starts with.
_OWN_STORE_FORMAT = b"dextr-progress-store"


def _is_own_store(path: Path) -> bool:
    """True when ``path`` is a snapshot of this tool's progress store (its first 4 KB name the
    store format) or has a journal beside it, i.e. not a DEXTR-AnnoTool YAML file."""
    if Path(f"{path}.journal").is_file():
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return head.lstrip().startswith(b"{") and _OWN_STORE_FORMAT in head


def _database(check: _Checker, admin: dict, source: Path | None,
              progress_file: Path | None) -> str | None:
    value = admin.get("database")
    if value is None:
        return str(progress_file) if progress_file is not None else None
    if not isinstance(value, str) or not value.strip():
        check.problem("admin.database", f"must be a file path or a postgresql:// URL written as "
                      f"text, got {_type_name(value)} ({value!r})")
        return None
    text = value.strip()
    if "://" in text:
        if not text.startswith(("postgresql://", "postgres://")):
            check.problem("admin.database", f"{text.split('://')[0]}:// is not supported; give a "
                          "file path or a postgresql:// URL")
        return text
    raw = Path(os.path.expanduser(text))
    if source is None:
        return None
    return str(Path(os.path.normpath(raw if raw.is_absolute() else source / raw)))


def _mask_suffix(check: _Checker, optional: dict) -> str:
    if "mask_suffix" not in optional:
        return DEFAULT_MASK_SUFFIX
    value = optional["mask_suffix"]
    if value is None:
        return ""
    if not isinstance(value, str):
        check.problem("optional.mask_suffix",
                      f"must be text such as _mask, got {_type_name(value)} ({value!r}); "
                      "put it in quotes")
        return DEFAULT_MASK_SUFFIX
    if any(sep in value for sep in ("/", "\\", os.sep)) or value in (".", ".."):
        check.problem("optional.mask_suffix",
                      f"{value!r} contains a path separator; use a plain suffix such as _mask "
                      "(sub-folders are set by required.destination)")
    if "\0" in value:
        check.problem("optional.mask_suffix", "contains a NUL character; use a plain suffix")
    return value


def _save_format(check: _Checker, optional: dict) -> str:
    value = optional.get("save_format")
    if value is None:
        return DEFAULT_SAVE_FORMAT
    text = str(value).strip().lower().lstrip(".") if isinstance(value, str) else None
    if text not in ("png", "npy"):
        check.problem("optional.save_format", f"is {value!r}; use png or npy")
        return DEFAULT_SAVE_FORMAT
    return text


def _labels(check: _Checker, optional: dict) -> tuple[str, ...]:
    value = optional.get("labels")
    if value is None:
        return DEFAULT_LABELS
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        check.problem("optional.labels",
                      f"must be a non-empty list of class names such as [car, person], got "
                      f"{_type_name(value)} ({value!r})")
        return DEFAULT_LABELS
    labels: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str | int | float) or isinstance(item, bool):
            check.problem(f"optional.labels[{i}]",
                          f"must be a class name written as text, got {_type_name(item)}")
            continue
        name = str(item).strip()
        if not name:
            check.problem(f"optional.labels[{i}]", "is empty; give every class a name")
        elif name in labels:
            check.problem(f"optional.labels[{i}]",
                          f"{name!r} is listed twice; remove the duplicate")
        else:
            labels.append(name)
    return tuple(labels) if labels else DEFAULT_LABELS


def _nearest_existing(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_folders(check: _Checker, source: Path | None, destination: Path | None,
                   mask_suffix: str, save_format: str, progress_file: Path | None) -> None:
    if source is not None:
        if not source.exists():
            check.problem("required.source",
                          f"folder {source} does not exist; create it and put the images in it, "
                          "or fix the path (relative paths start at the config file's folder)")
        elif not source.is_dir():
            check.problem("required.source", f"{source} is a file, not a folder; give the folder "
                          "that holds the images")
    if destination is not None:
        existing = _nearest_existing(destination)
        if existing == destination and not destination.is_dir():
            check.problem("required.destination", f"{destination} is a file, not a folder; "
                          "give a folder for the masks")
        elif not existing.is_dir():
            check.problem("required.destination",
                          f"cannot create folder {destination}: {existing} is a file; "
                          "choose another destination")
        elif not os.access(existing, os.W_OK | os.X_OK):
            check.problem("required.destination",
                          f"cannot write in {existing}; choose a folder you can write to or fix "
                          "its permissions")
    if (source is not None and destination is not None and source == destination
            and mask_suffix == "" and save_format == "png"):
        check.problem("optional.mask_suffix",
                      "is empty while required.destination is the source folder and save_format "
                      "is png: masks would overwrite PNG images of the same name; set a suffix "
                      "such as _mask or use another destination")
    elif (source is not None and destination is not None and source == destination
            and save_format == "png" and source.is_dir()):
        hidden = _photos_named_like_masks(source, mask_suffix)
        if hidden:
            check.problem(
                "required.destination",
                f"is the source folder, so files whose name ends in {mask_suffix!r} are taken "
                f"for masks and never annotated, but {hidden} is a photo with such a name "
                "(there is no photo it would be the mask of); use another destination folder "
                "(e.g. masks) or save_format: npy")
    if progress_file is not None:
        if progress_file.is_dir():
            check.problem("admin.progress_file", f"{progress_file} is a folder; give a file name "
                          "such as .dextr_progress.json")
        else:
            parent = _nearest_existing(progress_file.parent)
            if not parent.is_dir():
                check.problem("admin.progress_file",
                              f"cannot create {progress_file}: {parent} is a file; choose another "
                              "path")


def _photos_named_like_masks(source: Path, mask_suffix: str) -> str | None:
    """The first image under ``source`` (relative path) whose stem ends in ``mask_suffix`` while no
    image of the stem without the suffix sits beside it: a photo that a scan skipping mask names
    would hide. None when there is none."""
    from .images import is_image_file

    for folder, dirs, files in os.walk(source):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        stems = {os.path.splitext(f)[0] for f in files if is_image_file(f)}
        for name in sorted(files):
            stem = os.path.splitext(name)[0]
            if (is_image_file(name) and stem.endswith(mask_suffix)
                    and stem[: len(stem) - len(mask_suffix)] not in stems):
                return os.path.relpath(os.path.join(folder, name), source)
    return None


def name_max(folder: Path) -> int:
    """The longest file name (bytes) the file system holding ``folder`` (or its nearest existing
    parent) allows: ``os.pathconf(..., "PC_NAME_MAX")``, 255 where that is unknown."""
    try:
        return int(os.pathconf(_nearest_existing(folder), "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def _check_name_length(check: _Checker, source: Path | None, destination: Path | None,
                       mask_suffix: str, save_format: str) -> None:
    if destination is None:
        return
    limit = name_max(destination) - TEMP_NAME_MARGIN
    ext = "." + save_format
    encoded = len((mask_suffix + ext).encode("utf-8", "surrogateescape"))
    if mask_suffix and encoded + 1 > limit:
        check.problem("optional.mask_suffix",
                      f"is {len(mask_suffix)} characters long: a mask name (photo name + suffix + "
                      f"{ext}) must stay under {limit} bytes on the destination's file system "
                      f"(NAME_MAX {limit + TEMP_NAME_MARGIN}, less {TEMP_NAME_MARGIN} for the "
                      "temporary name while it is written); use a short suffix such as _mask")
        return
    if source is None or not source.is_dir():
        return
    from .images import is_image_file

    for _folder, dirs, files in os.walk(source):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not is_image_file(name):
                continue
            stem = os.path.splitext(name)[0]
            if len((stem + mask_suffix + ext).encode("utf-8", "surrogateescape")) > limit:
                fix = ("use a shorter suffix such as _mask, or rename that photo" if mask_suffix
                       else "rename that photo (its mask would have the same long name)")
                check.problem("optional.mask_suffix",
                              f"makes the mask name of {name} longer than the {limit} bytes the "
                              f"destination's file system allows (NAME_MAX less "
                              f"{TEMP_NAME_MARGIN} for the temporary name); {fix}")
                return
