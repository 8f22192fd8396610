"""The lead role: who may reopen images, export and reset progress on the progress page.

Two ways to be a lead, both configured in ``.streamlit/secrets.toml`` (see docs/roles.md):

* ``lead_password = "..."``: a lead types it once per browser session (compared in constant time
  with ``hmac.compare_digest``; remembered in ``st.session_state``). Wrong passwords are limited
  per browser session, per source address and per server process, with a growing delay
  (:class:`AttemptLimiter`), so new sessions or tabs do not give an attacker new tries;
* Streamlit's built-in OIDC login (an ``[auth]`` section): a lead signs in with ``st.login()``,
  the identity provider says the e-mail address is verified (``email_verified`` true) and it is in
  ``lead_emails = ["..."]``.

With neither configured nobody is a lead, and :func:`lead_gate` says how to configure it. A
secrets file that does not parse is reported with its path and line (:func:`secrets_problem`) and
the lead role stays off until it is fixed.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import threading
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st

from ui.messages import md

_SESSION_KEY = "dextr_lead_role"
_PASSWORD_FIELD = "dextr_lead_password_input"
#: Wrong passwords allowed per browser session before the form is locked.
MAX_PASSWORD_ATTEMPTS = 5


@dataclass
class AttemptLimiter:
    """Wrong lead passwords, counted per source address and for the whole server process.

    Within ``window_s`` seconds: after ``k`` wrong passwords from one address its next try waits
    ``base_delay_s * 2 ** (k - 1)`` seconds (at most ``max_delay_s``); after ``max_per_address``
    it is locked until the window has passed; after ``max_total`` from all addresses together
    every password try is refused until the window has passed (a restart clears it). A right
    password clears its address's count. While an address waits, tries are refused unchecked, so
    sending them faster gains nothing. ``clock`` is injected for tests (seconds, monotonic).
    Thread-safe: one instance serves every session of the process.
    """

    max_per_address: int = 5
    max_total: int = 20
    window_s: float = 900.0
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, list[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _recent(self, now: float) -> dict[str, list[float]]:
        for address in list(self._failures):
            kept = [t for t in self._failures[address] if now - t < self.window_s]
            if kept:
                self._failures[address] = kept
            else:
                del self._failures[address]
        return self._failures

    def refusal(self, address: str) -> str | None:
        """Why a try from ``address`` is refused now (a sentence), or None when it may go on."""
        with self._lock:
            now = self.clock()
            failures = self._recent(now)
            total = sum(len(v) for v in failures.values())
            if total >= self.max_total:
                wait = min(min(v) for v in failures.values()) + self.window_s - now
                return (f"Too many wrong lead passwords on this server ({total} in "
                        f"{self.window_s / 60:.0f} min); password sign-in is paused for "
                        f"{_minutes(wait)}. Use the lead login, or restart the server.")
            mine = failures.get(address, [])
            if len(mine) >= self.max_per_address:
                wait = min(mine) + self.window_s - now
                return (f"Too many wrong lead passwords from this address ({len(mine)}); try "
                        f"again in {_minutes(wait)}.")
            if mine:
                delay = min(self.base_delay_s * 2 ** (len(mine) - 1), self.max_delay_s)
                wait = max(mine) + delay - now
                if wait > 0:
                    return f"Wait {wait:.0f} s before the next try (wrong lead password)."
        return None

    def failure(self, address: str) -> None:
        """Count a wrong password from ``address``."""
        with self._lock:
            self._failures.setdefault(address, []).append(self.clock())

    def success(self, address: str) -> None:
        """A right password from ``address``: its count starts over."""
        with self._lock:
            self._failures.pop(address, None)

    def reset(self) -> None:
        """Forget every count (tests; a restart does the same)."""
        with self._lock:
            self._failures.clear()


def _minutes(seconds: float) -> str:
    return f"{max(1, round(seconds / 60))} min"


#: The server process's limiter (module state: shared by every session of this process).
LIMITER = AttemptLimiter()


def client_address() -> str:
    """Where this session's connection comes from: ``st.context.ip_address`` (Streamlit 1.67;
    None for a peer on this machine, 127.0.0.1 or ::1), "local" for a local peer.

    ``X-Forwarded-For`` / ``X-Real-Ip`` are read only when the peer is one of the configured
    ``trusted_proxies`` (:func:`trusted_proxies`; "127.0.0.1" or "::1" for a proxy on this
    machine): then the client is the right-most forwarded address that is not itself a trusted
    proxy. Anyone else can write those headers, so without that setting they are ignored.
    """
    try:
        ip = st.context.ip_address
    except Exception:  # no script context (a plain import, a bare test)
        ip = None
    ip = ip if isinstance(ip, str) and ip else None
    proxies = trusted_proxies()
    peer_trusted = (_is_trusted(ip, proxies) if ip is not None
                    else any(n.network_address.is_loopback for n in proxies))
    if not peer_trusted:
        return ip or "local"
    try:
        headers = st.context.headers
        forwarded = headers.get("X-Forwarded-For") or ""
        real = headers.get("X-Real-Ip") or ""
    except Exception:
        forwarded = real = ""
    forwarded = forwarded if isinstance(forwarded, str) else ""
    real = real.strip() if isinstance(real, str) else ""
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, proxies):
            return hop
    return (hops[0] if hops else real) or ip or "local"


def trusted_proxies() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The configured ``trusted_proxies`` (secrets.toml: a list of addresses or networks such as
    ``["127.0.0.1", "10.0.0.0/8"]``, or one as text); entries that are not addresses are
    ignored. Empty when not set: no forwarded-address header is believed."""
    value = _secrets().get("trusted_proxies") or []
    if isinstance(value, str):
        value = [value]
    out = []
    for entry in value if isinstance(value, list | tuple) else []:
        with contextlib.suppress(ValueError):
            out.append(ipaddress.ip_network(str(entry).strip(), strict=False))
    return out


def _is_trusted(address: str, proxies) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip.version == n.version and ip in n for n in proxies)


def _secrets_files() -> list[Path]:
    try:
        from streamlit import config

        files = config.get_option("secrets.files") or []
    except Exception:
        files = []
    return [Path(f) for f in files]


def secrets_problem() -> str | None:
    """A sentence naming the secrets file that does not parse (path, line, what is wrong), or
    None when every secrets file Streamlit reads parses (or there is none)."""
    for path in _secrets_files():
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError) as exc:
            return f"{path} cannot be read ({exc}); fix its permissions or encoding"
        try:
            tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            return (f"{path} is not valid TOML: {exc}. Fix that line (values in quotes, e.g. "
                    'lead_password = "..."; see .streamlit/secrets.toml.example) and restart '
                    "the app")
    return None


def _secrets() -> Mapping[str, Any]:
    """``st.secrets`` as a plain mapping; {} when there is no secrets file, or when one does not
    parse (then :func:`secrets_problem` says which and where, and nobody is a lead)."""
    if secrets_problem() is not None:
        return {}
    try:
        return st.secrets.to_dict()
    except Exception:  # no secrets.toml (StreamlitSecretNotFoundError): no lead configured
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


def _signed_in_email() -> tuple[str | None, bool]:
    """(the OIDC user's e-mail in lower case or None, whether the provider verified it)."""
    if not oidc_providers():
        return None, False
    try:
        if not st.user.is_logged_in:
            return None, False
        email = st.user.get("email")
        verified = st.user.get("email_verified")
    except Exception:  # st.user unavailable (no auth support installed)
        return None, False
    verified = verified is True or (isinstance(verified, str) and verified.lower() == "true")
    return (str(email).strip().lower() if email else None), verified


def _oidc_email() -> str | None:
    """The signed-in OIDC user's e-mail, only when the identity provider verified it."""
    email, verified = _signed_in_email()
    return email if verified else None


def is_lead() -> bool:
    """True when this browser session holds the lead role (password given, or OIDC e-mail in
    ``lead_emails``). Never True when no lead access is configured."""
    if st.session_state.get(_SESSION_KEY) and lead_password() is not None:
        return True
    email = _oidc_email()
    return email is not None and email in lead_emails()


#: What a page says where a lead is needed but no lead access is configured.
NO_LEAD_CONFIGURED = (
    "No lead access is configured, so nobody can do this. Set `lead_password` (or `[auth]` with "
    "`lead_emails`) in `.streamlit/secrets.toml` and restart the app; see docs/roles.md.")


def needs_lead(what: str) -> str:
    """The sentence a non-lead gets for ``what`` (e.g. "reopen images"): how to sign in, or
    how to configure a lead when none is."""
    return (f"Only a lead can {what}: sign in with the lead role in the sidebar."
            if is_configured() else NO_LEAD_CONFIGURED)


def lead_name() -> str:
    """A name for the lead in the store's history: the OIDC e-mail, else "lead"."""
    return _oidc_email() or "lead"


def sign_out() -> None:
    """Drop the password role of this session (an OIDC session is ended with ``st.logout()``)."""
    st.session_state.pop(_SESSION_KEY, None)


def _check_password() -> None:
    typed = st.session_state.get(_PASSWORD_FIELD, "")
    st.session_state[_PASSWORD_FIELD] = ""  # never keep the password in the widget
    expected = lead_password()
    attempts = st.session_state.get("dextr_lead_attempts", 0)
    if expected is None or attempts >= MAX_PASSWORD_ATTEMPTS or not typed:
        return
    address = client_address()
    refusal = LIMITER.refusal(address)
    if refusal is not None:
        st.session_state["dextr_lead_refusal"] = refusal  # the try was not even checked
        return
    st.session_state.pop("dextr_lead_refusal", None)
    if hmac.compare_digest(typed.encode("utf-8"), expected.encode("utf-8")):
        st.session_state[_SESSION_KEY] = True
        st.session_state["dextr_lead_attempts"] = 0
        LIMITER.success(address)
    else:
        st.session_state["dextr_lead_attempts"] = attempts + 1
        LIMITER.failure(address)


def lead_gate(container: Any = None) -> bool:
    """Show the lead sign-in (in ``container``, default the sidebar) and return :func:`is_lead`.

    Signed in: a note and a sign-out button. Not signed in: a password field and/or one OIDC
    button per provider. Nothing configured: how to configure lead access (docs/roles.md).
    """
    box = container if container is not None else st.sidebar
    if is_lead():
        box.success(f"Lead role: {md(lead_name())}")
        if st.session_state.get(_SESSION_KEY):
            box.button("Leave the lead role", on_click=sign_out, key="dextr_lead_signout")
        elif oidc_providers():
            box.button("Log out", on_click=st.logout, key="dextr_lead_logout")
        return True

    problem = secrets_problem()
    if problem is not None:
        box.error(f"Lead access is off: {problem}.")
        return False

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
            refusal = st.session_state.get("dextr_lead_refusal")
            if refusal:
                box.warning(refusal)
            elif attempts:
                box.warning(f"Wrong lead password ({attempts} of {MAX_PASSWORD_ATTEMPTS} tries).")
    email, verified = _signed_in_email()
    if email is not None:
        if not verified:
            box.warning(f"{md(email)} is signed in, but the identity provider has not verified "
                        "that address (email_verified is not true), so it cannot be a lead; "
                        "verify it with the provider and sign in again.")
        else:
            box.warning(f"{md(email)} is signed in but is not in `lead_emails`.")
        box.button("Log out", on_click=st.logout, key="dextr_lead_logout")
    elif lead_emails():
        for provider in oidc_providers():
            label = f"Lead login ({provider})" if provider else "Lead login"
            box.button(label, on_click=st.login, args=(provider,) if provider else (),
                       key=f"dextr_lead_login_{provider or 'default'}")
    return False
