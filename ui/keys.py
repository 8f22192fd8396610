"""The annotate page's keyboard, in one small script: keys Streamlit cannot bind to buttons, and
the focus handed back to the page after a choice.

Streamlit binds a button's ``shortcut=`` but ignores shortcuts while an input has the focus,
reserves ``C`` for itself and refuses ``[`` / ``]``. So:

- **Keys to buttons**: :func:`bind` names keys that press a button (by its widget key) when
  pressed outside a text field and without modifiers, instead of Streamlit's own handling
  (``C`` Points, ``[`` / ``]`` brush size: ui/tools.py). A key whose button is not on the page
  (another page) is left alone.
- **Focus back to the page**: after a choice in the Class box (by mouse, or by Enter / Tab /
  Escape in it, also when the same class is chosen again) and after a click on a check box or a
  radio button, the focus leaves the widget, so that the next shortcut (``A``) works at once.
  Never from a field someone types in.
"""

from __future__ import annotations

import json

import streamlit as st

from ui.labels import BOX_LABEL

#: The widgets whose choices hand the focus back (their aria-labels): the Class box.
CHOICE_BOXES = (BOX_LABEL,)

_SCRIPT = """<script>
window.__dextrKeys = %s;
window.__dextrBoxes = %s;
if (!window.__dextrKeysOn) {
  window.__dextrKeysOn = true;
  const inBox = (e) => e && window.__dextrBoxes.includes(e.getAttribute('aria-label'));
  const release = () => setTimeout(() => {
    const e = document.activeElement;
    if (inBox(e) || (e && e.tagName === 'INPUT' && ['radio', 'checkbox'].includes(e.type))) {
      e.blur();
    }
  }, 0);
  document.addEventListener('click', (event) => {
    const t = event.target;
    if (t.closest && (t.closest('[role="option"]') || t.closest('[data-testid="stRadio"]')
                      || t.closest('[data-testid="stCheckbox"]'))) release();
  }, true);
  window.addEventListener('keydown', (event) => {
    const focus = document.activeElement;
    if (['Enter', 'Tab', 'Escape'].includes(event.key) && inBox(focus)) { release(); return; }
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    const t = event.composedPath()[0];
    if (t && (t.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(t.tagName))) return;
    const key = window.__dextrKeys[event.key.toLowerCase()];
    if (!key) return;
    const button = document.querySelector('.st-key-' + key + ' button');
    if (!button) return;  // another page: its keys are its own
    event.stopImmediatePropagation();
    event.preventDefault();
    if (!button.disabled) button.click();
  }, true);
}
</script>"""


def bind(buttons: dict[str, str]) -> None:
    """Install the page's key script (once per browser tab; later calls only update the keys):
    ``buttons`` maps a key as typed (``"c"``, ``"["``) to the widget key of the button it
    presses."""
    st.html(_SCRIPT % (json.dumps({k.lower(): v for k, v in buttons.items()}),
                       json.dumps(list(CHOICE_BOXES))), unsafe_allow_javascript=True, width=1)
