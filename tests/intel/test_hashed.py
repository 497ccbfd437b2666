"""Keyed-hash exchange: two stores that share a few cards match exactly those, and the file
exchanged holds no value of either."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from distillguard.cli import app
from distillguard.intel import hashed, indicators
from distillguard.store import Store
from tests.intel.conftest import accounts_store

SHARED = ("card-1", "card-3", "card-6")


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def _stores(tmp_path):
    a = accounts_store(tmp_path / "a", {f"a-{i}": {"payment_fingerprint": f"card-{i}", "email_domain": f"a{i}.example",
                                                   "client_ip": f"198.51.{i}.7"} for i in range(8)})
    cards = [*SHARED, "card-x", "card-y"]
    b = accounts_store(tmp_path / "b", {f"b-{i}": {"payment_fingerprint": card, "email_domain": "b.example",
                                                   "client_ip": f"203.0.{i}.7"} for i, card in enumerate(cards)})
    key = tmp_path / "group.key"
    key.write_bytes(b"a secret the labs of the group share\n")
    return a, b, key


def test_two_stores_match_exactly_the_cards_they_share_and_the_file_holds_no_value(tmp_path):
    a, b, key = _stores(tmp_path)
    out = tmp_path / "a.hashes.json"
    done = _invoke("intel", "export-hashed", "--group", "labs", "--key-file", str(key), "--out", str(out),
                   "--db", str(a), "--min-action", "allow", "--tlp", "amber")
    assert done.exit_code == 0, done.output
    text = out.read_text()
    assert "card-" not in text and ".example" not in text and "198.51." not in text
    assert len(json.loads(text)["hashes"]) == 16  # 8 cards, 8 domains
    done = _invoke("intel", "import", str(out), "--db", str(b), "--key-file", str(key), "--json")
    assert done.exit_code == 0, done.output
    with Store(b, read_only=True) as store:
        got = indicators.load(store.con).to_pylist()
    assert sorted(r["value"] for r in got) == sorted(SHARED)
    assert {r["type"] for r in got} == {"payment-fingerprint"} and {r["tlp"] for r in got} == {"amber"}
    assert all(r["source"].endswith("(group labs)") and r["external_id"].startswith("hmac:") for r in got)


def test_a_file_made_with_another_key_is_refused_in_one_line(tmp_path):
    a, b, key = _stores(tmp_path)
    other = tmp_path / "other.key"
    other.write_bytes(b"another group's secret, not ours")
    out = tmp_path / "a.hashes.json"
    assert _invoke("intel", "export-hashed", "--group", "labs", "--key-file", str(key), "--out", str(out),
                   "--db", str(a), "--min-action", "allow").exit_code == 0
    done = _invoke("intel", "import", str(out), "--db", str(b), "--key-file", str(other))
    assert done.exit_code == 2
    assert "key_fingerprint: made with another key" in done.output and done.output.count("\n") == 1


def test_a_domain_that_unflagged_accounts_also_use_is_never_exported(tmp_path):
    db = accounts_store(tmp_path / "s", {"x-1": {"email_domain": "shared.example", "payment_fingerprint": "c1"},
                                         "x-2": {"email_domain": "shared.example", "payment_fingerprint": "c2"},
                                         "x-3": {"email_domain": "own.example", "payment_fingerprint": "c3"}})
    with Store(db) as store:
        store.con.execute("CREATE TABLE verdicts AS SELECT * FROM (VALUES ('x-1', 'throttle', TIMESTAMPTZ "
                          "'2026-05-06 00:00:00+00'), ('x-2', 'allow', TIMESTAMPTZ '2026-05-06 00:00:00+00'), "
                          "('x-3', 'block', TIMESTAMPTZ '2026-05-06 00:00:00+00')) t(account_id, action, as_of)")
        key = b"k" * 16
        doc = hashed.export(store.con, "labs", key, "amber", "throttle", __import__("datetime").datetime(2026, 5, 6))
    got = {(h["type"], h["hmac"]) for h in doc["hashes"]}
    assert got == {("payment-fingerprint", hashed.keyed(key, "payment-fingerprint", "c1")),
                   ("payment-fingerprint", hashed.keyed(key, "payment-fingerprint", "c3")),
                   ("email-domain", hashed.keyed(key, "email-domain", "own.example"))}


def test_a_short_key_is_refused(tmp_path):
    key = tmp_path / "k"
    key.write_text("short")
    done = _invoke("intel", "export-hashed", "--group", "g", "--key-file", str(key), "--out", str(tmp_path / "o"),
                   "--db", str(tmp_path / "none.duckdb"))
    assert done.exit_code == 2 and "at least 16 bytes" in done.output
