"""The lead role at the edges: password tries limited per address and per server process with a
delay, OIDC needs a verified e-mail, a broken secrets.toml is reported and keeps the role off."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from clocks import Clock
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "correct horse"
SCRIPT = """
import streamlit as st
from ui import roles
st.write("LEAD" if roles.lead_gate() else "NOT LEAD")
"""


@pytest.fixture()
def roles(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    from ui import roles

    clock = Clock(1000.0)
    monkeypatch.setattr(roles.LIMITER, "clock", clock)
    monkeypatch.setattr(roles, "_secrets_files", lambda: [])  # this machine's files stay out
    roles.LIMITER.reset()
    roles.clock = clock
    yield roles
    roles.LIMITER.reset()


def session(secrets: dict | None = None, user: dict | None = None) -> AppTest:
    """A fresh browser session (new session state) of the same server process."""
    at = AppTest.from_string(SCRIPT, default_timeout=30)
    at.secrets.update(secrets if secrets is not None else {"lead_password": PASSWORD})
    if user is not None:
        at.user = user
    return at.run()


def try_password(at: AppTest, password: str) -> AppTest:
    at.sidebar.text_input(key="dextr_lead_password_input").input(password).run()
    assert not at.exception
    return at


def is_lead(at: AppTest) -> bool:
    return any(m.value == "LEAD" for m in at.markdown)


def sidebar_text(at: AppTest) -> str:
    return " ".join(e.value for kind in ("warning", "error", "info") for e in
                    getattr(at.sidebar, kind))


# --- the limiter itself (an injected clock, no waiting) ----------------------------------------


def test_each_wrong_password_doubles_the_wait_before_the_next_try(roles):
    limiter = roles.AttemptLimiter(clock=Clock(1000.0))
    clock = limiter.clock
    assert limiter.refusal("10.0.0.5") is None
    limiter.failure("10.0.0.5")
    assert "Wait 1 s" in limiter.refusal("10.0.0.5")
    clock.t += 1.0
    assert limiter.refusal("10.0.0.5") is None
    limiter.failure("10.0.0.5")
    clock.t += 1.0
    assert "Wait 1 s" in limiter.refusal("10.0.0.5")  # 2 s after the second failure
    clock.t += 1.0
    assert limiter.refusal("10.0.0.5") is None
    assert limiter.refusal("10.0.0.6") is None, "another address is not slowed down"


def test_five_wrong_passwords_lock_an_address_until_the_window_passes(roles):
    limiter = roles.AttemptLimiter(clock=Clock(1000.0))
    for _ in range(5):
        limiter.clock.t += 100.0
        assert limiter.refusal("a") is None
        limiter.failure("a")
    limiter.clock.t += 100.0
    assert "from this address" in limiter.refusal("a")
    limiter.clock.t += 900.0
    assert limiter.refusal("a") is None


def test_many_addresses_together_pause_password_sign_in_for_the_whole_server(roles):
    limiter = roles.AttemptLimiter(clock=Clock(1000.0), max_total=20)
    for i in range(20):
        limiter.failure(f"10.0.{i}.1")
    assert "on this server" in limiter.refusal("10.9.9.9")
    assert "on this server" in limiter.refusal("10.0.0.1")
    limiter.clock.t += 901.0
    assert limiter.refusal("10.9.9.9") is None


def test_a_right_password_clears_its_address(roles):
    limiter = roles.AttemptLimiter(clock=Clock(1000.0))
    for _ in range(4):
        limiter.clock.t += 100.0
        limiter.failure("a")
    limiter.clock.t += 100.0
    limiter.success("a")
    limiter.failure("a")
    limiter.clock.t += 1.0
    assert limiter.refusal("a") is None


# --- in the app: fresh browser sessions do not give new tries ----------------------------------


def test_fresh_browser_sessions_do_not_give_new_password_tries(roles):
    for _ in range(5):
        roles.clock.t += 120.0
        at = try_password(session(), "guess")
        assert not is_lead(at)
    roles.clock.t += 120.0
    at = try_password(session(), PASSWORD)  # even the right password, from a sixth session
    assert not is_lead(at)
    assert "Too many wrong lead passwords from this address" in sidebar_text(at)
    roles.clock.t += 900.0
    assert is_lead(try_password(session(), PASSWORD))


def test_a_try_during_the_delay_is_refused_unchecked(roles):
    try_password(session(), "guess")
    at = try_password(session(), PASSWORD)
    assert not is_lead(at) and "Wait" in sidebar_text(at)
    roles.clock.t += 2.0
    assert is_lead(try_password(session(), PASSWORD))


def test_the_client_address_comes_from_the_connection_or_a_configured_proxy(roles, monkeypatch):
    def context(ip, headers, proxies=("127.0.0.1",)):
        secrets = SimpleNamespace(to_dict=lambda: {"trusted_proxies": list(proxies)})
        return SimpleNamespace(context=SimpleNamespace(ip_address=ip, headers=headers),
                               secrets=secrets)

    monkeypatch.setattr(roles, "st", context("192.0.2.7", {"X-Forwarded-For": "1.1.1.1"}))
    assert roles.client_address() == "192.0.2.7", "a remote client's own header is not trusted"
    monkeypatch.setattr(roles, "st", context(None, {"X-Forwarded-For": "6.6.6.6, 198.51.100.4"}))
    assert roles.client_address() == "198.51.100.4"
    monkeypatch.setattr(roles, "st", context(None, {"X-Real-Ip": "198.51.100.9"}))
    assert roles.client_address() == "198.51.100.9"
    monkeypatch.setattr(roles, "st", context(None, {}))
    assert roles.client_address() == "local"
    # a proxy on another machine, in front of a second one: the first untrusted hop from the right
    monkeypatch.setattr(roles, "st", context("10.0.0.5", {"X-Forwarded-For": "6.6.6.6, 203.0.113.8, 10.0.0.9"},
                                             proxies=["10.0.0.0/24"]))
    assert roles.client_address() == "203.0.113.8"


def test_a_forwarded_address_from_a_peer_that_is_no_configured_proxy_is_ignored(roles, monkeypatch):
    def context(ip, headers, proxies):
        secrets = SimpleNamespace(to_dict=lambda: {"trusted_proxies": proxies} if proxies else {})
        return SimpleNamespace(context=SimpleNamespace(ip_address=ip, headers=headers),
                               secrets=secrets)

    spoofed = {"X-Forwarded-For": "198.51.100.4", "X-Real-Ip": "198.51.100.5"}
    for proxies in (None, [], ["10.0.0.0/8"], "not an address"):  # this machine not configured
        monkeypatch.setattr(roles, "st", context(None, spoofed, proxies))
        assert roles.client_address() == "local", proxies
    monkeypatch.setattr(roles, "st", context("192.0.2.7", spoofed, ["127.0.0.1"]))
    assert roles.client_address() == "192.0.2.7"


# --- OIDC and the secrets file ------------------------------------------------------------------

AUTH = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "c00kie",
        "client_id": "id", "client_secret": "secret",
        "server_metadata_url": "https://idp.example.org/.well-known/openid-configuration"}


@pytest.mark.parametrize(("verified", "lead"), [(True, True), ("true", True), (False, False),
                                                (None, False)])
def test_oidc_needs_a_verified_email(roles, verified, lead):
    user = {"is_logged_in": True, "email": "ana.lead@example.org"}
    if verified is not None:
        user["email_verified"] = verified
    at = session({"auth": AUTH, "lead_emails": ["ana.lead@example.org"]}, user)
    assert not at.exception
    assert is_lead(at) is lead
    if not lead:
        assert "has not verified" in sidebar_text(at)


def test_a_secrets_file_that_does_not_parse_is_reported_and_the_role_stays_off(
        roles, tmp_path, monkeypatch):
    bad = tmp_path / "secrets.toml"
    bad.write_text('lead_emails = ["a@example.org"]\nlead_password = correct horse\n')
    monkeypatch.setattr(roles, "_secrets_files", lambda: [tmp_path / "missing.toml", bad])
    at = session()  # st.secrets still holds a password: the broken file wins
    assert not is_lead(at)
    (error,) = at.sidebar.error
    assert str(bad) in error.value and "line 2" in error.value and "Lead access is off" in \
        error.value
    assert not roles.is_configured()
    assert not [t for t in at.sidebar.text_input if t.key == "dextr_lead_password_input"]
