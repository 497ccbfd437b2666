"""Keyed-hash exchange: two stores that share a few cards and addresses match exactly those, and
the file exchanged holds no value of either (nor an address's unkeyed fingerprint)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from distillguard.cli import app
from distillguard.ingest import normalize
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


ADDRESSES = ("ann@shared.example", "bo@shared.example", "cy@other.example")


def test_two_stores_match_exactly_the_addresses_and_cards_they_share_and_the_file_holds_neither(tmp_path):
    # store a holds eight accounts with their own address and card; store b holds three of a's
    # addresses (written in another case, with spaces), two of its cards, and values of its own
    a = accounts_store(tmp_path / "a", {f"a-{i}": {"email": f"user{i}@a.example", "payment_fingerprint": f"card-{i}"}
                                        for i in range(5)}
                       | {f"a-{5 + i}": {"email": address, "payment_fingerprint": f"card-{5 + i}"}
                          for i, address in enumerate(ADDRESSES)})
    b = accounts_store(tmp_path / "b", {"b-0": {"email": " ANN@Shared.Example", "payment_fingerprint": "card-1"},
                                        "b-1": {"email": "bo@shared.example\t", "payment_fingerprint": "card-2"},
                                        "b-2": {"email": "Cy@Other.example", "payment_fingerprint": "card-b2"},
                                        "b-3": {"email": "dee@b.example", "payment_fingerprint": "card-b3"}})
    key = tmp_path / "group.key"
    key.write_bytes(b"a secret the labs of the group share\n")
    out = tmp_path / "a.hashes.json"
    done = _invoke("intel", "export-hashed", "--group", "labs", "--key-file", str(key), "--out", str(out),
                   "--db", str(a), "--min-action", "allow", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["hashes"] == {"payment-fingerprint": 8, "email-fingerprint": 8, "email-domain": 3}
    text = out.read_text()
    fingerprints = [normalize.email_fingerprint(f"user{i}@a.example") for i in range(5)]
    fingerprints += [normalize.email_fingerprint(address) for address in ADDRESSES]
    assert "@" not in text and ".example" not in text and "card-" not in text
    assert not any(f in text for f in fingerprints)  # only keyed: an unkeyed fingerprint can be tested against a guess
    done = _invoke("intel", "import", str(out), "--db", str(b), "--key-file", str(key), "--json")
    assert done.exit_code == 0, done.output
    with Store(b, read_only=True) as store:
        got = {(r["type"], r["value"]) for r in indicators.load(store.con).to_pylist()}
        stored = {v for (v,) in store.con.execute("SELECT DISTINCT email_fingerprint FROM exchanges").fetchall()}
    assert got == {("payment-fingerprint", "card-1"), ("payment-fingerprint", "card-2"),
                   *(("email-fingerprint", normalize.email_fingerprint(address)) for address in ADDRESSES),
                   ("email-domain", "shared.example"), ("email-domain", "other.example")}
    assert {v for t, v in got if t == "email-fingerprint"} < stored


def test_an_email_fingerprint_indicator_is_a_sha256_or_an_address_hashed_and_a_bad_value_is_never_echoed():
    with pytest.raises(indicators.IntelError) as caught:
        indicators.normalise("email-fingerprint", "someone at example", "feed.json hashes[0]")
    assert "someone" not in str(caught.value) and "64 hex digits" in str(caught.value)
    assert indicators.normalise("email-fingerprint", " " + "AB" * 32, "x") == "ab" * 32
    assert (indicators.normalise("email-fingerprint", "Someone@Example.com", "x")
            == normalize.email_fingerprint("someone@example.com"))
