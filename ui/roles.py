"""The lead role: who may reopen images, export and reset progress on the progress page.

Two ways to be a lead, both configured in ``.streamlit/secrets.toml`` (see docs/roles.md):

* ``lead_password = "..."``: a lead types it once per browser session (compared in constant time
  with ``hmac.compare_digest``; remembered in ``st.session_state``);
* Streamlit's built-in OIDC login (an ``[auth]`` section): a lead signs in with ``st.login()`` and
  their e-mail address is in ``lead_emails = ["..."]``.

With neither configured nobody is a lead, and :func:`lead_gate` says how to configure it.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

import streamlit as st

_SESSION_KEY = "dextr_lead_role"
_PASSWORD_FIELD = "dextr_lead_password_input"
#: Wrong passwords allowed per browser session before the form is locked.
MAX_PASSWORD_ATTEMPTS = 5


def _secrets() -> Mapping[str, Any]:
    """``st.secrets`` as a plain mapping, or {} when there is no secrets file or it is broken."""
    try:
        return st.secrets.to_dict()
    except Exception:  # no secrets.toml (FileNotFoundError) or a TOML error: no lead configured
        return {}


def lead_password() -> str | None:
    """The configured ``lead_password`` (None when absent or empty)."""
    value = _secrets().get("lead_password")
    return str(value) if value not in (None, "") else None


def lead_emails() -> set[str]:
    """The configured ``lead_emails`` in lower case (a list, or one address as text)."""
    value = _secrets().get("lead_emails") or []
    if isinstance(value, str):
        value = [value]
    return {str(v).strip().lower() for v in value if str(v).strip()}


def oidc_providers() -> list[str | None]:
    """OIDC providers configured under ``[auth]``: ``[None]`` for a single unnamed provider,
    the sub-section names (``[auth.google]`` -> "google") otherwise, [] when there is none."""
    auth = _secrets().get("auth")
    if not isinstance(auth, Mapping):
        return []
    named = [name for name, value in auth.items() if isinstance(value, Mapping)]
    if named:
        return named
    return [None] if "client_id" in auth else []


def is_configured() -> bool:
    """True when a lead password or an OIDC login with an e-mail allow-list is set up."""
    return lead_password() is not None or bool(oidc_providers() and lead_emails())


def _oidc_email() -> str | None:
    if not oidc_providers():
        return None
    try:
        if not st.user.is_logged_in:
            return None
        email = st.user.get("email")
    except Exception:  # st.user unavailable (no auth support installed)
        return None
    return str(email).strip().lower() if email else None


def is_lead() -> bool:
    """True when this browser session holds the lead role (password given, or OIDC e-mail in
    ``lead_emails``). Never True when no lead access is configured."""
    if st.session_state.get(_SESSION_KEY) and lead_password() is not None:
        return True
    email = _oidc_email()
    return email is not None and email in lead_emails()


def lead_name() -> str:
    """A name for the lead in the store's history: the OIDC e-mail, else "lead"."""
    return _oidc_email() or "lead"


def sign_out() -> None:
    """Drop the password role of this session (an OIDC session is ended with ``st.logout()``)."""
    st.session_state.pop(_SESSION_KEY, None)


def _check_password() -> None:
    typed = st.session_state.get(_PASSWORD_FIELD, "")
    expected = lead_password()
    attempts = st.session_state.get("dextr_lead_attempts", 0)
    if expected is None or attempts >= MAX_PASSWORD_ATTEMPTS:
        return
    if typed and hmac.compare_digest(typed.encode("utf-8"), expected.encode("utf-8")):
        st.session_state[_SESSION_KEY] = True
        st.session_state["dextr_lead_attempts"] = 0
    elif typed:
        st.session_state["dextr_lead_attempts"] = attempts + 1
    st.session_state[_PASSWORD_FIELD] = ""  # never keep the password in the widget


def lead_gate(container: Any = None) -> bool:
    """Show the lead sign-in (in ``container``, default the sidebar) and return :func:`is_lead`.

    Signed in: a note and a sign-out button. Not signed in: a password field and/or one OIDC
    button per provider. Nothing configured: how to configure lead access (docs/roles.md).
    """
    box = container if container is not None else st.sidebar
    if is_lead():
        box.success(f"Lead role: {lead_name()}")
        if st.session_state.get(_SESSION_KEY):
            box.button("Leave the lead role", on_click=sign_out, key="dextr_lead_signout")
        elif oidc_providers():
            box.button("Log out", on_click=st.logout, key="dextr_lead_logout")
        return True

    if not is_configured():
        box.info(
            "No lead access is configured, so nobody can reopen images, replace exports or reset. "
            "Set `lead_password` (or `[auth]` with `lead_emails`) in `.streamlit/secrets.toml` "
            "and restart the app; see docs/roles.md and .streamlit/secrets.toml.example."
        )
        return False

    if lead_password() is not None:
        attempts = st.session_state.get("dextr_lead_attempts", 0)
        if attempts >= MAX_PASSWORD_ATTEMPTS:
            box.error("Too many wrong lead passwords; reload the page to try again.")
        else:
            box.text_input("Lead password", type="password", key=_PASSWORD_FIELD,
                           on_change=_check_password,
                           help="Leads can reopen images, export and reset progress.")
            if attempts:
                box.warning(f"Wrong lead password ({attempts} of {MAX_PASSWORD_ATTEMPTS} tries).")
    email = _oidc_email()
    if email is not None:
        box.warning(f"{email} is signed in but is not in `lead_emails`.")
        box.button("Log out", on_click=st.logout, key="dextr_lead_logout")
    elif lead_emails():
        for provider in oidc_providers():
            label = f"Lead login ({provider})" if provider else "Lead login"
            box.button(label, on_click=st.login, args=(provider,) if provider else (),
                       key=f"dextr_lead_login_{provider or 'default'}")
    return False
