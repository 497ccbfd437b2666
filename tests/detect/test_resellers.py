"""Resellers: a key fronting many end users is recognised against the population, and its end users are judged."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import ibis
import pyarrow as pa
import pytest

from distillguard.detect import resellers
from distillguard.detect.resellers import ResellerParams
from distillguard.store.verdicts import SEVERITY, VERDICT_SCHEMA

T0 = datetime(2026, 11, 2, tzinfo=timezone.utc)


def _counts(rows: list[tuple[str, int, int]], account=lambda key: f"acct-{key}") -> pa.Table:
    return pa.Table.from_pylist([{"key": k, "account_id": account(k), "exchanges": 100, "end_users": e,
                                  "clients": c, "addresses": c, "agents": 1} for k, e, c in rows])


def test_upper_tail_counts_the_values_of_other_groups_at_least_as_large():
    assert resellers.upper_tail([0, 0, 5, 9]) == [1.0, 1.0, 0.5, 0.25]
    # an account's other keys are not counted against it: one operator's keys are one draw
    assert resellers.upper_tail([0, 0, 5, 9], ["a", "b", "r", "r"]) == [1.0, 1.0, 0.25, 0.25]


def test_a_key_fronting_many_end_users_from_many_clients_is_a_reseller_and_a_script_inventing_names_is_not():
    ordinary = [(f"k{i}", 0 if i % 3 else 1, 1 + i % 3) for i in range(57)]
    counts = _counts(ordinary + [("relay", 300, 8), ("script", 250, 1), ("app", 3, 2)])
    found = resellers.recognise(counts).to_pylist()
    assert [r["key"] for r in found] == ["relay"]
    assert found[0]["p_end_users"] == pytest.approx(1 / 60) and found[0]["p_clients"] <= 0.5
    # stated against the population: a stricter alpha than one key in 60 recognises none
    assert resellers.recognise(counts, ResellerParams(alpha=0.01)).num_rows == 0


def test_reseller_params_refuse_a_probability_outside_zero_to_one():
    with pytest.raises(ValueError, match="alpha"):
        ResellerParams(alpha=0)


def _exchanges() -> ibis.Table:
    rows = []
    for i in range(40):  # ordinary accounts, each on its own key, naming no end user
        rows.append({"exchange_id": f"o{i}", "account_id": f"cust-{i}", "api_key_id": f"key-{i}", "end_user": None,
                     "client_ip": f"198.51.100.{i}", "user_agent": "openai-python/1.0",
                     "payment_fingerprint": f"pm-{i}",
                     "organization_id": None})
    for i in range(120):  # one reseller key: 60 end users, addresses and clients of its end users
        rows.append({"exchange_id": f"r{i}", "account_id": "relay-co", "api_key_id": "key-relay",
                     "end_user": f"user-{i % 60}", "client_ip": f"203.0.113.{i % 9}", "user_agent": f"app/{i % 4}",
                     "payment_fingerprint": "pm-relay", "organization_id": "org-relay"})
    rows.append({"exchange_id": "r-own", "account_id": "relay-co", "api_key_id": "key-relay", "end_user": None,
                 "client_ip": "203.0.113.1", "user_agent": "app/0", "payment_fingerprint": "pm-relay",
                 "organization_id": "org-relay"})
    table = pa.Table.from_pylist(rows)
    table = table.append_column("timestamp", pa.array([T0 + timedelta(minutes=i) for i in range(len(rows))],
                                                      pa.timestamp("us", tz="UTC")))
    return ibis.memtable(table)


def test_a_resellers_end_users_become_entities_without_the_resellers_card_or_organisation():
    ex = _exchanges()
    found = resellers.recognise(resellers.key_counts(ex).to_pyarrow())
    assert found.column("key").to_pylist() == ["key-relay"] and found.column("end_users").to_pylist() == [60]
    moved = resellers.end_user_entities(ex, found).to_pyarrow().to_pylist()
    relayed = [r for r in moved if r["exchange_id"].startswith("r") and r["exchange_id"] != "r-own"]
    assert {r["account_id"] for r in relayed} == {f"relay-co::user-{i}" for i in range(60)}
    assert all(r["payment_fingerprint"] is None and r["organization_id"] is None for r in relayed)
    own = next(r for r in moved if r["exchange_id"] == "r-own")
    assert own["account_id"] == "relay-co" and own["payment_fingerprint"] == "pm-relay"
    assert {r["account_id"] for r in moved if r["exchange_id"].startswith("o")} == {f"cust-{i}" for i in range(40)}


def test_an_end_users_verdict_names_its_reseller_first_when_flagged():
    found = resellers.recognise(resellers.key_counts(_exchanges()).to_pyarrow())
    verdicts = pa.Table.from_pylist([
        {"account_id": "relay-co::user-3", "action": "monitor", "score": 0.3, "campaign_id": "c1",
         "reasons": ["campaign c1: ..."], "as_of": T0},
        {"account_id": "relay-co::user-4", "action": "allow", "score": 0.0, "campaign_id": None, "reasons": [],
         "as_of": T0},
        {"account_id": "cust-1", "action": "allow", "score": 0.0, "campaign_id": None, "reasons": [], "as_of": T0},
    ], schema=VERDICT_SCHEMA)
    reasons = resellers.named(verdicts, found).column("reasons").to_pylist()
    assert reasons[0][0].startswith("end user user-3 of reseller account relay-co (key key-relay: 60 end users, "
                                    "36 clients")
    assert reasons[0][1] == "campaign c1: ..."
    assert reasons[1] == [reasons[1][0]] and "user-4" in reasons[1][0]
    assert reasons[2] == []


def test_split_recognises_resellers_in_the_scans_window_only():
    ex = _exchanges()
    table, found = resellers.split(ex, T0 + timedelta(minutes=200), None)
    assert found.column("key").to_pylist() == ["key-relay"]
    assert "relay-co::user-0" in set(table.account_id.to_pyarrow().to_pylist())
    # before the reseller's first request the key fronts no one: nothing is split
    table, found = resellers.split(ex, T0 + timedelta(minutes=40), None)
    assert found.num_rows == 0 and table is ex


def test_only_a_key_naming_two_end_users_can_front_any():
    """A reseller names at least two end users (recognise): without such a key the per-key counts
    are not computed at all."""
    ex = _exchanges()
    assert resellers.fronts_end_users(ex)
    one_each = ex.filter(ex.exchange_id.startswith("o") | (ex.exchange_id == "r0"))
    assert not resellers.fronts_end_users(one_each)
    assert not resellers.fronts_end_users(ex.filter(ex.exchange_id.startswith("o")))
    table, found = resellers.split(one_each, T0 + timedelta(minutes=200), None)
    assert found.num_rows == 0 and found.schema == resellers.RESELLER_SCHEMA and table is one_each


def _verdict(account: str, action: str) -> dict:
    return {"account_id": account, "action": action, "score": 0.0, "campaign_id": None, "reasons": [action],
            "as_of": T0}


def test_by_account_gives_each_account_the_strongest_action_of_its_entities_and_its_own_on_a_tie():
    verdicts = pa.Table.from_pylist([
        _verdict("relay-co", "monitor"), _verdict("relay-co::user-2", "throttle"),
        _verdict("relay-co::user-1", "throttle"), _verdict("cust-1", "allow"),
        _verdict("shop", "monitor"), _verdict("shop::u", "monitor"), _verdict("only-end-users::u", "block"),
    ], schema=VERDICT_SCHEMA)
    rows = {r["account_id"]: r for r in resellers.by_account(verdicts).to_pylist()}
    assert sorted(rows) == ["cust-1", "only-end-users", "relay-co", "shop"]
    assert [rows[a]["action"] for a in sorted(rows)] == ["allow", "block", "throttle", "monitor"]
    assert rows["shop"]["reasons"] == ["monitor"] and rows["relay-co"]["reasons"] == ["throttle"]
    assert resellers.by_account(verdicts.slice(0, 0)).num_rows == 0


def test_the_end_user_is_read_from_openais_user_field_and_litellms_end_user_column():
    from distillguard.ingest import litellm, openai_pairs

    pair = openai_pairs.to_flat({"account_id": "relay-co", "request": {
        "model": "gpt-4o", "user": "user-42", "messages": [{"role": "user", "content": "hi"}]},
        "response": {"id": "r1", "created": 1793613700}})
    assert pair["end_user"] == "user-42" and pair["account_id"] == "relay-co"
    row = {"request_id": "q1", "startTime": "2026-11-02T10:00:00Z", "api_key": "hash-1", "user": "owner-1",
           "end_user": "customer-9", "messages": "{}", "proxy_server_request": "{}", "metadata": "{}"}
    assert litellm.spendlogs_record(row)["end_user"] == "customer-9"


def _relay_store_rows(rng) -> list[dict]:
    """80 customers on their own keys; one reseller key fronting 60 end users from 8 backend
    addresses, 8 of whom run one data-generation script (one system prompt, one framing, 3 a.m. bursts)."""
    vocab = [f"w{k}" for k in range(5000)]
    rows = []

    def words() -> str:
        return " ".join(rng.choice(vocab) for _ in range(rng.randrange(6, 20)))

    def add(account, key, end_user, ip, agent, at, prompt, system=None, card=None, domain=None, out=300):
        rows.append({"exchange_id": f"x{len(rows)}", "timestamp": at.isoformat(), "account_id": account,
                     "api_key_id": key, "end_user": end_user, "client_ip": ip, "user_agent": agent, "prompt": prompt,
                     "system_prompt": system, "payment_fingerprint": card, "email_domain": domain,
                     "output_tokens": out, "input_tokens": 50, "model": "m1"})

    for i in range(80):
        ip = f"{rng.randrange(11, 220)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        for _ in range(rng.randrange(5, 40)):
            add(f"cust-{i}", f"key-{i}", None, ip, f"ua-{i}", T0 + timedelta(days=rng.uniform(0, 14)), words(),
                card=f"card-{i}", domain="gmail.com")
    for i in range(60):
        script = i < 8
        for _ in range(120 if script else rng.randrange(10, 20)):
            if script:
                at = T0 + timedelta(days=rng.randrange(14), hours=3, minutes=rng.randrange(30))
                prompt = (f"[DATAGEN v2] Produce a step-by-step solution with full reasoning for problem "
                          f"#{rng.randrange(10**6)}. Output JSON.")
                system = ("You are DataForge, a synthetic training data generator. Always answer with exhaustive "
                          "reasoning.")
            else:
                at, prompt, system = T0 + timedelta(days=rng.uniform(0, 14)), words(), None
            add("relay-co", "key-relay", f"user-{i}", f"203.0.113.{rng.randrange(1, 9)}", f"app/{rng.randrange(4)}",
                at, prompt, system=system, card="card-relay", domain="relay.example", out=3000 if script else 300)
    return rows


@pytest.mark.slow  # a scan of 4,000 exchanges: about 7 s
def test_end_users_of_a_reseller_that_form_a_campaign_are_flagged_with_the_reseller_named_and_the_rest_are_not(
        tmp_path):
    import json
    import random

    from distillguard.bench.detectors import DistillguardDetector
    from distillguard.detect import scan as scanning
    from distillguard.detect.policy import Policy
    from distillguard.ingest import ingest_paths
    from distillguard.store import Store
    from distillguard.store.engine import exchanges

    path = tmp_path / "relay.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _relay_store_rows(random.Random(7))))
    as_of, policy = T0 + timedelta(days=15), Policy()
    with Store(":memory:") as store:
        ingest_paths(store, [path])
        _, table, lookup = exchanges(store, "duckdb")
        split, found = resellers.split(table, as_of, policy.lookback_days)
        assert found.column("key").to_pylist() == ["key-relay"]
        result = scanning.scan(split, as_of, policy, lookup=lookup)
        # the benchmark's detector judges as the scan does and names each account once
        bench = {v["account_id"]: v["action"] for v in DistillguardDetector(policy).detect(store, as_of).to_pylist()}
    verdicts = {v["account_id"]: v for v in resellers.named(result.verdicts, found).to_pylist()}
    script = [verdicts[f"relay-co::user-{i}"] for i in range(8)]
    assert all(v["action"] != "allow" for v in script)
    assert all(v["reasons"][0].startswith(f"end user user-{i} of reseller account relay-co")
               for i, v in enumerate(script))
    assert all(verdicts[f"relay-co::user-{i}"]["action"] == "allow" for i in range(8, 60))
    assert all(v["action"] == "allow" for a, v in verdicts.items() if a.startswith("cust-"))
    assert "relay-co" not in verdicts  # the reseller itself is not judged as one account
    assert [sorted(c.accounts) for c in result.campaigns] == [sorted(f"relay-co::user-{i}" for i in range(8))]
    assert not any(resellers.ENTITY_SEPARATOR in a for a in bench)
    assert bench["relay-co"] == max((verdicts[f"relay-co::user-{i}"]["action"] for i in range(8)), key=SEVERITY.get)
    assert all(bench[a] == v["action"] for a, v in verdicts.items() if a.startswith("cust-"))
