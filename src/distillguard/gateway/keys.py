"""The API key table: which account (and organisation, card, sign-up facts) a key belongs to.

Keys are never stored in clear: only their SHA-256 is kept, in the store's ``api_keys``
table or read from a keys file (CSV or YAML with ``api_key``, or ``api_key_sha256`` for a
file that must not hold secrets either). API keys are long random strings, so an unsalted
digest cannot be reversed by guessing, and it lets the gateway find a key in one dictionary
lookup per request. ``key_id`` (the digest's first 12 hex digits) names a key in logs and in
the canonical ``api_key_id`` column.
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
import secrets
import zlib
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import duckdb

from distillguard import yamlfile
from distillguard.errors import UserError
from distillguard.store import has_table

_DDL = """
CREATE TABLE IF NOT EXISTS api_keys (
  key_sha256 VARCHAR PRIMARY KEY,
  key_id VARCHAR NOT NULL,
  account_id VARCHAR NOT NULL,
  organization_id VARCHAR,
  payment_fingerprint VARCHAR,
  account_created_at TIMESTAMPTZ,
  email_domain VARCHAR,
  added_at TIMESTAMPTZ NOT NULL,
  revoked_at TIMESTAMPTZ
)
"""


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    """A fresh key in the shape clients expect (``sk-`` and 48 URL-safe characters)."""
    return "sk-dg-" + secrets.token_urlsafe(36)


#: the least entropy a key given to ``keys add`` must carry: what a random 128-bit token has
MIN_KEY_BITS = 128
_PREFIX = re.compile(r"^[A-Za-z]{1,12}(?:[-_][A-Za-z]{1,12})*[-_]")  # sk-, sk-proj-, sk-dg-
_CLASSES = (str.islower, str.isupper, str.isdigit)


def estimated_bits(secret: str) -> float:
    """A cautious estimate of the entropy of ``secret``, in bits.

    The smaller of two bounds: length times log2 of the alphabet its character classes span
    (lowercase, uppercase, digits: 26, 26, 10; anything else: 33), and eight times its
    raw-deflate size, which repetition and runs shrink ('ab' * 40 compresses to a few bytes).
    A leading word prefix such as ``sk-`` is public and counts for nothing. It cannot see
    every pattern (a keyboard walk), only the common ways a key is weak.
    """
    body = _PREFIX.sub("", secret, count=1)
    if not body:
        return 0.0
    ascii_body = body.isascii()
    alphabet = sum(size for test, size in zip(_CLASSES, (26, 26, 10))
                   if any(test(c) and c.isascii() for c in body))
    if any(not (c.isascii() and (c.islower() or c.isupper() or c.isdigit())) for c in body):
        alphabet += 33 if ascii_body else 1000
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    packed = packer.compress(body.encode()) + packer.flush()
    return min(len(body) * math.log2(alphabet), 8.0 * len(packed))


def check_strength(secret: str) -> None:
    """A UserError unless ``secret`` carries at least MIN_KEY_BITS (estimated_bits)."""
    bits = estimated_bits(secret)
    if bits < MIN_KEY_BITS:
        raise UserError(f"--key: the key carries about {bits:.0f} bits of entropy, fewer than the {MIN_KEY_BITS} "
                        "required (e.g. 22 random URL-safe characters); leave --key out to have one generated "
                        "and printed once")


@dataclass(frozen=True)
class KeyRecord:
    key_sha256: str
    account_id: str
    organization_id: str | None = None
    payment_fingerprint: str | None = None
    account_created_at: datetime | None = None
    email_domain: str | None = None
    revoked_at: datetime | None = None

    @cached_property
    def key_id(self) -> str:
        # read on every request (the resellers' check, the log's api_key_id): built once per record
        return "key-" + self.key_sha256[:12]

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


_OPTIONAL = ("organization_id", "payment_fingerprint", "email_domain")


def _timestamp(value: Any, where: str) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"{where}: field account_created_at: not an ISO-8601 time: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def record_from(row: dict[str, Any], where: str) -> KeyRecord:
    """One key from a file row; ``where`` names file and line for the error."""
    secret, digest = row.get("api_key"), row.get("api_key_sha256")
    if secret:
        digest = hash_key(str(secret))
    elif not digest:
        raise UserError(f"{where}: field api_key: missing (or give api_key_sha256)")
    digest = str(digest).lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise UserError(f"{where}: field api_key_sha256: not a SHA-256 hex digest")
    account = row.get("account_id")
    if not account:
        raise UserError(f"{where}: field account_id: missing")
    extra = {k: (str(row[k]) if row.get(k) not in (None, "") else None) for k in _OPTIONAL}
    revoked = row.get("revoked") in (True, "true", "1", "yes")
    return KeyRecord(digest, str(account), **extra,
                     account_created_at=_timestamp(row.get("account_created_at"), where),
                     revoked_at=datetime.now(UTC) if revoked else None)


def load_file(path: str | Path) -> list[KeyRecord]:
    """Keys from a CSV (header row) or YAML (a list of mappings, or ``keys:`` and one) file."""
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        data = yamlfile.read(path, "keys file") or []
        if isinstance(data, dict):
            data = data.get("keys", [])
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise UserError(f"{path}: expected a list of keys (mappings with api_key and account_id)")
        return [record_from(r, f"{path}: entry {i}") for i, r in enumerate(data, start=1)]
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"{path}: cannot read keys file ({exc.strerror})") from None
    reader = csv.DictReader(text.splitlines())
    return [record_from(r, f"{path}: line {reader.line_num}") for r in reader]


def ensure_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(_DDL)


def add(con: duckdb.DuckDBPyConnection, record: KeyRecord) -> None:
    ensure_table(con)
    values = asdict(record)
    values.pop("revoked_at")
    try:
        con.execute(
            "INSERT INTO api_keys (key_sha256, key_id, account_id, organization_id, payment_fingerprint, "
            "account_created_at, email_domain, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, now())",
            [values["key_sha256"], record.key_id, values["account_id"], values["organization_id"],
             values["payment_fingerprint"], values["account_created_at"], values["email_domain"]])
    except duckdb.ConstraintException:
        raise UserError(f"key {record.key_id} is already in the key table") from None


def revoke(con: duckdb.DuckDBPyConnection, key_id: str) -> int:
    """Revoke one key (by key_id) or every key of an account (by account_id); returns how many."""
    ensure_table(con)
    return con.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE revoked_at IS NULL AND (key_id = ? OR account_id = ?) "
        "RETURNING key_id", [key_id, key_id]).fetchall().__len__()


def listed(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    ensure_table(con)
    cur = con.execute("SELECT key_id, account_id, organization_id, payment_fingerprint, account_created_at, "
                      "email_domain, added_at, revoked_at FROM api_keys ORDER BY added_at, key_id")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def load_db(con: duckdb.DuckDBPyConnection) -> list[KeyRecord]:
    if not has_table(con, "api_keys"):
        return []
    names = [f.name for f in fields(KeyRecord)]
    rows = con.execute(f"SELECT {', '.join(names)} FROM api_keys").fetchall()
    return [KeyRecord(**dict(zip(names, row))) for row in rows]


class KeyTable:
    """Key digest -> record, for one lookup per request. Later sources win: a key revoked in
    the store stays revoked whatever the keys file says."""

    def __init__(self, records: list[KeyRecord] = ()) -> None:
        self.by_digest: dict[str, KeyRecord] = {}
        self.update(records)

    def update(self, records: list[KeyRecord]) -> None:
        for r in records:
            known = self.by_digest.get(r.key_sha256)
            if known is not None and known.revoked and not r.revoked:
                r = replace(r, revoked_at=known.revoked_at)
            self.by_digest[r.key_sha256] = r

    def lookup(self, secret: str) -> KeyRecord | None:
        """The record of a live key; None for an unknown or revoked one."""
        record = self.by_digest.get(hash_key(secret))
        return None if record is None or record.revoked else record

    def __len__(self) -> int:
        return len(self.by_digest)
