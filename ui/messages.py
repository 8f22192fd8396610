"""One message queue for both pages, and the one place user-supplied text is made safe to show.

Button callbacks run before the page draws, so what an action has to say is queued with
:func:`say` and drawn at the top of the page by :func:`show`. Messages stay over the reruns a
widget triggers by itself (the canvas reruns the script on every click) and go when the user does
something new (:func:`clear`, called at the start of every action). Each page has its own queue
(:func:`set_page`): what the annotate page said never shows on the Progress page.

Every string that a user or a file system supplied (annotator names, labels, image file names,
folder paths, texts of exceptions that quote them) goes through :func:`md` before it becomes part
of Markdown: Streamlit renders Markdown in messages, captions and button labels, so a name like
``![x](http://host/b.png)`` would otherwise load an image from another host.
"""

from __future__ import annotations

import re

import streamlit as st

#: The kinds of message, each drawn by the Streamlit function of that name.
KINDS = ("success", "info", "warning", "error")

_QUEUE = "ui_messages"
_PAGE = "ui_messages_page"


def set_page(name: str) -> None:
    """Call first on each page: messages said from now on (and by the callbacks of this page's
    widgets, which run before the next page run) belong to page ``name`` and are shown only
    there."""
    st.session_state[_PAGE] = name


def _queue_key() -> str:
    return f"{_QUEUE}::{st.session_state.get(_PAGE, '')}"

# CommonMark lets a backslash escape any ASCII punctuation; Streamlit adds its own directives
# (":red[text]", ":material/icon:", "$math$"), whose characters are punctuation too.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~:$=&\"'^%@/])")


def md(text: object) -> str:
    """``text`` as Markdown that shows exactly these characters (nothing is rendered from it).

    Every ASCII punctuation character is backslash-escaped and line breaks become spaces, so the
    result is safe inside a sentence, a list item, a caption or a button label.
    """
    flat = " ".join(str(text).splitlines())
    return _MARKDOWN_SPECIAL.sub(r"\\\1", flat)


def say(kind: str, text: str) -> None:
    """Queue ``text`` (Markdown: user-supplied parts already passed through :func:`md`) to be
    shown at the top of the page as ``st.<kind>``; kind is one of :data:`KINDS`."""
    if kind not in KINDS:
        raise ValueError(f"message kind must be one of {KINDS}, got {kind!r}")
    queue = st.session_state.setdefault(_queue_key(), [])
    if (kind, text) not in queue:
        queue.append((kind, text))


def clear() -> None:
    """Forget the queued messages (call at the start of every user action)."""
    st.session_state.pop(_queue_key(), None)


def queued() -> list[tuple[str, str]]:
    """The queued messages as (kind, text), oldest first (a copy)."""
    return list(st.session_state.get(_queue_key(), []))


def show() -> None:
    """Draw the queued messages; they stay queued until :func:`clear`."""
    for kind, text in st.session_state.get(_queue_key(), []):
        getattr(st, kind)(text)


def say_outcome(outcome) -> None:
    """Queue a :class:`dextr_core.leads.Outcome` (from a button callback): its sentence, escaped,
    as ``st.<its level>`` at the top of the page."""
    say(outcome.level, md(outcome.message))


def show_outcome(outcome) -> None:
    """Draw a :class:`dextr_core.leads.Outcome` now, where the pressed button is (not queued)."""
    getattr(st, outcome.level)(md(outcome.message))
