"""DEXTR-AnnoTool's progress file written as that tool writes it, for the import tests.

The tool reads its ``anno_cfg.yml`` with ruamel.yaml's round-trip loader, makes the progress file
as ``{'required': <the config's required: section>, 'annotated': {name: False}}``, and rewrites
it each time an image is marked (True when its mask is saved; ``yes`` / ``skip`` edited in by
hand, as in its sample folder), all with ``YAML()`` and ``default_flow_style = False``. The
section keeps the config's comments, which come along into the progress file.
"""

from __future__ import annotations

import io
from pathlib import Path

from ruamel.yaml import YAML

#: An anno_cfg.yml of DEXTR-AnnoTool's layout (its comments are carried into the progress file).
SEED_CONFIG = """\
# Required parameters to be set by user
required:
  source: {source}    # path to the dir containing images to be annotated
  destination: {destination}    # path to the dir where the generated masks should be saved

# Optional parameters
optional:
  update: true
  mask_suffix: _mask
  save_format: png

admin:
  progress_file: .anno_prog
  reset_progress: false
"""


def _yaml() -> YAML:
    yaml = YAML()
    yaml.default_flow_style = False
    return yaml


def anno_prog_text(annotated: dict, source: str = "./images",
                   destination: str = "./images/segMasks") -> str:
    """The progress file's text for ``annotated`` ({name: True/False/"yes"/"no"/"skip"}) and a
    config whose required: section names ``source`` and ``destination``."""
    yaml = _yaml()
    config = yaml.load(SEED_CONFIG.format(source=source, destination=destination))
    progress = yaml.load(io.StringIO(_dump(yaml, {"required": config["required"],
                                                  "annotated": {}})))
    progress["annotated"].update(annotated)  # as the tool updates it, one image at a time
    return _dump(yaml, progress)


def _dump(yaml: YAML, data) -> str:
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def write_anno_prog(path: Path, annotated: dict, **paths: str) -> bytes:
    """Write the progress file (see :func:`anno_prog_text`) at ``path``; returns its bytes."""
    text = anno_prog_text(annotated, **paths)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path.read_bytes()


def seed_config_text(source: str = "./images", destination: str = "./images/segMasks") -> str:
    """The seed's anno_cfg.yml, which this tool reads as it is."""
    return SEED_CONFIG.format(source=source, destination=destination)
