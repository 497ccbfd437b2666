"""Exchange records for the tests: one valid record to vary, written as JSON lines, and the rows a
query on a store returns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from distillguard.store import Store


def good_record(i: int = 0, **overrides: Any) -> dict[str, Any]:
    """A valid flat exchange record; tests change one thing at a time."""
    record = {
        "exchange_id": f"ex-{i}",
        "timestamp": "2026-04-22T10:00:00Z",
        "account_id": f"acct-{i % 3}",
        "prompt": f"prompt number {i}",
        "client_ip": "192.0.2.1",
        "model": "m-large",
        "input_tokens": 10,
        "output_tokens": 20,
    }
    record.update(overrides)
    return {k: v for k, v in record.items() if v is not None}


def write_jsonl(path: Path, records: Iterable[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def rows(store: Store, sql: str) -> list[tuple]:
    return store.con.execute(sql).fetchall()
