"""An imported indicator, its table in the store, and what may be shared again.

Every indicator keeps where it came from (``source``: the file or collection URL, and the
``external_id`` it had there), how sure its producer was (``confidence``, 0..100), when it
applies (``valid_from``/``valid_until``) and its TLP 2.0 level. ``type`` says which canonical
column it is matched against (detect/extract.py's OUTSIDE_COLUMNS):

=====================  ==============================================================
``network``            an IPv4/IPv6 address or CIDR range (client_ip inside it)
``autonomous-system``  an AS number (client_asn)
``email-domain``       an e-mail domain (email_domain, lower case)
``email-fingerprint``  sha256 of a normalised e-mail address (email_fingerprint): a raw address
                       imported (STIX ``email-addr``, MISP ``email-src``/``email``) is stored as
                       its fingerprint, never as itself; keyed-hash files match the same column
``user-agent``         a User-Agent string (user_agent)
``payment-fingerprint`` a payment method fingerprint (payment_fingerprint)
=====================  ==============================================================
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime

import duckdb
import pyarrow as pa

from distillguard.errors import UserError
from distillguard.ingest import normalize
from distillguard.store import has_table

TYPES = ("network", "autonomous-system", "email-domain", "email-fingerprint", "user-agent", "payment-fingerprint")
#: TLP 2.0 levels, widest audience first; an unmarked indicator is treated as amber (not for the public)
TLP_ORDER = ("clear", "green", "amber", "amber+strict", "red")
UNMARKED_TLP = "amber"

_DDL = """
CREATE TABLE IF NOT EXISTS intel_indicators (
    indicator_id VARCHAR PRIMARY KEY, source VARCHAR NOT NULL, external_id VARCHAR, type VARCHAR NOT NULL,
    value VARCHAR NOT NULL, confidence INTEGER, valid_from TIMESTAMPTZ, valid_until TIMESTAMPTZ,
    tlp VARCHAR NOT NULL, name VARCHAR, imported_at TIMESTAMPTZ NOT NULL)
"""
_PULLS_DDL = """
CREATE TABLE IF NOT EXISTS intel_pulls (source VARCHAR PRIMARY KEY, added_last VARCHAR NOT NULL,
                                        pulled_at TIMESTAMPTZ NOT NULL)
"""


class IntelError(UserError):
    """An intelligence file, event or collection that cannot be read: names the input and the field."""


@dataclass(frozen=True)
class Indicator:
    """One matchable value of an imported indicator (a pattern with three values is three rows)."""

    source: str
    external_id: str | None
    type: str
    value: str
    confidence: int | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    tlp: str = UNMARKED_TLP
    name: str | None = None

    @property
    def indicator_id(self) -> str:
        """Stable over re-imports: the same source, id and value are the same row."""
        digest = hashlib.sha256("|".join((self.source, self.external_id or "", self.type, self.value)).encode())
        return "ind-" + digest.hexdigest()[:20]


def normalise(kind: str, value: str, where: str) -> str:
    """``value`` of indicator type ``kind`` as the store writes that column; IntelError naming ``where``."""
    text = str(value).strip()
    if kind == "network":
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise IntelError(f"{where}: {text[:80]!r} is not an IP address or CIDR range") from None
        return str(net.network_address) if net.num_addresses == 1 else str(net)
    if kind == "autonomous-system":
        digits = text.upper().removeprefix("AS")
        if not digits.isdigit() or int(digits) >= 2**32:
            raise IntelError(f"{where}: {text[:80]!r} is not an AS number")
        return str(int(digits))
    if kind == "email-domain":
        text = text.lower()
        if not text or len(text) > 320 or any(c.isspace() for c in text):
            raise IntelError(f"{where}: {text[:80]!r} is not an e-mail domain")
        return text
    if kind == "email-fingerprint":
        # an address becomes its fingerprint as ingest computes it, so that it matches the store's
        # column and is never kept; the value is not echoed (it may be an address)
        fingerprint = normalize.email_fingerprint(text)
        if fingerprint is None:
            raise IntelError(f"{where}: neither an e-mail address nor its fingerprint (64 hex digits of a sha256)")
        return fingerprint
    if kind not in TYPES:
        raise IntelError(f"{where}: unknown indicator type {kind!r}")
    if not text:
        raise IntelError(f"{where}: empty {kind}")
    return text


def tlp_allows(indicator_tlp: str, shared_at: str) -> bool:
    """Whether an indicator marked ``indicator_tlp`` may go out in something marked ``shared_at``:
    only to an audience as narrow as its own or narrower."""
    return TLP_ORDER.index(shared_at) >= TLP_ORDER.index(indicator_tlp)


SCHEMA = pa.schema([("indicator_id", pa.string()), ("source", pa.string()), ("external_id", pa.string()),
                    ("type", pa.string()), ("value", pa.string()), ("confidence", pa.int32()),
                    ("valid_from", pa.timestamp("us", tz="UTC")), ("valid_until", pa.timestamp("us", tz="UTC")),
                    ("tlp", pa.string()), ("name", pa.string()), ("imported_at", pa.timestamp("us", tz="UTC"))])


def _fingerprint_raw_addresses(con: duckdb.DuckDBPyConnection) -> None:
    """Rewrite the rows an earlier version kept as raw addresses (type ``email-address``, never
    matched) as their fingerprints, so that the store holds no address and the rows match; a value
    that is no address holds none and is left as it was."""
    rows = con.execute("SELECT indicator_id, source, external_id, value, confidence, valid_from, valid_until, tlp, "
                       "name, imported_at FROM intel_indicators WHERE type = 'email-address'").fetchall()
    for indicator_id, source, external_id, value, confidence, valid_from, valid_until, tlp, name, imported in rows:
        fingerprint = normalize.email_fingerprint(value)
        if fingerprint is None:
            continue
        row = Indicator(source, external_id, "email-fingerprint", fingerprint, confidence, valid_from, valid_until,
                        tlp, name)
        con.execute("DELETE FROM intel_indicators WHERE indicator_id = ?", [indicator_id])
        con.execute("INSERT OR REPLACE INTO intel_indicators (indicator_id, source, external_id, type, value, "
                    "confidence, valid_from, valid_until, tlp, name, imported_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [row.indicator_id, *asdict(row).values(), imported])


def store(con: duckdb.DuckDBPyConnection, indicators: list[Indicator], imported_at: datetime) -> int:
    """Insert or replace ``indicators`` in ``intel_indicators``; returns how many distinct rows."""
    con.execute(_DDL)
    _fingerprint_raw_addresses(con)
    rows = {i.indicator_id: i for i in indicators}
    names = [f.name for f in fields(Indicator)]
    table = pa.table({"indicator_id": list(rows), **{n: [asdict(i)[n] for i in rows.values()] for n in names},
                      "imported_at": [imported_at] * len(rows)}).cast(
        pa.schema([SCHEMA.field(n) for n in ["indicator_id", *names, "imported_at"]]))
    con.register("_intel_part", table)
    try:
        con.execute("INSERT OR REPLACE INTO intel_indicators BY NAME SELECT * FROM _intel_part")
    finally:
        con.unregister("_intel_part")
    return len(rows)


def load(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """Every stored indicator (SCHEMA); empty when none was imported."""
    if not has_table(con, "intel_indicators"):
        return SCHEMA.empty_table()
    return con.execute(f"SELECT {', '.join(SCHEMA.names)} FROM intel_indicators ORDER BY indicator_id"
                       ).to_arrow_table().cast(SCHEMA)


def withheld(con: duckdb.DuckDBPyConnection, shared_at: str) -> frozenset[str]:
    """The values of imported indicators whose TLP forbids sharing them at ``shared_at``: an
    export at that level must leave them out, whoever else's evidence also found them."""
    table = load(con)
    return frozenset(v for v, t in zip(table.column("value").to_pylist(), table.column("tlp").to_pylist())
                     if not tlp_allows(t, shared_at))


def last_pull(con: duckdb.DuckDBPyConnection, source: str) -> str | None:
    """The ``date_added`` of the newest object an earlier pull of ``source`` saw, or None."""
    if not has_table(con, "intel_pulls"):
        return None
    row = con.execute("SELECT added_last FROM intel_pulls WHERE source = ?", [source]).fetchone()
    return row[0] if row else None


def record_pull(con: duckdb.DuckDBPyConnection, source: str, added_last: str) -> None:
    con.execute(_PULLS_DDL)
    con.execute("INSERT OR REPLACE INTO intel_pulls VALUES (?, ?, ?)", [source, added_last, datetime.now(UTC)])



def revision(con: duckdb.DuckDBPyConnection) -> tuple:
    """What changes when indicators are imported or actors relinked: for servers that cache exports."""
    imported = (con.execute("SELECT count(*), max(imported_at) FROM intel_indicators").fetchone()
                if has_table(con, "intel_indicators") else None)
    linked = con.execute("SELECT max(linked_at) FROM actors").fetchone() if has_table(con, "actors") else None
    return imported, linked
