"""The report document: every fact of one scan's campaigns, as plain JSON-able data.

The HTML, PDF and STIX outputs are all drawn from this one document, so they can never
disagree; the JSON output *is* this document (schema: report.schema.json, docs/reports.md).
Apart from ``generated_at`` it is a pure function of the store and the scan: the same store
gives the same document, byte for byte once serialised with sorted keys.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from distillguard import __version__
from distillguard.detect.evidence import TEXT as _TEXT_KINDS
from distillguard.detect.evidence import with_form
from distillguard.intel import actors as intel_actors
from distillguard.report import facts
from distillguard.report.redact import NONE, Redactor
from distillguard.store import has_table

SCHEMA_ID = "distillguard-report/1"
#: the columns of the actors section, as the ``actors`` table holds them (intel/actors.py); not
#: ``linked_at``, so that linking again to the same actors leaves a signed report verifiable
ACTOR_COLUMNS = ("actor_id", "campaigns", "first_seen", "last_seen", "members", "exchanges", "confidence", "links")

#: user-written columns, and how redaction treats them: "text" hashes the whole value,
#: "scrub" replaces the personal data inside it
_REDACTED = {
    ("sample_prompts", "prompt"): "text",
    ("user_agents", "user_agent"): "scrub",
    ("members", "own_reasons"): "scrub",
    ("members", "tie"): "scrub",
    ("inputs", "path"): "scrub",
}


def _redact(section: dict, redactor: Redactor) -> dict:
    if not redactor.enabled:
        return section
    if section["key"] == "indicator_keys":
        rows = [[kind, redactor.text(key, kind) if kind in _TEXT_KINDS else redactor.scrub(key), *rest]
                for kind, key, *rest in section["rows"]]
        return {**section, "rows": rows}
    rules = {section["columns"].index(col): how for (key, col), how in _REDACTED.items()
             if key == section["key"] and col in section["columns"]}
    if not rules:
        return section
    rows = [[(redactor.text(v) if rules.get(i) == "text" else redactor.scrub(v)) if i in rules and isinstance(v, str)
             else v for i, v in enumerate(row)] for row in section["rows"]]
    return {**section, "rows": rows}


def campaign_facts(con: duckdb.DuckDBPyConnection, scan: dict, campaign_id: str,
                   redactor: Redactor = NONE) -> dict:
    """One campaign: its sections (each with its query) and the hosting labels of its subnets."""
    scope = facts.scope_of(con, scan, campaign_id)
    sections = {k: _redact(s, redactor) for k, s in facts.campaign_sections(con, scope).items()}
    subnets = sorted({row[0] for row in sections["subnets"]["rows"]}
                     | {row[1] for row in sections["indicator_keys"]["rows"] if row[0] in with_form("range")})
    labels = facts.subnet_labels(subnets)
    asns = facts.asn_labels([row[0] for row in sections["asns"]["rows"]])
    confidence = dict(zip(sections["confidence"]["columns"], sections["confidence"]["rows"][0]))
    return {
        "campaign_id": campaign_id,
        "score": confidence["score"],
        "action": confidence["action"],
        "sections": sections,
        "subnet_labels": {s: {"category": labels[s][0], "provider": labels[s][1]} for s in subnets},
        "asn_labels": {str(a): {"category": c, "entity": e} for a, (c, e) in asns.items()},
    }


def actors_facts(con: duckdb.DuckDBPyConnection, campaign_ids: list[str]) -> dict | None:
    """The actors (intel/actors.py) that hold any of ``campaign_ids``, as ``distillguard actors``
    last linked them: the query and its rows (one per actor, its links as the stored JSON text,
    every p-value at full precision), the same rows with the links parsed, and the test that
    made each link. None when actors were never linked in this store."""
    if not has_table(con, "actors"):
        return None
    wanted = ", ".join(facts.lit(c) for c in campaign_ids)
    query = (f"SELECT {', '.join(ACTOR_COLUMNS)}\nFROM actors WHERE list_has_any(campaigns, CAST([{wanted}] AS "
             "VARCHAR[]))\nORDER BY first_seen, actor_id")
    section = facts.section(con, "actors", "Actors", query,
                            "Each link is a test of two campaigns: the keys their different members share against "
                            "the number expected by chance, and its p-value (links: JSON).")
    found = [{**row, "links": json.loads(row["links"])} for row in rows_as_dicts(section)]
    return {"test": intel_actors.TEST, "section": section, "actors": found}


def build(con: duckdb.DuckDBPyConnection, campaign_ids: list[str] | None = None, scan_id: str | None = None,
          redactor: Redactor = NONE, store_name: str = "", generated_at: datetime | None = None) -> dict:
    """The report of ``campaign_ids`` (all the scan's campaigns when None) of ``scan_id``
    (the latest scan when None)."""
    scan = facts.scan_facts(con, scan_id or facts.latest_scan(con))
    ids = facts.campaign_ids(con, scan["scan_id"]) if campaign_ids is None else campaign_ids
    return {
        "schema": SCHEMA_ID,
        "generated_at": (generated_at or datetime.now(timezone.utc)).isoformat(timespec="seconds"),
        "generator": {"name": "distillguard", "version": __version__},
        "store": Path(store_name).name,
        "redaction": {"enabled": redactor.enabled, "salted": bool(redactor.salt)},
        "scan": scan,
        "inputs": _redact(facts.inputs_section(con, scan), redactor),
        "campaigns": [campaign_facts(con, scan, c, redactor) for c in ids],
        "actors": actors_facts(con, ids),
    }


def rows_as_dicts(section: dict) -> list[dict]:
    """A section's rows keyed by column name."""
    return [dict(zip(section["columns"], row)) for row in section["rows"]]
