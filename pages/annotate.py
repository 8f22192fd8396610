"""The annotate page: click an object's four extreme points, check the mask, accept, go on.

Flow of one script run (Streamlit reruns this file on every interaction):

1. the annotator's name (kept in the URL, ``?annotator=NAME``);
2. the image: the one this session holds, else ``store.claim_next`` (unreadable files are marked
   and passed over with a warning);
3. pending clicks: from the canvas callback or, for tests and scripts, from
   ``st.session_state["anno_clicks"]`` (a list of ``[x, y]`` full-image pixels, consumed once);
4. with 4 or more clicks the mask is computed (once per set of points) before the canvas is drawn,
   so the overlay appears in the same run as the fourth click;
5. the canvas (display-size photo with the overlays burnt in) and the controls.

Objects accepted are written to the store and to a draft label map at once, so a refresh or a
server restart loses nothing; "Image done" writes the mask file.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import streamlit as st

from dextr_core.errors import DextrError
from dextr_core.images import ImageReadError
from dextr_core.masks import (
    MaskFileError,
    draft_path,
    label_map,
    load_label_map,
    mask_path,
    save_label_map,
    split_label_map,
)
from dextr_core.store import ClaimError, ObjectRecord
from ui import canvas as cv
from ui import roles, state
from ui.overlay import colour_hex, draw_overlay, fit_mask

#: Session key tests and scripts write clicks to: a list of [x, y] in full-image pixels.
CLICKS_KEY = "anno_clicks"
_WORK = "anno_work"
_FLASH = "anno_flash"
_LABEL = "anno_label"
_NAME_INPUT = "anno_name_input"
#: Seconds between two heartbeats on the held image (the claim timeout is in minutes).
HEARTBEAT_EVERY_S = 30.0
#: Unreadable images passed over in one run at most (the rest on the next run).
MAX_UNREADABLE_PER_RUN = 50

SHORTCUTS = {
    "accept": "A",
    "undo": "U",
    "clear": "X",
    "done": "D",
    "skip": "S",
    "previous": "P",
    "next": "N",
}


@dataclass
class AcceptedObject:
    """An accepted object of the open image: its label, clicks (full-image (x, y)), its mask
    packed to bits at full resolution (``np.packbits`` of the bool (H, W) mask) and its mask at
    display size (bool (h, w)) for the overlay."""

    label: str
    points: list
    packed: np.ndarray
    small: np.ndarray

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """The full-resolution bool (H, W) mask."""
        n = shape[0] * shape[1]
        return np.unpackbits(self.packed, count=n).astype(bool).reshape(shape)


@dataclass
class Work:
    """What this browser session is doing on its open image (kept in ``st.session_state``).

    ``points``: the current object's clicks, full-image (x, y) floats. ``generation`` is bumped
    whenever the page changes the points itself, which mounts a fresh canvas. ``candidate``: the
    mask of the current points (bool (H, W)) with its display-size copy, or the segmenter's
    message when it refused them.
    """

    image_id: str | None = None
    path: Path | None = None
    full_size: tuple[int, int] = (0, 0)
    display_size: tuple[int, int] = (0, 0)
    points: list = field(default_factory=list)
    generation: int = 0
    objects: list = field(default_factory=list)
    candidate_points: list | None = None
    candidate: np.ndarray | None = None
    candidate_small: np.ndarray | None = None
    candidate_error: str | None = None
    object_started: float = 0.0
    image_started: float = 0.0
    heartbeat_at: float = 0.0
    confirm_empty: bool = False
    mask_version: int = 0
    drawing_generation: int = -1
    drawing: dict | None = None
    background_key: tuple | None = None
    background: bytes | None = None
    model_ms: float | None = None


def _work() -> Work:
    if _WORK not in st.session_state:
        st.session_state[_WORK] = Work()
    return st.session_state[_WORK]


def _flash(kind: str, text: str) -> None:
    """Queue a message shown at the top of the next run (kind: success, info, warning, error)."""
    st.session_state.setdefault(_FLASH, []).append((kind, text))


def _clear_flash() -> None:
    """Forget the messages of the previous action (called when the user does something new)."""
    st.session_state.pop(_FLASH, None)


def _show_flash() -> None:
    """Show the queued messages. They stay over reruns the canvas triggers by itself and go at
    the next action."""
    for kind, text in st.session_state.get(_FLASH, []):
        getattr(st, kind)(text)


# ---- opening images ------------------------------------------------------------------------


def _clear_candidate(work: Work) -> None:
    work.mask_version += 1
    work.candidate_points = None
    work.candidate = None
    work.candidate_small = None
    work.candidate_error = None


def _reset_points(work: Work) -> None:
    work.points = []
    work.generation += 1
    work.confirm_empty = False
    work.object_started = time.time()
    _clear_candidate(work)


def _restore_objects(work: Work, cfg, store, image_shape: tuple[int, int]) -> list[str]:
    """Objects the store already has for the open image, with masks from its draft label map or
    its saved mask file (recomputed from the clicks when neither has them). Returns warnings."""
    warnings: list[str] = []
    records = store.objects(work.image_id)
    work.objects = []
    if not records:
        return warnings
    masks: list[np.ndarray] = []
    # The draft of an unfinished image, else the mask file of a finished one (Prev/Next back to
    # a done image to correct it).
    draft = draft_path(cfg.destination, work.image_id)
    saved = mask_path(cfg.destination, work.image_id, cfg.mask_suffix, cfg.save_format)
    source = draft if draft.is_file() else saved if saved.is_file() else None
    if source is not None:
        try:
            labels = load_label_map(source)
            if labels.shape == image_shape:
                masks = split_label_map(labels)
            else:
                warnings.append(f"{source} does not match the image size; the masks are "
                                "recomputed from the saved clicks.")
        except MaskFileError as exc:
            warnings.append(f"{exc} The masks are recomputed from the saved clicks.")
    full = None
    for i, rec in enumerate(records):
        if i < len(masks) and masks[i].any():
            mask = masks[i]
        else:
            if full is None:
                full = state.full_image(work.path)
            try:
                mask = state.segmenter().segment(full, np.asarray(rec.points, dtype=np.float64))
            except Exception as exc:  # ValueError for refused points, anything from the model
                warnings.append(f"Object {rec.index} ({rec.label}) could not be recomputed: {exc}")
                mask = np.zeros(image_shape, dtype=bool)
        work.objects.append(_accepted(rec.label, rec.points, mask, work.display_size))
    return warnings


def _accepted(label: str, points, mask: np.ndarray, display_size: tuple[int, int]
              ) -> AcceptedObject:
    small = fit_mask(mask, (display_size[1], display_size[0]))
    return AcceptedObject(str(label), [[float(x), float(y)] for x, y in points],
                          np.packbits(mask.astype(bool, copy=False).ravel()), small)


def _open(work: Work, cfg, store, image_id: str) -> None:
    """Make ``image_id`` (already claimed) the open image. Raises ImageReadError."""
    path = cfg.source / image_id
    shown = state.display_image(path)
    work.image_id = image_id
    work.path = path
    work.full_size = shown.full_size
    work.display_size = shown.display_size
    work.image_started = time.time()
    work.heartbeat_at = time.time()
    work.background_key = None
    _reset_points(work)
    for text in _restore_objects(work, cfg, store, (shown.full_size[1], shown.full_size[0])):
        _flash("warning", text)


def _claim_next(work: Work, cfg, store, name: str) -> bool:
    """Claim and open the next image for ``name``; False when none is left."""
    for _ in range(MAX_UNREADABLE_PER_RUN):
        record = store.claim_next(name)
        if record is None:
            work.image_id = None
            return False
        try:
            _open(work, cfg, store, record.id)
            return True
        except ImageReadError as exc:
            store.mark_unreadable(record.id, str(exc))
            _flash("warning", f"Skipped **{record.id}**: {exc}")
    work.image_id = None
    return False


def _ensure_image(work: Work, cfg, store, name: str) -> bool:
    """The session's open image, still held by ``name``; else the next one. False: none left."""
    if work.image_id is not None:
        record = store.get(work.image_id)
        if record is not None and record.status == "in_progress" and record.annotator == name:
            if time.time() - work.heartbeat_at > HEARTBEAT_EVERY_S:
                store.heartbeat(work.image_id, name)
                work.heartbeat_at = time.time()
            return True
        if record is not None and record.status == "in_progress":
            _flash("warning", f"**{work.image_id}** is now held by {record.annotator} (your "
                   "claim lapsed); here is the next image.")
        elif record is not None and record.status == "todo":
            # Released behind our back (a lead reopened or reset it): take it again and reload
            # its objects from the store, which is the reference.
            try:
                store.claim(work.image_id, name)
                _open(work, cfg, store, work.image_id)
                return True
            except (DextrError, ImageReadError):
                pass
        work.image_id = None
    return _claim_next(work, cfg, store, name)


# ---- clicks and masks ----------------------------------------------------------------------


def _on_canvas(key: str) -> None:
    """Canvas callback: the canvas's point markers become the current clicks."""
    work = _work()
    value = st.session_state.get(key) or {}
    drawing = value.get("drawing") if hasattr(value, "get") else None
    raw = drawing.get("raw") if hasattr(drawing, "get") else None
    if raw is None or work.image_id is None:
        return
    shown = cv.canvas_points(raw)
    if len(shown) != len(work.points):
        _clear_flash()
    _set_canvas_points(work, shown)


def _set_canvas_points(work: Work, canvas_xy: np.ndarray) -> None:
    full = cv.canvas_to_image(canvas_xy, work.display_size, work.full_size)
    work.points = [[float(x), float(y)] for x, y in full]
    work.confirm_empty = False


def _take_injected_clicks(work: Work) -> None:
    """Append clicks written to ``st.session_state[CLICKS_KEY]`` (full-image (x, y))."""
    clicks = st.session_state.pop(CLICKS_KEY, None)
    if not clicks or work.image_id is None:
        return
    _clear_flash()
    pts = np.asarray(clicks, dtype=np.float64).reshape(-1, 2)
    width, height = work.full_size
    outside = [(x, y) for x, y in pts if not (0 <= x <= width - 1 and 0 <= y <= height - 1)]
    if outside:
        x, y = outside[0]
        st.warning(f"Click ({x:g}, {y:g}) is outside the image ({width} x {height} px) and was "
                   "ignored; click inside the image.")
    work.points += [[float(x), float(y)] for x, y in pts
                    if 0 <= x <= width - 1 and 0 <= y <= height - 1]
    work.generation += 1
    work.confirm_empty = False


def _same_points(a: list | None, b: list) -> bool:
    """True when two click lists hold the same points (same count, within 1e-6 px)."""
    if a is None or len(a) != len(b):
        return False
    return bool(np.allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64),
                            atol=1e-6))


def _update_candidate(work: Work) -> None:
    """Compute the mask of the current clicks when there are 4+ and they changed."""
    if len(work.points) < 4:
        _clear_candidate(work)
        return
    if _same_points(work.candidate_points, work.points):
        return
    _clear_candidate(work)
    work.candidate_points = [list(p) for p in work.points]
    seg = state.segmenter()
    with st.spinner(f"Segmenting with {seg.name}..."):
        image = state.full_image(work.path)
        t0 = time.perf_counter()
        try:
            mask = seg.segment(image, np.asarray(work.points, dtype=np.float64))
        except ValueError as exc:  # points the segmenter refuses (e.g. all on one spot)
            work.candidate_error = str(exc)
            return
        except Exception as exc:  # a failing model must not cost the clicks or the page
            work.candidate_error = (f"the segmenter {seg.name} failed ({type(exc).__name__}: "
                                    f"{exc}).")
            return
        t1 = time.perf_counter()
        work.candidate = mask
        work.candidate_small = fit_mask(mask, (work.display_size[1], work.display_size[0]))
        work.mask_version += 1
    work.model_ms = (t1 - t0) * 1000.0


def _background(work: Work) -> bytes:
    """JPEG of the display image with the accepted objects and the candidate drawn on it."""
    masks = [o.small for o in work.objects]
    if work.candidate_small is not None:
        masks.append(work.candidate_small)
    # mask_version changes whenever an object or the candidate changes (ids of freed arrays can
    # be reused, so they are no key).
    key = (work.image_id, work.mask_version, len(work.objects))
    if work.background_key == key and work.background is not None:
        return work.background
    shown = state.display_image(work.path)
    data = state.encode_jpeg(draw_overlay(shown.image, masks)) if masks else shown.jpeg
    work.background_key, work.background = key, data
    return data


# ---- actions (button callbacks) ------------------------------------------------------------


def _write_draft(work: Work, cfg) -> None:
    path = draft_path(cfg.destination, work.image_id)
    if not work.objects:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    shape = (work.full_size[1], work.full_size[0])
    save_label_map(path, label_map([o.mask(shape) for o in work.objects], shape))


def _guard(action):
    """Run a button action; user-facing errors (claims lost, disk full...) become messages."""
    @functools.wraps(action)
    def run(*args):
        _clear_flash()
        try:
            action(*args)
        except DextrError as exc:
            _flash("error", str(exc))
        except OSError as exc:
            _flash("error", f"Could not write to disk: {exc}. Nothing already saved was lost; "
                   "free some space or fix the folder's permissions, then try again.")
    return run


@_guard
def _accept(name: str) -> None:
    work, cfg, store = _work(), state.config(), state.store()
    if work.candidate is None:
        _flash("warning", "Click the object's four extreme points first (left-most, right-most, "
               "top, bottom).")
        return
    seg = state.segmenter()
    label = st.session_state.get(_LABEL) or cfg.labels[0]
    now = time.time()
    store.add_object(work.image_id, name, ObjectRecord(
        label=label, points=work.candidate_points, engine=seg.name, annotator=name,
        seconds=round(now - work.object_started, 3)))
    work.objects.append(_accepted(label, work.candidate_points, work.candidate,
                                  work.display_size))
    _write_draft(work, cfg)
    _flash("success", f"Object {len(work.objects)} ({label}) accepted.")
    _reset_points(work)


def _undo() -> None:
    _clear_flash()
    work = _work()
    if work.points:
        work.points = work.points[:-1]
        work.generation += 1
        _clear_candidate(work)
        work.confirm_empty = False


def _clear() -> None:
    _clear_flash()
    _reset_points(_work())


@_guard
def _delete(name: str, index: int) -> None:
    work, cfg, store = _work(), state.config(), state.store()
    store.remove_object(work.image_id, name, index)
    removed = work.objects.pop(index - 1)
    _write_draft(work, cfg)
    work.mask_version += 1
    _flash("info", f"Object {index} ({removed.label}) deleted.")


@_guard
def _done(name: str, confirmed: bool = False) -> None:
    work, cfg, store = _work(), state.config(), state.store()
    if not work.objects and not confirmed:
        work.confirm_empty = True
        return
    shape = (work.full_size[1], work.full_size[0])
    labels = label_map([o.mask(shape) for o in work.objects], shape)
    target = mask_path(cfg.destination, work.image_id, cfg.mask_suffix, cfg.save_format)
    save_label_map(target, labels)
    store.complete(work.image_id, name, seconds=round(time.time() - work.image_started, 3))
    with contextlib.suppress(FileNotFoundError):
        draft_path(cfg.destination, work.image_id).unlink()
    _flash("success", f"**{work.image_id}** done: {len(work.objects)} object(s) saved to "
           f"`{target}`.")
    work.image_id = None


def _cancel_empty() -> None:
    _clear_flash()
    _work().confirm_empty = False


@_guard
def _skip(name: str) -> None:
    work, store = _work(), state.store()
    store.skip(work.image_id, name, reason="skipped on the annotate page")
    _flash("info", f"**{work.image_id}** skipped.")
    work.image_id = None


@_guard
def _switch_annotator(name: str) -> None:
    """Give the open image back (its objects are kept) and ask for a name again."""
    work = _work()
    if work.image_id is not None:
        state.store().release(work.image_id, name)
    work.image_id = None
    state.set_annotator(None)


@_guard
def _go(name: str, step: int) -> None:
    """Open the previous (step -1) or next (+1) image in id order that can be opened."""
    work, cfg, store = _work(), state.config(), state.store()
    ids = store.image_ids()  # sorted; cheap even at 100,000 images (records are read lazily)
    here = bisect.bisect_left(ids, work.image_id) if work.image_id is not None else len(ids)
    if here >= len(ids) or ids[here] != work.image_id:
        return
    for j in range(here + step, len(ids) if step > 0 else -1, step):
        candidate = ids[j]
        record = store.get(candidate)
        if record is None or record.missing or record.status == "unreadable":
            continue
        try:
            store.claim(candidate, name)
        except ClaimError as exc:
            _flash("info", f"Passed over {candidate}: {exc}")
            continue
        try:
            previous = work.image_id
            _open(work, cfg, store, candidate)
        except ImageReadError as exc:
            store.mark_unreadable(candidate, str(exc))
            _flash("warning", f"Skipped **{candidate}**: {exc}")
            continue
        store.release(previous, name)
        return
    _flash("info", "No earlier image." if step < 0 else "No later image.")


# ---- rendering -----------------------------------------------------------------------------


def _ask_name() -> str | None:
    name = state.annotator()
    if name:
        if st.query_params.get(state.ANNOTATOR_KEY) != name:
            state.set_annotator(name)  # back in the URL after a page switch, so a refresh keeps it
        return name
    st.subheader("Who is annotating?")
    with st.form("annotator-form", border=False):
        typed = st.text_input("Your name", key=_NAME_INPUT, placeholder="e.g. ana",
                              help="Kept in the page address, so a refresh remembers it.")
        if st.form_submit_button("Start annotating", type="primary"):
            if typed.strip():
                state.set_annotator(typed)
                st.rerun()
            st.warning("Type your name first: the progress page counts work per annotator.")
    return None


def _reset_prompt() -> bool:
    """When the config asks for a progress reset, ask first. True while the question is open.

    With a lead role configured (see docs/roles.md) only a lead may answer, here or on the
    Progress page; annotation waits meanwhile. Without one, whoever opens the page answers.
    """
    if not state.reset_pending():
        return False
    cfg = state.config()
    st.warning(
        f"The config **{cfg.path}** sets `admin.reset_progress: true`. Resetting starts the "
        f"progress over: the current progress file `{cfg.progress_file}` is backed up next to "
        "it and mask files already written are kept. Set it back to false afterwards."
    )
    if roles.is_configured() and not roles.is_lead():
        st.info("Annotation is paused until a lead resets or keeps the progress (here or on the "
                "Progress page). Reload this page afterwards.")
        return True
    left, right = st.columns(2)
    if left.button("Reset the progress (keep a backup)", type="primary"):
        try:
            backup = state.confirm_reset()
        except RuntimeError:  # someone else answered meanwhile
            st.rerun()
        except DextrError as exc:
            st.error(f"Reset failed, progress unchanged: {exc}")
            return True
        _work().image_id = None
        _flash("success", f"Progress reset; the old progress is in `{backup}`.")
        st.rerun()
    if right.button("Keep the current progress"):
        state.decline_reset()
        st.rerun()
    return True


def _unreadable_notice(store) -> None:
    """Once per browser session: the images that cannot be read (found when the folder was
    scanned or when they were opened), named with the reason; they are passed over."""
    if st.session_state.get("anno_unreadable_shown"):
        return
    bad = [r for r in store.images("unreadable") if not r.missing]
    st.session_state["anno_unreadable_shown"] = True
    if not bad:
        return
    listed = "\n".join(f"- **{r.id}**: {r.error}" for r in bad[:10])
    more = f"\n- and {len(bad) - 10} more (see the Progress page)" if len(bad) > 10 else ""
    st.warning(f"{len(bad)} image(s) cannot be read and are passed over. Replace or remove "
               f"them; a lead can then reopen them.\n{listed}{more}")


def _all_done(store) -> None:
    counts = store.summary()["by_status"]  # missing images are not counted there
    held = counts.get("in_progress", 0)
    st.success(
        f"All done: no image is waiting. {counts.get('done', 0)} done, "
        f"{counts.get('skipped', 0)} skipped, {counts.get('unreadable', 0)} unreadable"
        + (f", {held} still open by other annotators" if held else "") + "."
    )
    st.caption("New photos in the source folder are picked up when the server restarts "
               "(optional.update: true). A lead can reopen images on the Progress page.")


def _help() -> None:
    with st.expander("How to annotate, keyboard shortcuts"):
        st.markdown(
            "1. Click the object's **four extreme points**: left-most, right-most, top and "
            "bottom (any order). The mask appears after the fourth click; more clicks on the "
            "object's border refine it.\n"
            "2. Pick the class and **Accept**; repeat for every object.\n"
            "3. **Image done** saves the mask file and opens the next image.\n\n"
            + "\n".join(f"- `{key}`: {what}" for what, key in SHORTCUTS.items())
        )


def _controls(work: Work, cfg, name: str) -> None:
    n_clicks = len(work.points)
    st.markdown(f"**{work.image_id}**  \n{work.full_size[0]} x {work.full_size[1]} px")
    if work.candidate_error:
        st.warning(f"No mask for these clicks: {work.candidate_error} Undo the last click or "
                   "clear the clicks.")
    elif n_clicks < 4:
        st.info(f"Click the extreme points: {n_clicks} of 4.")
    else:
        st.caption(f"{n_clicks} clicks. Check the mask, then accept." +
                   (f" Model {work.model_ms:.0f} ms." if work.model_ms is not None else ""))
    st.selectbox("Class", cfg.labels, key=_LABEL)
    st.button("Accept object", type="primary", on_click=_accept, args=(name,),
              disabled=work.candidate is None, shortcut=SHORTCUTS["accept"],
              width="stretch")
    # One button a row where the label and its shortcut badge need the column's whole width.
    st.button("Undo click", on_click=_undo, disabled=not work.points,
              shortcut=SHORTCUTS["undo"], width="stretch")
    st.button("Clear clicks", on_click=_clear, disabled=not work.points,
              shortcut=SHORTCUTS["clear"], width="stretch")

    st.markdown(f"**Objects ({len(work.objects)})**")
    for i, obj in enumerate(work.objects, start=1):
        swatch, text, delete = st.columns([1, 4, 3], vertical_alignment="center")
        swatch.markdown(
            f"<div style='width:1.2em;height:1.2em;border-radius:3px;background:"
            f"{colour_hex(i - 1)}'></div>", unsafe_allow_html=True)
        text.write(f"{i}. {obj.label}")
        delete.button("Delete", key=f"anno-del-{work.image_id}-{i}", on_click=_delete,
                      args=(name, i), type="tertiary", icon=":material/delete:",
                      help=f"Delete object {i}")

    st.divider()
    if work.confirm_empty:
        st.warning("This image has no object. Save it as done with an empty mask?")
        yes, no = st.columns(2)
        yes.button("Yes, save empty", type="primary", on_click=_done, args=(name, True))
        no.button("Cancel", on_click=_cancel_empty)
    st.button("Image done", type="primary", on_click=_done, args=(name,),
              shortcut=SHORTCUTS["done"], width="stretch")
    st.button("Skip", on_click=_skip, args=(name,), shortcut=SHORTCUTS["skip"], width="stretch")
    back, forward = st.columns(2)
    back.button("Prev", help="Previous image", on_click=_go, args=(name, -1),
                shortcut=SHORTCUTS["previous"], width="stretch")
    forward.button("Next", help="Next image", on_click=_go, args=(name, 1),
                   shortcut=SHORTCUTS["next"], width="stretch")


def _canvas(work: Work) -> None:
    from streamlit_drawable_canvas import st_canvas

    key = cv.canvas_key(work.image_id, work.generation)
    if work.drawing_generation != work.generation or work.drawing is None:
        # Fixed for a generation: a changed initial_drawing makes the canvas reload and resend.
        canvas_xy = cv.image_to_canvas(work.points, work.display_size, work.full_size)
        work.drawing = cv.points_drawing(canvas_xy)
        work.drawing_generation = work.generation
    result = st_canvas(
        drawing_mode="point",
        background_image=_background(work),
        width=work.display_size[0],
        height=work.display_size[1],
        initial_drawing=work.drawing,
        point_display_radius=cv.POINT_RADIUS,
        stroke_width=cv.POINT_STROKE,
        stroke_color=cv.POINT_STROKE_COLOUR,
        fill_color=cv.POINT_FILL,
        key=key,
        on_change=lambda: _on_canvas(key),
    )
    # Safety net: a canvas value the callback did not see (e.g. sent while the page reran).
    shown = cv.canvas_points(result.json_data)
    if len(shown) != len(work.points):
        _set_canvas_points(work, shown)
        st.rerun()


#: Session key: server time (ms) of this page's last runs, newest last (at most 50 kept).
RUN_MS_KEY = "anno_run_ms"


def main() -> None:
    """Render the annotate page; its server time per run is kept in ``st.session_state``."""
    state.run_through_app()
    started = time.perf_counter()
    try:
        _page()
    finally:
        log = st.session_state.setdefault(RUN_MS_KEY, [])
        log.append((time.perf_counter() - started) * 1000.0)
        del log[:-50]


def _page() -> None:
    cfg = state.config()
    store = state.store()
    st.title("Annotate")
    if _reset_prompt():
        return
    name = _ask_name()
    if not name:
        return
    who, switch = st.columns([6, 1], vertical_alignment="center")
    who.caption(f"Annotating as **{name}**")
    switch.button("Not you?", type="tertiary", on_click=_switch_annotator, args=(name,),
                  help="Give this image back (its objects are kept) and enter another name")
    work = _work()
    try:
        has_image = _ensure_image(work, cfg, store, name)
    except DextrError as exc:
        st.error(str(exc))
        return
    _unreadable_notice(store)
    if not has_image:
        _show_flash()
        _all_done(store)
        return
    _take_injected_clicks(work)
    left, right = st.columns([7, 2], gap="small")
    with right:
        # The mask is made before the canvas is drawn (its overlay shows in this same run); the
        # spinner and the messages sit beside the photo so the canvas never moves under the
        # pointer.
        _update_candidate(work)
        _show_flash()
    with left:
        _canvas(work)
    with right:
        _controls(work, cfg, name)
        _help()


main()
