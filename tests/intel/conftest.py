"""Stores of a few accounts for the intelligence tests, written with the tests' exchange records."""

from __future__ import annotations

from pathlib import Path

import pytest

from distillguard.ingest import ingest_paths
from distillguard.store import Store
from tests.records import good_record, write_jsonl


def accounts_store(path: Path, accounts: dict[str, dict]) -> Path:
    """A store at ``path`` where each account (id -> fields of its records) sent five exchanges
    over five days, each account at its own hour, so that no two look coordinated."""
    records = []
    for n, (account, fields) in enumerate(sorted(accounts.items())):
        for day in range(5):
            records.append(good_record(len(records), account_id=account,
                                       timestamp=f"2026-05-0{day + 1}T{(n * 5) % 24:02d}:{(n * 13) % 60:02d}:00Z",
                                       prompt=f"question {day} of {account}", user_agent=f"client/{n}.0",
                                       **fields))
    store_path = path.with_suffix(".duckdb")
    with Store(store_path) as store:
        ingest_paths(store, [write_jsonl(path.with_suffix(".jsonl"), records)])
    return store_path


@pytest.fixture
def eight_accounts(tmp_path) -> Path:
    """Eight unrelated accounts acct-0..7: own /24, own card card-N, own domain dN.example."""
    return accounts_store(tmp_path / "eight", {
        f"acct-{i}": {"client_ip": f"198.51.{i}.7", "payment_fingerprint": f"card-{i}",
                      "email_domain": f"d{i}.example"} for i in range(8)})


# the scanned store the report tests share (a campaign STIX, MISP and TAXII export)
from tests.report.conftest import intel_store  # noqa: F401
