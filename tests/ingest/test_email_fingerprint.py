"""E-mail addresses at ingest: stored only as their fingerprint (sha256 of the address trimmed and
with A-Z lowered), naming the account's domain where the input gives none; a fingerprint given
is kept; nothing that reaches the store, the quarantine included, holds the address."""

from __future__ import annotations

import hashlib

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import example, given, settings
from hypothesis import strategies as st

from distillguard.ingest import ingest_paths, litellm
from distillguard.ingest.normalize import (
    _domain_sql,
    _fingerprint_sql,
    email_fingerprint,
    scrub_addresses,
)
from distillguard.schema import ARROW_SCHEMA
from distillguard.store import Store
from tests.records import good_record, write_jsonl

FINGERPRINT = "0f" * 32


def _stored(store: Store) -> dict[str, tuple]:
    return {r[0]: r[1:] for r in store.con.execute(
        "SELECT exchange_id, email_domain, email_fingerprint FROM exchanges").fetchall()}


def _everything(store: Store) -> str:
    """Every stored exchange and quarantined record, as text."""
    return str(store.con.execute("SELECT * FROM exchanges").fetchall()) + \
        str(store.con.execute("SELECT * FROM quarantine").fetchall())


def test_an_address_is_stored_only_as_its_fingerprint_and_names_the_domain_in_both_lanes(store, tmp_path):
    records = [good_record(0, email=" Alice@Example.COM "), good_record(1, email_address="bob@b.example",
                                                                       email_domain="own.example"),
               good_record(2, email_fingerprint=FINGERPRINT.upper(), email="carol@c.example"), good_record(3)]
    flat = write_jsonl(tmp_path / "flat.jsonl", records)  # the fast lane takes it
    nested = write_jsonl(tmp_path / "nested.jsonl",  # a nested record sends it down the general lane
                         [{**r, "exchange_id": f"n{r['exchange_id']}"} for r in records]
                         + [good_record(9, user={"email": "dan@D.example"}, email={"domain": "x.example"})])
    results = ingest_paths(store, [flat, nested])
    assert [(r.rows_stored, r.rows_quarantined) for r in results] == [(4, 0), (5, 0)]
    got = _stored(store)
    for prefix in ("", "n"):
        assert got[f"{prefix}ex-0"] == ("example.com", hashlib.sha256(b"alice@example.com").hexdigest())
        assert got[f"{prefix}ex-1"] == ("own.example", email_fingerprint("bob@b.example"))  # a given domain wins
        assert got[f"{prefix}ex-2"] == (None, FINGERPRINT)  # a given fingerprint wins over an address
        assert got[f"{prefix}ex-3"] == (None, None)
    assert got["ex-9"] == ("x.example", email_fingerprint("dan@d.example"))
    assert "@" not in _everything(store)


def test_a_value_that_is_neither_address_nor_fingerprint_is_quarantined_and_no_address_is_kept(store, tmp_path):
    records = [good_record(0, email="not an address"),
               good_record(1, email="eve@e.example", timestamp="yesterday", prompt="write to frank@f.example")]
    result, = ingest_paths(store, [write_jsonl(tmp_path / "bad.jsonl", records)])
    assert (result.rows_stored, result.rows_quarantined) == (0, 2)
    reasons = dict(store.con.execute("SELECT exchange_id, reason FROM quarantine").fetchall())
    assert reasons["ex-0"] == ("bad value: email_fingerprint is neither an e-mail address nor a sha256 "
                               "fingerprint (64 hex digits)")
    raw = store.con.execute("SELECT raw FROM quarantine WHERE exchange_id = 'ex-1'").fetchone()[0]
    assert "@" not in raw and f"email:sha256:{email_fingerprint('eve@e.example')}" in raw
    assert f"email:sha256:{email_fingerprint('frank@f.example')}" in raw


def test_canonical_parquet_holding_an_address_is_hashed_not_copied(store, tmp_path):
    row = {f.name: None for f in ARROW_SCHEMA} | {"exchange_id": "p1", "account_id": "a", "prompt": "p",
                                                   "email_fingerprint": "Grace@G.example"}
    table = pa.Table.from_pylist([row | {"timestamp": __import__("datetime").datetime(2026, 4, 22)}],
                                 schema=ARROW_SCHEMA)
    pq.write_table(table, tmp_path / "canonical.parquet")
    ingest_paths(store, [tmp_path / "canonical.parquet"])
    assert _stored(store) == {"p1": ("g.example", email_fingerprint("grace@g.example"))}


def test_litellm_keeps_the_key_owners_address_only_when_the_owner_is_the_account():
    base = {"request_id": "r1", "call_type": "acompletion", "startTime": "2026-01-01T09:00:00",
            "endTime": "2026-01-01T09:00:01", "status": "success", "proxy_server_request": {}}
    metadata = '{"user_api_key_user_id": "u-7", "user_api_key_user_email": "owner@lab.example"}'
    own = litellm.spendlogs_record({**base, "user": "u-7", "metadata": metadata})
    assert (own["account_id"], own["email_address"]) == ("u-7", "owner@lab.example")
    customer = litellm.spendlogs_record({**base, "user": "u-7", "end_user": "customer-1", "metadata": metadata})
    assert customer["account_id"] == "customer-1" and "email_address" not in customer


_CON = duckdb.connect()


def _sql(value: str) -> tuple[str | None, str | None]:
    return _CON.execute(f"SELECT {_fingerprint_sql('v')}, {_domain_sql('v')} FROM (SELECT ? AS v)",
                        [value]).fetchone()


addresses = st.builds(lambda pad, local, domain, end: f"{pad}{local}@{domain}{end}",
                      st.sampled_from(["", " ", "\t", "\n "]), st.text(min_size=1, max_size=12),
                      st.text(min_size=1, max_size=12), st.sampled_from(["", " ", "\r\n"]))


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(st.text(max_size=30), addresses))
@example(value="İnfo@Example.COM")  # lowered as A-Z only: Python's and DuckDB's Unicode lower() differ here
@example(value=" " + "AB" * 32)
def test_the_sql_and_the_python_fingerprint_agree_on_any_text(value):
    fingerprint, domain = _sql(value)
    assert fingerprint == email_fingerprint(value)
    if domain is not None:
        assert fingerprint is not None and fingerprint != value.strip().lower()


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=60), local=st.from_regex(r"[a-z0-9.+_-]{1,10}", fullmatch=True))
def test_scrubbed_text_holds_no_address(text, local):
    scrubbed = scrub_addresses(f"{text} {local}@mail.example {text}")
    assert f"{local}@mail.example" not in scrubbed and "email:sha256:" in scrubbed
