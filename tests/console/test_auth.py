"""Analysts, their tokens, sessions and the failed-login limit."""

from __future__ import annotations

import pytest

from distillguard.console.auth import Analyst, Analysts, LoginLimiter, Sessions, csrf_ok
from distillguard.errors import UserError


def test_an_analysts_token_is_shown_once_and_only_its_hash_is_stored(tmp_path):
    analysts = Analysts(tmp_path)
    token = analysts.add("ana", "operator")
    stored = analysts.path.read_text()
    assert token not in stored and "token_sha256" in stored
    assert analysts.verify(token).name == "ana" and analysts.verify(token).can_act
    assert analysts.verify(token + "x") is None and analysts.verify("") is None
    assert oct(analysts.path.stat().st_mode & 0o777) == "0o600"


def test_a_new_token_replaces_the_old_one_and_removal_ends_the_role(tmp_path):
    analysts = Analysts(tmp_path)
    old = analysts.add("vic", "viewer")
    new = analysts.add("vic", "viewer")
    assert analysts.verify(old) is None and analysts.verify(new).role == "viewer"
    assert analysts.remove("vic") and analysts.role_of("vic") is None and analysts.verify(new) is None


@pytest.mark.parametrize("name, role", [("ana", "admin"), ("a b", "viewer"), ("<x>", "viewer"), ("", "operator")])
def test_an_unknown_role_or_a_name_that_is_not_plain_is_a_user_error(tmp_path, name, role):
    with pytest.raises(UserError):
        Analysts(tmp_path).add(name, role)


def test_a_damaged_analysts_file_is_one_user_error_naming_it(tmp_path):
    (tmp_path / "analysts.json").write_text("{not json")
    with pytest.raises(UserError, match="analysts.json"):
        Analysts(tmp_path).verify("dgc_x")


def test_failed_logins_are_limited_per_address_within_the_window():
    limiter = LoginLimiter(max_failures=3, window_seconds=60)
    for t in range(3):
        assert limiter.blocked("10.0.0.1", now=t) == 0
        limiter.failed("10.0.0.1", now=t)
    assert limiter.blocked("10.0.0.1", now=10) == pytest.approx(50)
    assert limiter.blocked("10.0.0.2", now=10) == 0
    assert limiter.blocked("10.0.0.1", now=61) == 0


def test_a_session_checks_its_csrf_token_and_expires():
    sessions = Sessions(ttl_seconds=0)
    sid, session = sessions.open(Analyst("ana", "operator"))
    assert csrf_ok(session, session.csrf) and not csrf_ok(session, "forged") and not csrf_ok(session, None)
    assert sessions.get(sid) is None  # ttl 0: expired at once
