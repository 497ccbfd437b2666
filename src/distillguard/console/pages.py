"""What each console page shows, read from the store: pure functions of a read-only connection.

The store has one writer at a time (a scan, or the gateway's loader): :func:`reading` opens a
short-lived read-only connection per request and closes it before the answer is rendered, and
when the writer holds the file it retries briefly and then says the store is busy instead of
waiting on it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import duckdb

from distillguard.detect.linkage import EVIDENCE
from distillguard.errors import UserError
from distillguard.report import facts
from distillguard.report.redact import Redactor
from distillguard.store import Store, has_table

#: the columns the campaigns page sorts by, and the SQL each one names
SORTS = {"score": "score", "members": "members", "exchanges": "exchanges", "output_tokens": "output_tokens",
         "first_seen": "first_seen", "last_seen": "last_seen", "campaign_id": "campaign_id", "action": "action"}
PER_PAGE = 50
#: what "current traffic" means on the confirmation of an action: the last day of the store
CURRENT = timedelta(hours=24)
#: evidence kinds of an edge (the edges table's shared_* columns), in declaration order: the graph's legend
EDGE_KINDS = tuple(EVIDENCE)
SAMPLE_EXCHANGES = 20
PROMPT_CHARS = 600


class StoreBusy(Exception):
    """The store's writer holds the file longer than a page may wait."""


@contextmanager
def reading(db: str, wait_seconds: float = 3.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection for one request (the ``exchanges`` view over the segments included)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            store = Store(db, read_only=True, memory_limit="1GB")
            break
        except UserError as exc:
            if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                if "lock" in str(exc).lower():
                    raise StoreBusy(str(exc)) from None
                raise
            time.sleep(0.1)
    try:
        yield store.con
    finally:
        store.close()


def latest_scan(con: duckdb.DuckDBPyConnection) -> str | None:
    if not has_table(con, "scans"):
        return None
    row = con.execute("SELECT scan_id FROM scans ORDER BY as_of DESC, scanned_at DESC LIMIT 1").fetchone()
    return row[0] if row else None


def strongest_indicator(indicators: dict[str, Any] | None) -> str:
    """The shared-indicator kind that ties the most members (then the most keys), as a phrase."""
    if not indicators:
        return ""
    kind, d = max(indicators.items(), key=lambda kv: (kv[1].get("accounts", 0), kv[1].get("shared_keys", 0), kv[0]))
    return f"{kind}: {d.get('accounts', 0)} accounts share {d.get('shared_keys', 0)} keys"


def campaigns(con: duckdb.DuckDBPyConnection, scan_id: str, query: str = "", action: str = "",
              sort: str = "score", descending: bool = True, page: int = 1,
              per_page: int = PER_PAGE) -> tuple[list[dict[str, Any]], int]:
    """One page of the scan's campaigns and how many match; ``query`` matches a campaign id or
    a member's account id (substring, case-insensitive)."""
    where, params = ["c.scan_id = ?"], [scan_id]
    if query:
        where.append("(c.campaign_id ILIKE ? ESCAPE '\\' OR c.campaign_id IN (SELECT campaign_id FROM verdicts "
                     "WHERE scan_id = ? AND account_id ILIKE ? ESCAPE '\\'))")
        like = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        params += [like, scan_id, like]
    if action:
        where.append("c.action = ?")
        params.append(action)
    order = SORTS.get(sort, "score")
    sql = f"""WITH c AS (
  SELECT campaign_id, members, exchanges, score, action, scan_id, first_scan,
         CAST(json_extract(detail, '$.output_tokens') AS BIGINT) AS output_tokens,
         CAST(json_extract_string(detail, '$.first_seen') AS TIMESTAMPTZ) AS first_seen,
         CAST(json_extract_string(detail, '$.last_seen') AS TIMESTAMPTZ) AS last_seen,
         json_extract(detail, '$.indicators') AS indicators
  FROM campaigns WHERE scan_id = ?)
SELECT campaign_id, members, exchanges, output_tokens, first_seen, last_seen, score, action,
       CAST(indicators AS VARCHAR), first_scan, count(*) OVER () AS total
FROM c WHERE {' AND '.join(where)}
ORDER BY {order} {'DESC' if descending else 'ASC'} NULLS LAST, campaign_id
LIMIT {int(per_page)} OFFSET {int(max(page - 1, 0) * per_page)}"""
    rows = con.execute(sql, [scan_id, *params]).fetchall()
    out = [{"campaign_id": r[0], "members": r[1], "exchanges": r[2], "output_tokens": r[3], "first_seen": r[4],
            "last_seen": r[5], "score": r[6], "action": r[7],
            "evidence": strongest_indicator(json.loads(r[8]) if r[8] else None), "first_scan": r[9]}
           for r in rows]
    total = rows[0][10] if rows else _count(con, sql, scan_id, params)
    return out, total


def _count(con: duckdb.DuckDBPyConnection, sql: str, scan_id: str, params: list) -> int:
    """The number of matches when the requested page is past the last one."""
    body = sql.split("\nLIMIT")[0]
    return con.execute(f"SELECT count(*) FROM ({body})", [scan_id, *params]).fetchone()[0]


def members_of(con: duckdb.DuckDBPyConnection, scan_id: str, campaign_id: str) -> list[str]:
    return [r[0] for r in con.execute("SELECT account_id FROM verdicts WHERE scan_id = ? AND campaign_id = ? "
                                      "ORDER BY account_id", [scan_id, campaign_id]).fetchall()]


def campaign(con: duckdb.DuckDBPyConnection, scan_id: str, campaign_id: str) -> dict[str, Any] | None:
    """Everything the campaign page shows: the report's sections (facts.py), the exchanges served
    before the first scan that flagged the campaign, and the evidence with its numbers."""
    if not con.execute("SELECT 1 FROM campaigns WHERE scan_id = ? AND campaign_id = ?",
                       [scan_id, campaign_id]).fetchone():
        return None
    scan = facts.scan_facts(con, scan_id)
    sections = facts.campaign_sections(con, facts.scope_of(con, scan, campaign_id))
    first_scan = con.execute("SELECT first_scan FROM campaigns WHERE scan_id = ? AND campaign_id = ?",
                             [scan_id, campaign_id]).fetchone()[0]
    leak = con.execute("""SELECT count(*), coalesce(sum(output_tokens), 0) FROM exchanges
WHERE account_id IN (SELECT account_id FROM verdicts WHERE scan_id = ? AND campaign_id = ?) AND "timestamp" < ?""",
                       [scan_id, campaign_id, first_scan]).fetchone()
    lineage = con.execute("""SELECT c.scan_id, s.as_of, c.members, c.members_added, c.members_removed, c.score, c.action,
       c.merged_from, c.split_from FROM campaigns c LEFT JOIN scans s USING (scan_id)
WHERE c.campaign_id = ? ORDER BY s.as_of""", [campaign_id]).fetchall()
    return {"scan": scan, "sections": sections, "first_scan": first_scan,
            "leakage": {"exchanges": leak[0], "output_tokens": leak[1]},
            "evidence": evidence(con, scan_id, campaign_id),
            "lineage": [dict(zip(("scan_id", "as_of", "members", "added", "removed", "score", "action", "merged_from",
                                  "split_from"), r)) for r in lineage]}


def evidence(con: duckdb.DuckDBPyConnection, scan_id: str, campaign_id: str) -> list[dict[str, Any]]:
    """The statistical evidence behind the campaign's members (the reasons that name a null model
    and its p-values), each with how many members it was given for."""
    rows = con.execute("""SELECT r, count(*) FROM (SELECT unnest(reasons) AS r FROM verdicts
WHERE scan_id = ? AND campaign_id = ?) WHERE r LIKE '%null):%' OR r LIKE 'campaign %' GROUP BY r
ORDER BY (r LIKE 'campaign %') DESC, count(*) DESC, r""", [scan_id, campaign_id]).fetchall()
    out = []
    for text, members in rows:
        kind, _, rest = text.partition(": ")
        out.append({"kind": kind if rest else "evidence", "text": rest or text, "members": members})
    return out


def graph(con: duckdb.DuckDBPyConnection, scan_id: str, campaign_id: str) -> dict[str, Any]:
    """The campaign's validated edges as cytoscape elements; an edge's kind is the evidence that
    ties the pair the most (by shared keys)."""
    members = members_of(con, scan_id, campaign_id)
    actions = dict(con.execute("SELECT account_id, action FROM verdicts WHERE scan_id = ? AND campaign_id = ?",
                               [scan_id, campaign_id]).fetchall())
    cols = ", ".join(f"shared_{k}" for k in EDGE_KINDS)
    rows = con.execute(f"""SELECT a, b, weight, {cols} FROM edges WHERE scan_id = ?
AND a IN (SELECT account_id FROM verdicts WHERE scan_id = ? AND campaign_id = ?)
AND b IN (SELECT account_id FROM verdicts WHERE scan_id = ? AND campaign_id = ?)
ORDER BY weight DESC LIMIT {facts.GRAPH_EDGES}""", [scan_id, scan_id, campaign_id, scan_id, campaign_id]).fetchall()
    nodes = [{"data": {"id": a, "action": actions.get(a, "allow")}} for a in members]
    edges = []
    for a, b, weight, *shared in rows:
        counts = dict(zip(EDGE_KINDS, (s or 0 for s in shared)))
        kind = max(EDGE_KINDS, key=lambda k: (counts[k], -EDGE_KINDS.index(k)))
        edges.append({"data": {"id": f"{a}|{b}", "source": a, "target": b, "weight": round(weight, 3), "kind": kind,
                               "shared": {k: v for k, v in counts.items() if v}}})
    return {"nodes": nodes, "edges": edges, "kinds": list(EDGE_KINDS)}


def account(con: duckdb.DuckDBPyConnection, scan_id: str | None, account_id: str,
            redactor: Redactor) -> dict[str, Any] | None:
    """The account page: signals against the population, edges, a sample of exchanges (scrubbed
    as the reports scrub them), keys, verdicts across scans."""
    seen = con.execute("""SELECT count(*), min("timestamp"), max("timestamp"), coalesce(sum(output_tokens), 0),
       any_value(organization_id) FROM exchanges WHERE account_id = ?""", [account_id]).fetchone()
    verdicts = con.execute("""SELECT v.scan_id, s.as_of, v.action, v.score, v.campaign_id, v.reasons
FROM verdicts v LEFT JOIN scans s USING (scan_id) WHERE v.account_id = ? ORDER BY s.as_of""",
                           [account_id]).fetchall() if has_table(con, "verdicts") else []
    if not seen[0] and not verdicts:
        return None
    signals = []
    if scan_id and has_table(con, "signals"):
        signals = _signals(con, scan_id, account_id)
    edges = []
    if scan_id and has_table(con, "edges"):
        cols = ", ".join(f"shared_{k}" for k in EDGE_KINDS)
        for other, weight, *shared in con.execute(f"""SELECT CASE WHEN a = ? THEN b ELSE a END, weight, {cols}
FROM edges WHERE scan_id = ? AND (a = ? OR b = ?) ORDER BY weight DESC LIMIT 100""",
                                                  [account_id, scan_id, account_id, account_id]).fetchall():
            edges.append({"account_id": other, "weight": weight,
                          "shared": ", ".join(f"{k} x{v}" for k, v in zip(EDGE_KINDS, shared) if v)})
    sample = []
    for at, model, ip, ua, prompt, out_tokens, status in con.execute(f"""SELECT "timestamp", model, client_ip,
       user_agent, prompt, output_tokens, status_code FROM exchanges WHERE account_id = ?
ORDER BY "timestamp" DESC LIMIT {SAMPLE_EXCHANGES}""", [account_id]).fetchall():
        text = redactor.scrub(prompt)
        sample.append({"at": at, "model": model, "client_ip": ip, "user_agent": redactor.scrub(ua),
                       "prompt": (text or "")[:PROMPT_CHARS], "cut": len(text or "") > PROMPT_CHARS,
                       "output_tokens": out_tokens, "status": status})
    keys = con.execute("""SELECT api_key_id, count(*), min("timestamp"), max("timestamp") FROM exchanges
WHERE account_id = ? GROUP BY api_key_id ORDER BY count(*) DESC""", [account_id]).fetchall()
    return {"account_id": account_id, "exchanges": seen[0], "first_seen": seen[1], "last_seen": seen[2],
            "output_tokens": seen[3], "organization_id": seen[4], "signals": signals, "edges": edges,
            "sample": sample, "api_keys": [dict(zip(("key_id", "exchanges", "first", "last"), k)) for k in keys],
            "verdicts": [dict(zip(("scan_id", "as_of", "action", "score", "campaign_id", "reasons"), v))
                         for v in verdicts]}


def _signals(con: duckdb.DuckDBPyConnection, scan_id: str, account_id: str) -> list[dict[str, Any]]:
    """Each signal of the account with where it stands in the scan's population: its percentile
    and a 20-bin histogram of the population's values (min to max)."""
    out = {}
    for name, value, threshold, fired, below, total, lo, hi in con.execute("""WITH
mine AS (SELECT signal, value, threshold, fired FROM signals WHERE scan_id = ? AND account_id = ?),
pop AS (SELECT signal, value FROM signals WHERE scan_id = ? AND signal IN (SELECT signal FROM mine))
SELECT m.signal, m.value, m.threshold, m.fired, count(*) FILTER (WHERE p.value < m.value), count(*),
       min(p.value), max(p.value)
FROM mine m JOIN pop p USING (signal) GROUP BY ALL ORDER BY m.fired DESC, m.signal""",
                                                                            [scan_id, account_id, scan_id]).fetchall():
        out[name] = {"signal": name, "value": value, "threshold": threshold, "fired": fired,
                     "percentile": 100.0 * below / total if total else None, "population": total,
                     "lo": lo, "hi": hi, "bins": [0] * 20}
    for name, b, n in con.execute("""WITH
r AS (SELECT signal, min(value) AS lo, max(value) AS hi FROM signals WHERE scan_id = ?
      AND signal IN (SELECT signal FROM signals WHERE scan_id = ? AND account_id = ?) GROUP BY signal)
SELECT s.signal, coalesce(least(CAST(floor((s.value - r.lo) / nullif(r.hi - r.lo, 0) * 20) AS INTEGER), 19), 0),
       count(*)
FROM signals s JOIN r USING (signal) WHERE s.scan_id = ? GROUP BY ALL""",
                                  [scan_id, scan_id, account_id, scan_id]).fetchall():
        out[name]["bins"][int(b)] += n
    return list(out.values())


def impact(con: duckdb.DuckDBPyConnection, scan_id: str | None, kind: str, target: str) -> dict[str, Any]:
    """What an action on ``target`` touches: its accounts and their traffic in the store's last day."""
    if kind == "campaign":
        accounts = members_of(con, scan_id, target) if scan_id else []
    else:
        accounts = [target]
    latest = con.execute('SELECT max("timestamp") FROM exchanges').fetchone()[0]
    recent = (0, 0)
    if latest is not None and accounts:
        recent = con.execute("""SELECT count(*), coalesce(sum(output_tokens), 0) FROM exchanges
WHERE account_id IN (SELECT unnest(?)) AND "timestamp" > ?""", [accounts, latest - CURRENT]).fetchone()
    return {"accounts": len(accounts), "exchanges_last_day": recent[0], "output_tokens_last_day": recent[1],
            "as_of": latest}


def store_summary(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    scan_id = latest_scan(con)
    row = con.execute("SELECT as_of, accounts, campaigns FROM scans WHERE scan_id = ?", [scan_id]).fetchone() \
        if scan_id else None
    return {"scan_id": scan_id, "as_of": row[0] if row else None, "accounts": row[1] if row else 0,
            "campaigns": row[2] if row else 0}


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else ""
