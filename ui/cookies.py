"""Small per-browser choices kept in cookies: read on the server (``st.context.cookies``),
written by a script in the page.

A cookie outlives the browser session (a refresh, a new tab, a restart of the browser) and stays
in this browser: the annotator's name (ui/resources.py) and the class box's choices
(ui/labels.py). Values are percent-encoded; each cookie is kept a year, for the whole site, and
sent only to this site (``samesite=strict``).
"""

from __future__ import annotations

import json
import urllib.parse

import streamlit as st

#: The attributes every cookie here is set with: the whole site, a year, this site only (a script
#: that writes a cookie itself, such as ui/layout.py's window size, appends them too).
ATTRIBUTES = f"path=/; max-age={365 * 24 * 3600}; samesite=strict"

#: Sets (or with null deletes) each named cookie that does not already hold the value.
_SCRIPT = """<script>
(() => {
  const want = %s;
  const now = Object.fromEntries(document.cookie.split('; ').filter(Boolean)
    .map((c) => [c.slice(0, c.indexOf('=')), c.slice(c.indexOf('=') + 1)]));
  for (const [name, value] of Object.entries(want)) {
    if (value === null) {
      if (name in now) document.cookie = name + '=; path=/; max-age=0; samesite=strict';
    } else if (now[name] !== value) {
      document.cookie = name + '=' + value + '; %s';
    }
  }
})();
</script>"""


def read(name: str) -> str | None:
    """The value of cookie ``name`` this browser sent with the page, decoded; None without one."""
    value = st.context.cookies.get(name)
    return urllib.parse.unquote(value) if isinstance(value, str) else None


def keep(values: dict[str, str | None], where=None) -> None:
    """Bring this browser's cookies in line with ``values`` (name -> text, or None to delete):
    one invisible script in ``where`` (a Streamlit container; the page itself by default)."""
    encoded = {name: None if value is None else urllib.parse.quote(value, safe="")
               for name, value in values.items()}
    (where or st).html(_SCRIPT % (json.dumps(encoded), ATTRIBUTES), unsafe_allow_javascript=True,
                       width=1)
