"""Resellers in the gateway, without processes: the end user a request names, how a reseller's
request is decided per end user, and the end user's way from the journal into the store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distillguard.detect.policy import Policy
from distillguard.gateway.enforce import Enforcer, Override, Request, ScanOutputs
from distillguard.gateway.journal import Journal, Loader
from distillguard.gateway.keys import KeyRecord
from distillguard.gateway.limits import MemoryCounters
from distillguard.gateway.protocol import MAX_END_USER_CHARS, Client, exchange_row, request_facts
from distillguard.gateway.resellers import Resellers
from distillguard.store import Store
from tests.gateway.inputs import write_scan

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(("api", "body", "expected"), [
    ("chat", CHAT | {"user": "user-42"}, "user-42"),
    ("completions", {"prompt": "hi", "user": "u"}, "u"),
    ("responses", {"input": "hi", "user": "tenant-7/alice"}, "tenant-7/alice"),
    ("messages", {"messages": [], "metadata": {"user_id": "anthropic-user"}}, "anthropic-user"),
    ("messages", {"messages": [], "user": "not-anthropics-field"}, None),
    ("chat", CHAT, None),
    ("chat", CHAT | {"user": ""}, None),
    ("chat", CHAT | {"user": 42}, None),
    ("chat", CHAT | {"user": ["a"]}, None),
    ("chat", CHAT | {"user": "x" * (MAX_END_USER_CHARS + 1)}, None),
    ("chat", CHAT | {"user": "line\nbreak"}, None),
    ("chat", "not an object", None),
])
def test_the_end_user_is_the_requests_user_field_and_anything_but_a_short_printable_string_is_none(api, body,
                                                                                                   expected):
    assert request_facts(api, body, "acct").end_user == expected


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(api=st.sampled_from(["chat", "completions", "responses", "messages"]), user=JSON | st.text(max_size=400),
       meta=JSON)
def test_any_user_field_a_client_sends_is_logged_as_a_printable_id_or_null_without_an_error(api, user, meta):
    body = CHAT | {"user": user, "metadata": meta}
    facts = request_facts(api, body, "acct")
    row = exchange_row("gw-1", datetime(2026, 11, 2, tzinfo=UTC), KeyRecord("0" * 64, "acct"), Client(None, None),
                       facts, 200, (None, None), 1.0)
    value = row["end_user"]
    assert value is None or (isinstance(value, str) and 0 < len(value) <= MAX_END_USER_CHARS and value.isprintable())
    given_user = user if api != "messages" else meta.get("user_id") if isinstance(meta, dict) else None
    if isinstance(given_user, str) and 0 < len(given_user) <= MAX_END_USER_CHARS and given_user.isprintable():
        assert value == given_user


def test_the_journals_end_user_fills_the_stores_end_user_column(tmp_path):
    facts = request_facts("chat", CHAT | {"user": "user-9"}, "relay-co")
    journal = Journal(tmp_path / "log")
    loader = Loader(journal, tmp_path / "dg.duckdb", in_process=True)
    try:
        for i, f in enumerate((facts, request_facts("chat", CHAT | {"user": {"id": 1}}, "relay-co"))):
            journal.append(exchange_row(f"gw-{i}", datetime(2026, 11, 2, 10, i, tzinfo=UTC),
                                        KeyRecord("a" * 64, "relay-co"), Client("203.0.113.5", "app/1"), f, 200,
                                        (5, 7), 1.0))
        assert loader.round(rotate=True) == 2
    finally:
        journal.close()
    with Store(tmp_path / "dg.duckdb", read_only=True) as store:
        rows = store.con.execute("SELECT exchange_id, end_user FROM exchanges ORDER BY exchange_id").fetchall()
    assert rows == [("gw-0", "user-9"), ("gw-1", None)]


def _enforcer(tmp_path, verdicts, policy: Policy | None = None) -> Enforcer:
    write_scan(tmp_path / "scan", verdicts)
    return Enforcer(policy or Policy(), ScanOutputs(tmp_path / "scan"), MemoryCounters())


def _request(entity: str | None, at: datetime = datetime(2026, 11, 2, 10, tzinfo=UTC)) -> Request:
    return Request("relay-co", "org-relay", "card-relay", "relay.example", None, "203.0.113.5", None, "hi", at,
                   entity=entity)


def _decide(enforcer: Enforcer, entity: str | None, **kw) -> str:
    return asyncio.run(enforcer.decide(_request(entity, **kw))).action


def test_a_resellers_end_user_is_decided_by_its_own_verdict_and_an_unjudged_one_by_the_accounts(tmp_path):
    enforcer = _enforcer(tmp_path, [("relay-co::user-0", "throttle", None), ("relay-co::user-1", "allow", None),
                                    ("relay-co", "monitor", None)])
    assert _decide(enforcer, "relay-co::user-0") == "throttle"
    assert _decide(enforcer, "relay-co::user-1") == "allow"  # judged and allowed: not the account's monitor
    assert _decide(enforcer, "relay-co::user-new") == "monitor"  # not judged: the account's verdict
    assert _decide(enforcer, None) == "monitor"


def test_an_override_on_an_end_user_holds_for_it_alone_and_one_on_the_account_for_all_its_end_users(tmp_path):
    enforcer = _enforcer(tmp_path, [("relay-co::user-1", "allow", None)])
    at = datetime(2026, 11, 2, tzinfo=UTC)
    enforcer.overrides = {"relay-co::user-1": Override("block", "case 3", "jo", at)}
    assert (_decide(enforcer, "relay-co::user-1"), _decide(enforcer, "relay-co::user-2")) == ("block", "allow")
    enforcer.overrides = {"relay-co": Override("throttle", "case 4", "jo", at),
                          "relay-co::user-2": Override("allow", "verified", "jo", at)}
    assert (_decide(enforcer, "relay-co::user-1"), _decide(enforcer, "relay-co::user-2")) == ("throttle", "allow")


def test_the_per_end_user_rate_throttles_one_end_user_and_not_the_others_of_the_key(tmp_path):
    policy = Policy.model_validate({"resellers": {"per_end_user_rate": 3}})
    enforcer = _enforcer(tmp_path, [], policy)
    assert [_decide(enforcer, "relay-co::user-0") for _ in range(4)] == ["allow"] * 3 + ["throttle"]
    assert _decide(enforcer, "relay-co::user-1") == "allow"
    assert [_decide(enforcer, None) for _ in range(5)] == ["allow"] * 5  # requests naming no end user: the key's limits
    later = datetime(2026, 11, 2, 10, 1, 10, tzinfo=UTC)  # the minute has passed
    assert _decide(enforcer, "relay-co::user-0", at=later) == "allow"


def test_resellers_match_a_request_by_its_key_id_or_by_an_account_scanned_without_key_ids():
    resellers = Resellers()
    resellers.keys = frozenset({"key-relay", "keyless-relay"})
    assert resellers.relay("key-relay", "relay-co", "u1").entity == "relay-co::u1"
    assert resellers.relay("key-relay", "relay-co", None).entity == "relay-co"
    assert resellers.relay("key-other", "keyless-relay", "u2").entity == "keyless-relay::u2"
    assert resellers.relay("key-other", "cust-1", "u3") is None


def test_without_verdicts_a_store_holding_no_scan_yet_is_looked_at_every_thirty_seconds_not_every_tick(
        tmp_path, monkeypatch):
    import distillguard.gateway.resellers as resellers_mod

    db = tmp_path / "store.duckdb"
    Store(db).close()
    opened = []
    connect = resellers_mod.duckdb.connect
    monkeypatch.setattr(resellers_mod.duckdb, "connect", lambda *a, **k: opened.append(a) or connect(*a, **k))
    resellers = Resellers()
    looks = [resellers.refresh(str(db), None, now=float(t)) for t in range(0, 61)]  # one reload tick a second
    assert not any(looks) and len(opened) == 3  # at 0, 30 and 60 s: each look opens the store (~10 ms of CPU)
