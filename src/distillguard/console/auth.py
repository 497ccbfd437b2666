"""Who may use the console: analysts and their tokens, login sessions, CSRF tokens, and the
limit on failed logins.

An analyst's token is 32 random bytes shown once by ``distillguard analysts add``; only its
SHA-256 is kept (a random token needs no slow hash: there is no dictionary to try). The analysts
file lives in the gateway's state directory beside ``overrides.jsonl``, so that who may act and
what was done are kept in one place. Sessions live in the console's memory: a restart logs
everyone out, which is the safe direction.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

from distillguard.errors import UserError

ROLES = ("viewer", "operator")
FILE_NAME = "analysts.json"
TOKEN_PREFIX = "dgc_"
#: an analyst's name: what the audit trail shows as the actor, so kept plain
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class Analyst:
    name: str
    role: str

    @property
    def can_act(self) -> bool:
        return self.role == "operator"


class Analysts:
    """The analysts file (``<state_dir>/analysts.json``): name -> role, token hash, created."""

    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / FILE_NAME

    def _read(self) -> dict[str, dict]:
        try:
            data = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except orjson.JSONDecodeError as exc:
            raise UserError(f"{self.path}: not an analysts file ({exc})") from None
        if not isinstance(data, dict):
            raise UserError(f"{self.path}: not an analysts file (expected an object of analysts)")
        return data

    def _write(self, data: dict[str, dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)

    def add(self, name: str, role: str) -> str:
        """Adds (or replaces the token of) an analyst; returns the token, which is not kept."""
        if not NAME.fullmatch(name):
            raise UserError(f"analyst name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-'")
        if role not in ROLES:
            raise UserError(f"--role {role!r}: one of {', '.join(ROLES)}")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        data = self._read()
        data[name] = {"role": role, "token_sha256": _digest(token), "created_at": datetime.now(UTC).isoformat()}
        self._write(data)
        return token

    def remove(self, name: str) -> bool:
        data = self._read()
        if data.pop(name, None) is None:
            return False
        self._write(data)
        return True

    def list(self) -> list[tuple[str, str, str]]:
        return sorted((n, r.get("role", "?"), r.get("created_at", "")) for n, r in self._read().items())

    def role_of(self, name: str) -> str | None:
        """The analyst's role now (None: removed), so that removing one ends their sessions."""
        role = self._read().get(name, {}).get("role")
        return role if role in ROLES else None

    def verify(self, token: str) -> Analyst | None:
        """The analyst holding ``token``; every entry is compared, in constant time each."""
        if not token or len(token) > 200:
            return None
        given = _digest(token)
        found = None
        for name, entry in self._read().items():
            stored = entry.get("token_sha256")
            if isinstance(stored, str) and hmac.compare_digest(stored, given) and entry.get("role") in ROLES:
                found = Analyst(name, entry["role"])
        return found


@dataclass
class Session:
    analyst: Analyst
    csrf: str
    expires: float


@dataclass
class Sessions:
    """Session id -> analyst, in memory; ids and CSRF tokens are 32 random bytes."""

    ttl_seconds: float = 8 * 3600
    _by_id: dict[str, Session] = field(default_factory=dict)

    def open(self, analyst: Analyst) -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        session = Session(analyst, secrets.token_urlsafe(32), time.monotonic() + self.ttl_seconds)
        self._by_id[sid] = session
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        session = self._by_id.get(sid or "")
        if session is None:
            return None
        if time.monotonic() >= session.expires:
            self._by_id.pop(sid, None)
            return None
        return session

    def close(self, sid: str | None) -> None:
        self._by_id.pop(sid or "", None)


def csrf_ok(session: Session, given: str | None) -> bool:
    return isinstance(given, str) and hmac.compare_digest(session.csrf.encode(), given.encode("utf-8", "replace"))


@dataclass
class LoginLimiter:
    """Failed logins per client address: at most ``max_failures`` in ``window_seconds``."""

    max_failures: int = 5
    window_seconds: float = 300.0
    _failures: dict[str, deque] = field(default_factory=dict)

    def blocked(self, remote: str, now: float | None = None) -> float:
        """Seconds until ``remote`` may try again (0: now)."""
        now = time.monotonic() if now is None else now
        q = self._failures.get(remote)
        if not q:
            return 0.0
        while q and now - q[0] >= self.window_seconds:
            q.popleft()
        if len(q) < self.max_failures:
            return 0.0
        return self.window_seconds - (now - q[0])

    def failed(self, remote: str, now: float | None = None) -> None:
        self._failures.setdefault(remote, deque()).append(time.monotonic() if now is None else now)
