"""Operators' overrides: durable state of the gateway's own, an audit trail, a copy in the store.

Every change an operator makes (set an action, lift it) is one event: who, when, what, why, the
value it replaced and, optionally, when it expires. What holds for an account now is the
newest event for it (a lift removes the override; an expired one stops holding at its
``expires_at``). An event is one fsynced line of ``overrides.jsonl`` in the gateway's state
directory (never the exchange log's directory, whose loader takes files away) before the admin
API confirms it, and, with ``--state redis://``, also in Redis, which every gateway reads.
The loader copies the file into the store (``override_audit``: every event; ``overrides``: the
ones in force) so that scans and reports see them; the admin path never waits for the store,
which one writer at a time may hold for minutes.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson

from distillguard.gateway.enforce import Decision, Override
from distillguard.store import has_table
from distillguard.store.verdicts import SEVERITY

log = logging.getLogger("distillguard.gateway")

#: the event that removes an account's override (``DELETE /admin/overrides/{account_id}``)
LIFT = "lift"
FILE_NAME = "overrides.jsonl"

_AUDIT_DDL = """
CREATE TABLE IF NOT EXISTS override_audit (
  event_id VARCHAR PRIMARY KEY,
  account_id VARCHAR NOT NULL,
  action VARCHAR NOT NULL,
  reason VARCHAR NOT NULL,
  actor VARCHAR NOT NULL,
  remote VARCHAR,
  "at" TIMESTAMPTZ NOT NULL,
  expires_at TIMESTAMPTZ,
  previous_action VARCHAR,
  previous_reason VARCHAR,
  previous_actor VARCHAR,
  previous_at TIMESTAMPTZ,
  previous_expires_at TIMESTAMPTZ
)
"""
_CURRENT_DDL = """
CREATE TABLE IF NOT EXISTS overrides (
  account_id VARCHAR NOT NULL,
  action VARCHAR NOT NULL,
  reason VARCHAR NOT NULL,
  actor VARCHAR NOT NULL,
  "at" TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (account_id, "at")
)
"""


@dataclass(frozen=True)
class Held(Override):
    """An override in force; ``expires_at`` None: until lifted."""

    expires_at: datetime | None = None

    def decision(self) -> Decision:
        until = f" until {self.expires_at.isoformat()}" if self.expires_at else ""
        return Decision(self.action, "override",
                        (f"operator override by {self.actor} at {self.at.isoformat()}{until}: {self.reason}",))

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at


@dataclass(frozen=True)
class Event:
    """One change of one account's override: an audit row."""

    event_id: str
    account_id: str
    action: str  # a verdict action, or LIFT
    reason: str
    actor: str
    at: datetime
    expires_at: datetime | None = None
    remote: str | None = None
    previous: Held | None = None  # what held before this event

    @classmethod
    def new(cls, account_id: str, action: str, reason: str, actor: str, remote: str | None,
            expires_at: datetime | None, previous: Held | None, at: datetime) -> Event:
        return cls(uuid.uuid4().hex, account_id, action, reason, actor, at, expires_at, remote, previous)

    def held(self) -> Held | None:
        return None if self.action == LIFT else Held(self.action, self.reason, self.actor, self.at, self.expires_at)

    def to_json(self) -> bytes:
        d = asdict(self)
        d["at"] = self.at.isoformat()
        d["expires_at"] = self.expires_at.isoformat() if self.expires_at else None
        d["previous"] = None if self.previous is None else _held_json(self.previous)
        return orjson.dumps(d)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Event:
        """Raises ValueError on anything that is not an event this module wrote."""
        try:
            r = orjson.loads(raw)
            action = r["action"]
            if action != LIFT and action not in SEVERITY:
                raise ValueError(f"unknown action {action!r}")
            previous = r.get("previous")
            at = _aware(r["at"])
            return cls(str(r.get("event_id") or f"legacy-{r['account_id']}-{at.isoformat()}"),
                       str(r["account_id"]), action, str(r["reason"]), str(r["actor"]), at,
                       _aware(r["expires_at"]) if r.get("expires_at") else None, r.get("remote"),
                       None if not previous else Held(previous["action"], previous["reason"], previous["actor"],
                                                      _aware(previous["at"]),
                                                      _aware(previous["expires_at"]) if previous.get("expires_at")
                                                      else None))
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not an override event ({exc})") from None

    def audit_row(self) -> dict[str, Any]:
        """The admin API's view of the event (JSON-ready)."""
        return {"event_id": self.event_id, "account_id": self.account_id, "action": self.action,
                "reason": self.reason, "actor": self.actor, "remote": self.remote, "at": self.at.isoformat(),
                "expires_at": self.expires_at.isoformat() if self.expires_at else None,
                "previous": None if self.previous is None else _held_json(self.previous)}


def _held_json(h: Held) -> dict[str, Any]:
    return {"action": h.action, "reason": h.reason, "actor": h.actor, "at": h.at.isoformat(),
            "expires_at": h.expires_at.isoformat() if h.expires_at else None}


def _aware(value: Any) -> datetime:
    t = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    if t.tzinfo is None:
        raise ValueError(f"{value!r} has no UTC offset")
    return t


class Active(dict):
    """account -> Held, as the enforcer reads it: ``get`` does not return an expired override."""

    def get(self, account: str, default: Any = None) -> Any:  # noqa: D102 - dict.get, minus the expired
        held = dict.get(self, account)
        if held is None or (held.expires_at is not None and datetime.now(UTC) >= held.expires_at):
            return default
        return held


def supersedes(known: Any, event: Any) -> bool:
    """Whether ``event`` replaces ``known`` (None: nothing yet) for one target: the newer wins, a tie
    the larger event id, so that every gateway sharing the events agrees whatever their order."""
    return known is None or (event.at, event.event_id) > (known.at, known.event_id)


class Book:
    """What holds per account: the newest event for it wins (a tie: the larger event id)."""

    def __init__(self) -> None:
        self.latest: dict[str, Event] = {}
        self.active = Active()
        self.history: dict[str, Event] = {}  # event id -> every event seen: the audit trail

    def apply(self, e: Event) -> bool:
        self.history.setdefault(e.event_id, e)
        if not supersedes(self.latest.get(e.account_id), e):
            return False
        self.latest[e.account_id] = e
        held = e.held()
        if held is None:
            self.active.pop(e.account_id, None)
        else:
            self.active[e.account_id] = held
        return True

    def replay(self, events: list[Event]) -> None:
        for e in sorted(events, key=lambda e: (e.at, e.event_id)):
            self.apply(e)

    def in_force(self, now: datetime) -> dict[str, Held]:
        return {a: h for a, h in self.active.items() if not h.expired(now)}


class OverrideFile:
    """The append-only, fsynced file of events (``<state_dir>/overrides.jsonl``; the entity
    controls keep theirs beside it, ``name`` and ``parse`` being their file and event reader)."""

    def __init__(self, directory: str | Path, name: str = FILE_NAME, parse: Any = None) -> None:
        self.directory = Path(directory)
        self.path = self.directory / name
        self.parse = parse or Event.from_json
        self._lock = threading.Lock()

    def append(self, e: Any) -> None:
        """Durable when it returns: the line and (for a new file) its directory entry are fsynced."""
        line = e.to_json() + b"\n"
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                dfd = os.open(self.directory, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)

    def events(self) -> list[Event]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        out = []
        lines = data.splitlines()
        for n, line in enumerate(lines, 1):
            try:
                out.append(self.parse(line))
            except ValueError as exc:
                # a torn last line is a write a crash interrupted, never acknowledged; anything
                # else is damage worth a word
                if n != len(lines) or data.endswith(b"\n"):
                    log.warning("%s line %d skipped: %s", self.path, n, exc)
        return out

    def stamp(self) -> tuple[int, int] | None:
        try:
            s = os.stat(self.path)
        except FileNotFoundError:
            return None
        return s.st_size, s.st_mtime_ns


def migrate_legacy(journal_dir: Path, file: OverrideFile) -> int:
    """Overrides an older gateway wrote as ``overrides.jsonl`` inside the exchange log's
    directory: moved into ``file`` (the old name would be taken for a log segment)."""
    old = Path(journal_dir) / FILE_NAME
    if not old.exists() or old.resolve() == file.path.resolve():
        return 0
    known = {e.event_id for e in file.events()}
    moved = [e for e in OverrideFile(journal_dir).events() if e.event_id not in known]
    for e in moved:
        file.append(e)
    old.rename(old.with_name(FILE_NAME + ".migrated"))
    log.warning("overrides: moved %d override event(s) from %s to %s", len(moved), old, file.path)
    return len(moved)


class CopyToStore:
    """The loader's step that copies the override file into the store (picklable: the loader
    runs in its own process). ``pending``: the file changed since the last copy."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = str(directory)
        self._copied: tuple[int, int] | None = None

    def pending(self) -> bool:
        stamp = OverrideFile(self.directory).stamp()
        return stamp is not None and stamp != self._copied

    def __call__(self, con: duckdb.DuckDBPyConnection) -> None:
        file = OverrideFile(self.directory)
        stamp = file.stamp()
        to_store(con, file.events())
        self._copied = stamp


def to_store(con: duckdb.DuckDBPyConnection, events: list[Event]) -> None:
    """Every event into ``override_audit`` (once: by event id), then ``overrides`` rebuilt as the
    ones in force (the newest event per account, unless a lift; expired ones stay, with their
    ``expires_at``, so that a report can say what held when), in one transaction."""
    con.execute("BEGIN")
    try:
        legacy = has_table(con, "overrides") and not has_table(con, "override_audit")
        con.execute(_AUDIT_DDL)
        con.execute(_CURRENT_DDL)
        con.execute("ALTER TABLE overrides ADD COLUMN IF NOT EXISTS expires_at TIMESTAMPTZ")
        if legacy:  # a store written before the audit table: its overrides become events
            con.execute("INSERT INTO override_audit (event_id, account_id, action, reason, actor, \"at\") "
                        "SELECT 'legacy-' || account_id || '-' || strftime(\"at\", '%Y-%m-%dT%H:%M:%S.%f%z'), "
                        "account_id, action, reason, actor, \"at\" FROM overrides ON CONFLICT DO NOTHING")
        for e in events:
            p = e.previous
            con.execute("INSERT INTO override_audit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT DO NOTHING",
                        [e.event_id, e.account_id, e.action, e.reason, e.actor, e.remote, e.at, e.expires_at,
                         p and p.action, p and p.reason, p and p.actor, p and p.at, p and p.expires_at])
        book = Book()
        book.replay(_audit(con))
        con.execute("DELETE FROM overrides")
        for account, h in book.active.items():
            con.execute("INSERT INTO overrides (account_id, action, reason, actor, \"at\", expires_at) "
                        "VALUES (?, ?, ?, ?, ?, ?)", [account, h.action, h.reason, h.actor, h.at, h.expires_at])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def from_store(con: duckdb.DuckDBPyConnection) -> list[Event]:
    """Every override event the store holds (written by any gateway on it)."""
    if has_table(con, "override_audit"):
        return _audit(con)
    if not has_table(con, "overrides"):
        return []
    return [Event(f"legacy-{a}-{at.isoformat()}", a, action, reason, actor, at) for a, action, reason, actor, at in
            con.execute("SELECT account_id, action, reason, actor, \"at\" FROM overrides").fetchall()]


def _audit(con: duckdb.DuckDBPyConnection) -> list[Event]:
    rows = con.execute(
        "SELECT event_id, account_id, action, reason, actor, \"at\", expires_at, remote, previous_action, "
        "previous_reason, previous_actor, previous_at, previous_expires_at FROM override_audit").fetchall()
    return [Event(eid, a, action, reason, actor, at, exp, remote,
                  Held(pa, pr, pact, pat, pexp) if pa is not None else None)
            for eid, a, action, reason, actor, at, exp, remote, pa, pr, pact, pat, pexp in rows]
