"""The gateway's side of resellers: which keys front end users, and who a relayed request is.

The scan recognises a reseller key (detect/resellers.py) and judges each end user its requests
name as the entity ``<account>::<end user>``; it keeps the keys it recognised in the store
(store/resellers.py). The gateway reads the keys of the scan whose verdicts it enforces, so that
a request of such a key naming an end user is decided as that entity (gateway/enforce.py): one
flagged end user is refused while the reseller's others are served.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from distillguard.detect.resellers import ENTITY_SEPARATOR
from distillguard.store import resellers as stored

log = logging.getLogger("distillguard.gateway")

#: OpenAI's error for a reseller's request that names no end user where the policy requires one
END_USER_REQUIRED = ("This API key serves many end users: each request must name its end user in the 'user' field.",
                     "invalid_request_error", "end_user_required")


def entity_id(account_id: str, end_user: str) -> str:
    """The entity the scan judges an end user of a reseller account as."""
    return f"{account_id}{ENTITY_SEPARATOR}{end_user}"


@dataclass(frozen=True)
class Relay:
    """What a request of a recognised reseller key is: its account, its end user (None when it
    names none) and the entity it is decided as (the account when no end user)."""

    account_id: str
    end_user: str | None

    @property
    def entity(self) -> str:
        return entity_id(self.account_id, self.end_user) if self.end_user else self.account_id


class Resellers:
    """The reseller keys of one scan, re-read whenever the gateway's verdicts change scan.

    A key is the canonical ``api_key_id`` (the gateway's ``key-<digest>``) or, for exchanges
    that carried none, the account id (detect/resellers.key_counts): a request matches on
    either."""

    def __init__(self) -> None:
        self.keys: frozenset[str] = frozenset()
        self.as_of: datetime | None = None  # the scan they come from
        self._tried: object = ()  # the verdicts' as_of asked for last
        self._read_for: object = ()  # ... and the one whose keys are read
        self._next_try = 0.0
        self._warned: object = ()

    def refresh(self, db: str | None, verdicts_as_of: str | None, now: float, retry_seconds: float = 5.0) -> bool:
        """Read the reseller keys of the scan as of ``verdicts_as_of`` (ISO-8601, the verdicts'
        as_of) once; with None (no verdicts loaded), of the store's latest scan, looked for every
        ``6 x retry_seconds`` whether or not the store holds a scan yet (each look opens the
        store: about 10 ms of the gateway's CPU, part of it holding the interpreter the requests
        run on). A store that is busy, or holds no scan as of ``verdicts_as_of`` (verdicts of
        ``scan --input``), is tried again ``retry_seconds`` later (``now``: a monotonic clock);
        until then the keys already read stay. True when keys were read."""
        settled = verdicts_as_of is not None and self._read_for == verdicts_as_of
        if verdicts_as_of == self._tried and (settled or now < self._next_try):
            return False
        if not db or not Path(db).exists():
            return False
        self._tried, self._next_try = verdicts_as_of, now + retry_seconds
        wanted = datetime.fromisoformat(verdicts_as_of) if verdicts_as_of else None
        from distillguard.gateway.journal import STORE_LOCK

        try:
            with STORE_LOCK, duckdb.connect(db, read_only=True) as con:
                con.execute("SET TimeZone='UTC'")
                found = stored.latest(con, wanted)
        except duckdb.Error as exc:  # a busy store: later
            self._warn(verdicts_as_of, f"resellers: cannot read the store now ({exc}); keeping the "
                       f"{len(self.keys)} reseller keys read before")
            return False
        if found is None:
            self._warn(verdicts_as_of, f"resellers: the store holds no scan as of {verdicts_as_of or '(any)'} "
                       f"(scan --db stores one); keeping the {len(self.keys)} reseller keys read before")
            if verdicts_as_of is None:
                self._next_try = now + 6 * retry_seconds
            return False
        as_of, table = found
        keys = frozenset(table.column("key").to_pylist())
        if (as_of, keys) != (self.as_of, self.keys):
            log.info("resellers: %d reseller keys of the scan as of %s", len(keys), as_of.isoformat())
        self.as_of, self.keys, self._read_for = as_of, keys, verdicts_as_of
        if verdicts_as_of is None:
            self._next_try = now + 6 * retry_seconds
        return True

    def _warn(self, about: object, line: str) -> None:
        if self._warned != about:  # once per scan, not once per tick
            self._warned = about
            log.warning("%s", line)

    def relay(self, key_id: str, account_id: str, end_user: str | None) -> Relay | None:
        """The request as a relayed one when its key is a recognised reseller's; None otherwise."""
        if key_id in self.keys or account_id in self.keys:
            return Relay(account_id, end_user)
        return None
