"""Operators' overrides: an append-only file beside the exchange log, copied into the store.

An override must hold at once and survive a restart, and the store may be locked by a scan at
that moment: so it is first one fsynced line in ``overrides.jsonl`` (the gateway's own record,
read back at start-up), then a row of the store's ``overrides`` table (for scans, reports and
other gateways), written by the loader's next round.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import duckdb
import orjson

from distillguard.gateway.enforce import Override
from distillguard.store import has_table

_DDL = """
CREATE TABLE IF NOT EXISTS overrides (
  account_id VARCHAR NOT NULL,
  action VARCHAR NOT NULL,
  reason VARCHAR NOT NULL,
  actor VARCHAR NOT NULL,
  at TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (account_id, at)
)
"""


class OverrideLog:
    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / "overrides.jsonl"

    def append(self, account_id: str, o: Override) -> None:
        line = orjson.dumps({"account_id": account_id, "action": o.action, "reason": o.reason, "actor": o.actor,
                             "at": o.at.isoformat()}) + b"\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def entries(self) -> list[tuple[str, Override]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_bytes().splitlines():
            try:
                r = orjson.loads(line)
                out.append((r["account_id"], Override(r["action"], r["reason"], r["actor"],
                                                      datetime.fromisoformat(r["at"]))))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a torn last line of a crash: the override was never acknowledged
        return out


def latest(entries: list[tuple[str, Override]]) -> dict[str, Override]:
    """The newest override per account."""
    out: dict[str, Override] = {}
    for account, o in sorted(entries, key=lambda e: e[1].at):
        out[account] = o
    return out


def to_store(con: duckdb.DuckDBPyConnection, entries: list[tuple[str, Override]]) -> None:
    con.execute(_DDL)
    for account, o in entries:
        con.execute("INSERT INTO overrides VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    [account, o.action, o.reason, o.actor, o.at])


def from_store(con: duckdb.DuckDBPyConnection) -> list[tuple[str, Override]]:
    if not has_table(con, "overrides"):
        return []
    return [(a, Override(action, reason, actor, at)) for a, action, reason, actor, at in
            con.execute("SELECT account_id, action, reason, actor, at FROM overrides").fetchall()]
