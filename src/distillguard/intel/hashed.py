"""Matching without sharing raw data: payment fingerprints, e-mail addresses and e-mail domains
as keyed hashes.

The members of a sharing group agree on a secret key (one per group, exchanged out of band).
Each exports HMAC-SHA256(key, type + NUL + value) of the values it flags, never the values; a
receiver computes the same over its own values and keeps the ones that match. Without the key
a hash cannot be tested against a guess (an unkeyed hash of a card fingerprint, an address or a
domain could be), so each party learns only what both hold. The file names the group and the
key's fingerprint (sha256 of the key, first 16 hex digits), so that a file made with another key
is refused instead of silently matching nothing.

An address is never held raw: the store keeps its fingerprint (schema.py's email_fingerprint:
sha256 of the address trimmed and with A-Z lowered, ingest/normalize.py), and the value keyed is
that fingerprint, so two providers match one address however each wrote its case or spaces.

What is exported: the payment fingerprints and address fingerprints of the accounts the latest
scan acted on at ``min_action`` or above, and the e-mail domains *only* those accounts use (a
webmail domain that customers share is never sent: matching it would flag everyone there).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import Counter
from datetime import datetime
from pathlib import Path

import duckdb

from distillguard.intel.indicators import TLP_ORDER, Indicator, IntelError, normalise
from distillguard.store import has_table

FORMAT = "distillguard-keyed-hashes/1"
#: indicator type -> the exchanges column whose values are hashed
COLUMNS = {"payment-fingerprint": "payment_fingerprint", "email-fingerprint": "email_fingerprint",
           "email-domain": "email_domain"}
ACTIONS = ("allow", "monitor", "throttle", "fallback", "block")
MIN_KEY_BYTES = 16


def read_key(path: Path) -> bytes:
    """The group key in ``path`` (its bytes, surrounding whitespace removed); at least 16 bytes."""
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise IntelError(f"--key-file {path}: {exc.strerror or exc}") from None
    if len(key) < MIN_KEY_BYTES:
        raise IntelError(f"--key-file {path}: a group key needs at least {MIN_KEY_BYTES} bytes, got {len(key)}")
    return key


def key_fingerprint(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:16]


def keyed(key: bytes, kind: str, value: str) -> str:
    return hmac.new(key, f"{kind}\0{value}".encode(), hashlib.sha256).hexdigest()


def _flagged_values(con: duckdb.DuckDBPyConnection, min_action: str) -> dict[str, set[str]]:
    """Indicator type -> the values to export (see the module's docstring)."""
    if min_action not in ACTIONS:
        raise IntelError(f"--min-action must be one of {', '.join(ACTIONS)}, got {min_action!r}")
    wanted = list(ACTIONS[ACTIONS.index(min_action):])
    if min_action == "allow":
        flagged = "SELECT DISTINCT account_id FROM exchanges"
    else:
        if not has_table(con, "verdicts"):
            raise IntelError("the store holds no scan: run `distillguard scan` first (or give --min-action allow)")
        flagged = ("SELECT account_id FROM verdicts WHERE as_of = (SELECT max(as_of) FROM verdicts) "
                   f"AND action IN ({', '.join('?' for _ in wanted)})")
    params = [] if min_action == "allow" else wanted
    out: dict[str, set[str]] = {}
    for kind, column in COLUMNS.items():
        # a value counts when every account using it is flagged (cards are per account anyway)
        rows = con.execute(
            f"SELECT value FROM (SELECT {column} AS value, bool_and(account_id IN ({flagged})) AS all_flagged "
            f"FROM exchanges WHERE {column} IS NOT NULL GROUP BY 1) WHERE all_flagged", params).fetchall()
        out[kind] = {normalise(kind, v, f"exchanges.{column}") for (v,) in rows}
    return out


def export(con: duckdb.DuckDBPyConnection, group: str, key: bytes, tlp: str, min_action: str,
           created: datetime) -> dict:
    """The keyed-hash file of the store ``con`` for ``group``: sorted hashes, no value."""
    if tlp not in TLP_ORDER:
        raise IntelError(f"--tlp must be one of {', '.join(TLP_ORDER)}, got {tlp!r}")
    values = _flagged_values(con, min_action)
    hashes = sorted((kind, keyed(key, kind, v)) for kind, vs in values.items() for v in vs)
    return {"format": FORMAT, "group": group, "algorithm": "HMAC-SHA256", "key_fingerprint": key_fingerprint(key),
            "tlp": tlp, "created": created.isoformat(), "min_action": min_action,
            "hashes": [{"type": kind, "hmac": h} for kind, h in hashes]}


def is_hashed(doc: object) -> bool:
    return isinstance(doc, dict) and doc.get("format") == FORMAT


def match(con: duckdb.DuckDBPyConnection, doc: dict, key: bytes, source: str) -> tuple[list[Indicator], Counter]:
    """The store's own values whose keyed hash is in ``doc`` (a keyed-hash file), as indicators."""
    for field in ("group", "key_fingerprint", "tlp", "hashes"):
        if field not in doc:
            raise IntelError(f"{source}: {field}: missing")
    if not isinstance(doc["hashes"], list) or not isinstance(doc["tlp"], str) or doc["tlp"] not in TLP_ORDER:
        raise IntelError(f"{source}: hashes/tlp: not a list of hashes with a TLP 2.0 level")
    if not hmac.compare_digest(str(doc["key_fingerprint"]).encode(), key_fingerprint(key).encode()):
        raise IntelError(f"{source}: key_fingerprint: made with another key than --key-file's "
                         f"(group {str(doc['group'])[:60]!r})")
    theirs: dict[str, set[str]] = {kind: set() for kind in COLUMNS}
    for n, row in enumerate(doc["hashes"]):
        if not (isinstance(row, dict) and isinstance(row.get("type"), str) and row["type"] in COLUMNS
                and isinstance(row.get("hmac"), str)):
            raise IntelError(f"{source}: hashes[{n}]: not a {{type, hmac}} of {', '.join(COLUMNS)}")
        theirs[row["type"]].add(row["hmac"].lower())
    found, skipped = [], Counter()
    for kind, column in COLUMNS.items():
        if not theirs[kind]:
            continue
        ours = {normalise(kind, v, f"exchanges.{column}")
                for (v,) in con.execute(f"SELECT DISTINCT {column} FROM exchanges WHERE {column} IS NOT NULL").fetchall()}
        for value in sorted(ours):
            digest = keyed(key, kind, value)
            if digest in theirs[kind]:
                found.append(Indicator(source=f"{source} (group {str(doc['group'])[:60]})", external_id=f"hmac:{digest}",
                                       type=kind, value=value, tlp=doc["tlp"], name=f"shared by group {str(doc['group'])[:60]}"))
        skipped[f"{kind} hashes not held here"] += len(theirs[kind]) - sum(1 for i in found if i.type == kind)
    return found, skipped


def write(doc: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
