"""Objects imported from other annotations (``python -m dextr_core.importer``) into the store.

:func:`add_imported` gives one photo its imported objects in one store transaction, only while
the photo is todo without objects: a photo someone holds, finished, skipped or already given
objects is left alone and the reason returned. Each object carries an id made from its source
(``coco-<annotation id>``, ``mask-<label>``), so importing the same file again finds the photo's
objects already there and adds nothing. Imported objects have no clicks (``points`` ``[]``, like
DEXTR-AnnoTool's); their masks are their own object mask files
(:func:`dextr_core.masks.object_mask_path`), written by the caller before this call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .records import ObjectRecord, _object_record
from .rules import check_object_id

if TYPE_CHECKING:
    from .rules import Store

__all__ = ["IMPORT_ANNOTATOR", "add_imported"]

#: Annotator name of imported objects, and of photos imported as done.
IMPORT_ANNOTATOR = "import"


def add_imported(store: Store, image_id: str, objects: Sequence[ObjectRecord], *,
                 done: bool = False, source: str = "",
                 write: Callable[[list[ObjectRecord]], Any] | None = None) -> str:
    """Give the todo photo ``image_id`` these objects (labels, engines and object ids as given;
    index 1..N in this order); return what happened:

    ``"added"``; ``"already imported"`` (the photo holds exactly objects of these ids: nothing
    changes); ``"has objects"`` (others: left alone); ``"in_progress"``, ``"done"``,
    ``"skipped"``, ``"unreadable"`` or ``"missing"`` (left alone). With ``done`` the photo is
    finished by :data:`IMPORT_ANNOTATOR`; ``write(objects)`` is called first, inside the
    transaction (the caller writes the label map there), and if it raises nothing changes.
    ``source``: where the objects come from, kept in the photo's note and the event.
    """
    with store.backend.transaction():
        doc = store._require(image_id)
        if doc.get("missing"):
            return "missing"
        if doc["status"] != "todo":
            return str(doc["status"])
        stored = doc.get("objects") or []
        if stored:
            ids = {o.object_id for o in objects}
            mine = all(o.get("object_id") in ids for o in stored)
            return "already imported" if mine and len(stored) == len(ids) else "has objects"
        now = store.clock()
        docs = [{"object_id": check_object_id(o.object_id), "index": i,
                 "label": str(o.label), "points": "", "engine": str(o.engine or "import"),
                 "annotator": o.annotator or IMPORT_ANNOTATOR, "created_at": now,
                 "seconds": 0.0}
                for i, o in enumerate(objects, start=1)]
        fields: dict[str, Any] = {"objects": docs, "updated_at": now,
                                  "note": f"objects imported from {source}" if source else None}
        if done:
            if write is not None:
                write([_object_record(image_id, d) for d in docs])
            fields.update({"status": "done", "annotator": IMPORT_ANNOTATOR,
                           "completed_at": now, "n_objects": len(docs)})
        store._update(image_id, fields)
        store._log("imported", image_id, IMPORT_ANNOTATOR, objects=len(docs),
                   status="done" if done else "todo", source=source)
    return "added"
