"""What a gateway under test is given: the API keys of its accounts and a scan's output files."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from distillguard.detect.inherit import INDICATOR_SCHEMA
from distillguard.store.verdicts import VERDICT_SCHEMA

KEYS = [
    {"api_key": "sk-alice", "account_id": "alice", "payment_fingerprint": "card-a", "email_domain": "example.com"},
    {"api_key": "sk-bob", "account_id": "bob", "organization_id": "org-b"},
    {"api_key": "sk-carol", "account_id": "carol"},
    {"api_key": "sk-dave", "account_id": "dave"},
    {"api_key": "sk-erin", "account_id": "erin", "organization_id": "verified-uni"},
    {"api_key": "sk-gone", "account_id": "gone", "revoked": True},
    {"api_key": "sk-recruit", "account_id": "recruit", "payment_fingerprint": "card-campaign",
     "account_created_at": datetime.now(UTC).isoformat()},
    # adaptive recruits: a card of their own, nothing but the campaign's framing in common
    {"api_key": "sk-scripted", "account_id": "scripted", "payment_fingerprint": "card-own-1",
     "account_created_at": datetime.now(UTC).isoformat()},
    {"api_key": "sk-copycat", "account_id": "copycat", "payment_fingerprint": "card-own-2",
     "account_created_at": datetime.now(UTC).isoformat()},
]


def write_scan(directory: Path, verdicts: list[tuple[str, str, str | None]],
               indicators: list[tuple[str, str, str, str, int]] = (), reason: str | None = None) -> None:
    """A scan's output files as ``scan --out`` writes them: (account, action, campaign) rows and
    (campaign_id, action, kind, key, holders) indicators; each verdict gives ``reason`` (by
    default one that names its account)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    table = pa.table({
        "account_id": [a for a, _, _ in verdicts], "action": [x for _, x, _ in verdicts],
        "score": [0.9] * len(verdicts), "campaign_id": [c for _, _, c in verdicts],
        "reasons": [[reason or f"test reason for {a}: linkage 0.9 >= 0.4"] for a, _, _ in verdicts],
        "as_of": [now] * len(verdicts)}, schema=VERDICT_SCHEMA)
    ind = pa.table({n: [row[i] for row in indicators] for i, n in enumerate(INDICATOR_SCHEMA.names)},
                   schema=INDICATOR_SCHEMA)
    pq.write_table(ind, directory / "indicators.parquet")
    pq.write_table(table, directory / "verdicts.parquet")
