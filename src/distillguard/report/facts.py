"""The facts of a campaign report, each table with the SQL that reproduces it from the store.

A report accuses someone, so a reader must be able to check every number without trusting
distillguard's code: each section below is the result of exactly one SQL query over the
store's own tables (``exchanges``, ``verdicts``, ``campaigns``, ``signals``, ``indicators``,
``edges``, ``scans``, ``ingests``: store/database.py and scan.store_result), and the report prints that
query next to the numbers. Running it in the DuckDB CLI on the same store gives the same rows.

The campaign's scope is fixed by the scan: its members are the accounts the scan put in the
campaign (``verdicts``), and its exchanges are theirs inside the scan's window (``as_of``
minus the policy's lookback, up to ``as_of``). Exchanges ingested later with earlier
timestamps would change the counts; the report lists every ingested input with its sha256 so
that a reader can tell.

Only two things are computed outside SQL, and the report says so where they appear: the
hosting label of a subnet (the shipped public IP lists, enrich.py) and the picture of the
linkage graph (its layout).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import duckdb

from distillguard.ingest import enrich
from distillguard.errors import UserError
from distillguard.detect.linkage import EVIDENCE
from distillguard.store import has_table

#: rows kept in the long tables of a report (the queries say LIMIT; the JSON keeps the same)
TOP_SUBNETS = 25
TOP_ASNS = 25
TOP_USER_AGENTS = 15
TOP_PAYMENTS = 25
TOP_DOMAINS = 15
SAMPLE_PROMPTS = 10
GRAPH_EDGES = 2000
GRAPH_EDGES_PER_KIND = 250
INDICATOR_KEYS = 1000
#: prompts read per population for the capability mix: a deterministic sample (by md5 of the
#: exchange id), so the query costs the same on a campaign of 28 million exchanges
CAPABILITY_SAMPLE = 20_000


@dataclass(frozen=True)
class Scope:
    """What one report is about: a campaign of one scan, over that scan's window."""

    scan_id: str
    campaign_id: str
    start: datetime
    end: datetime


def lit(value: str) -> str:
    """A SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def _ts(value: datetime) -> str:
    return f"TIMESTAMPTZ {lit(value.astimezone(timezone.utc).isoformat())}"


def subnet_sql(ip: str) -> str:
    """DuckDB SQL for the /24 (IPv4) or /48 (IPv6) of an address column, as linkage keys it.

    IPv6 text is in compressed form (ingest normalises it), so the first three groups are
    recovered by expanding the ``::`` before taking them.
    """
    left = f"string_split(split_part({ip}, '::', 1), ':')"
    right = f"string_split(split_part({ip}, '::', 2), ':')"
    n_left = f"(CASE WHEN split_part({ip}, '::', 1) = '' THEN 0 ELSE len({left}) END)"
    n_right = f"(CASE WHEN NOT contains({ip}, '::') OR split_part({ip}, '::', 2) = '' THEN 0 ELSE len({right}) END)"
    groups = (f"(CASE WHEN NOT contains({ip}, '::') THEN string_split({ip}, ':') "
              f"ELSE list_concat(CASE WHEN {n_left} = 0 THEN [] ELSE {left} END, "
              f"list_transform(range(8 - {n_left} - {n_right}), x -> '0'), "
              f"CASE WHEN {n_right} = 0 THEN [] ELSE {right} END) END)")
    return (f"CASE WHEN contains({ip}, ':') THEN array_to_string({groups}[1:3], ':') || '::/48' "
            f"ELSE regexp_replace({ip}, '\\.[0-9]+$', '.0/24') END")


def _with(scope: Scope, *more: str) -> str:
    """The common table expressions every campaign query starts with."""
    ctes = [
        f"members AS (SELECT account_id FROM verdicts WHERE scan_id = {lit(scope.scan_id)} "
        f"AND campaign_id = {lit(scope.campaign_id)})",
        f"win AS (SELECT * FROM exchanges WHERE timestamp >= {_ts(scope.start)} AND timestamp < {_ts(scope.end)} "
        f"AND account_id IN (SELECT account_id FROM members))",
        *more,
    ]
    return "WITH " + ",\n     ".join(ctes) + "\n"


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat() if value.tzinfo else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else round(float(value), 6)
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def section(con: duckdb.DuckDBPyConnection, key: str, title: str, query: str, note: str = "") -> dict:
    """Run ``query`` and keep it with its rows: the unit every report table is made of."""
    cursor = con.execute(query)
    columns = [d[0] for d in cursor.description]
    rows = [[_jsonable(v) for v in row] for row in cursor.fetchall()]
    return {"key": key, "title": title, "query": query.strip(), "columns": columns, "rows": rows, "note": note}


# --- the scan and its inputs ------------------------------------------------------------------

def latest_scan(con: duckdb.DuckDBPyConnection) -> str:
    if not has_table(con, "scans"):
        raise UserError("the store has no scan to report on (run `distillguard scan --db ...` first)")
    row = con.execute("SELECT scan_id FROM scans ORDER BY as_of DESC, scanned_at DESC LIMIT 1").fetchone()
    if row is None:
        raise UserError("the store has no scan to report on (run `distillguard scan --db ...` first)")
    return row[0]


def scan_facts(con: duckdb.DuckDBPyConnection, scan_id: str) -> dict:
    """The scan a report rests on: when, over which window, with which policy and version."""
    row = con.execute("""SELECT scan_id, as_of, scanned_at, lookback_days, engine, policy_source, policy,
                                policy_sha256, distillguard_version, accounts, campaigns
                         FROM scans WHERE scan_id = ?""", [scan_id]).fetchone()
    if row is None:
        known = [r[0] for r in con.execute("SELECT scan_id FROM scans ORDER BY scan_id").fetchall()]
        raise UserError(f"no scan {scan_id!r} in the store; scans: {', '.join(known) or 'none'}")
    (scan_id, as_of, scanned_at, lookback, engine, source, policy, policy_sha, version, accounts, campaigns) = row
    return {
        "scan_id": scan_id,
        "as_of": _jsonable(as_of),
        "window_start": _jsonable(as_of - timedelta(seconds=int(lookback * 86400))),
        "scanned_at": _jsonable(scanned_at),
        "lookback_days": lookback,
        "engine": engine,
        "policy_source": source,
        "policy_sha256": policy_sha,
        "policy": json.loads(policy),
        "distillguard_version": version,
        "accounts": accounts,
        "campaigns": campaigns,
    }


def inputs_section(con: duckdb.DuckDBPyConnection, scan: dict) -> dict:
    """Every input ingested before the scan, with its sha256: what the numbers rest on."""
    query = f"""SELECT path, format, sha256, size_bytes, rows_in, rows_stored, rows_duplicate, rows_quarantined,
       finished_at
FROM ingests
WHERE finished_at <= {_ts(datetime.fromisoformat(scan['scanned_at']))}
ORDER BY started_at, ingest_id"""
    return section(con, "inputs", "Ingested inputs", query,
                   "Every file ingested into the store before the scan, with the sha256 of its bytes. "
                   "rows_in = rows_stored + rows_duplicate + rows_quarantined.")


def campaign_ids(con: duckdb.DuckDBPyConnection, scan_id: str) -> list[str]:
    return [r[0] for r in con.execute(
        "SELECT campaign_id FROM campaigns WHERE scan_id = ? ORDER BY score DESC, campaign_id", [scan_id]).fetchall()]


def scope_of(con: duckdb.DuckDBPyConnection, scan: dict, campaign_id: str) -> Scope:
    found = con.execute("SELECT count(*) FROM campaigns WHERE scan_id = ? AND campaign_id = ?",
                        [scan["scan_id"], campaign_id]).fetchone()[0]
    if not found:
        known = campaign_ids(con, scan["scan_id"])
        raise UserError(f"no campaign {campaign_id!r} in scan {scan['scan_id']}; "
                        f"campaigns: {', '.join(known) or 'none'}")
    return Scope(scan["scan_id"], campaign_id, datetime.fromisoformat(scan["window_start"]),
                 datetime.fromisoformat(scan["as_of"]))


# --- one campaign -----------------------------------------------------------------------------

def campaign_sections(con: duckdb.DuckDBPyConnection, scope: Scope) -> dict[str, dict]:
    """Every table of one campaign's report, keyed by section."""
    w = _with(scope)
    scan_id, campaign = lit(scope.scan_id), lit(scope.campaign_id)
    member_filter = f"scan_id = {scan_id} AND account_id IN (SELECT account_id FROM members)"
    out = [
        section(con, "summary", "Summary", w + """SELECT (SELECT count(*) FROM members) AS accounts,
       count(*) AS exchanges,
       coalesce(sum(input_tokens), 0) AS input_tokens,
       coalesce(sum(output_tokens), 0) AS output_tokens,
       min(timestamp) AS first_seen,
       max(timestamp) AS last_seen,
       count(DISTINCT client_ip) AS distinct_ips,
       count(DISTINCT conversation_id) AS conversations
FROM win"""),
        section(con, "confidence", "Score and its parts", f"""SELECT score, action, members, exchanges,
       CAST(detail->>'structure' AS DOUBLE) AS structure,
       CAST(detail->>'automation' AS DOUBLE) AS automation,
       CAST(detail->>'collective' AS DOUBLE) AS collective,
       CAST(detail->>'complementarity' AS DOUBLE) AS complementarity,
       CAST(detail->>'recruited' AS DOUBLE) AS recruited,
       CAST(detail->>'pivoted' AS DOUBLE) AS pivoted,
       CAST(detail->>'cells' AS BIGINT) AS cells,
       CAST(detail->>'tested' AS BIGINT) AS tested
FROM campaigns WHERE scan_id = {scan_id} AND campaign_id = {campaign}""",
                "The campaign score (0..1) maps to an action through the policy's campaign thresholds; "
                "the parts are the cluster-level measures it is made of (docs/signals.md). tested counts "
                "the members calibrated tests put at throttle or stronger (their reasons are in the "
                "verdicts): a campaign holding them scores at least that action's threshold, and its "
                "parts are those of the linked cells it took in (docs/detection.md, Campaigns of a "
                "scan). Null for scans stored before it was recorded."),
        section(con, "lineage", "Lineage across scans", f"""SELECT
       CAST(detail->>'first_scan' AS TIMESTAMPTZ) AS first_scan,
       CAST(detail->>'last_scan' AS TIMESTAMPTZ) AS last_scan,
       json_array_length(detail->'members_added') AS members_added,
       json_array_length(detail->'members_removed') AS members_removed,
       CAST(detail->'merged_from' AS VARCHAR[]) AS merged_from,
       detail->>'split_from' AS split_from
FROM campaigns WHERE scan_id = {scan_id} AND campaign_id = {campaign}""",
                "The campaign keeps its id across scans while it holds most of the members of the previous "
                "scan's campaign of that id (docs/detection.md, Campaign ids): first_scan is the scan that "
                "first found it, members added and removed count the change since the previous scan, "
                "merged_from lists previous campaigns that merged into it and split_from the previous "
                "campaign a new id holds the most members of. Null for scans stored before lineage existed."),
        section(con, "actions", "Actions taken", f"""SELECT action, count(*) AS accounts
FROM verdicts WHERE scan_id = {scan_id} AND campaign_id = {campaign}
GROUP BY action ORDER BY accounts DESC, action""",
                "Members only weakly tied to the campaign are monitored, not throttled (conservative policy)."),
        section(con, "timeline", "Timeline (UTC days)", _with(scope, f"""created AS (
       SELECT CAST(timezone('UTC', min(account_created_at)) AS DATE) AS day
       FROM exchanges WHERE account_id IN (SELECT account_id FROM members) GROUP BY account_id),
     daily AS (
       SELECT CAST(timezone('UTC', timestamp) AS DATE) AS day, count(*) AS exchanges,
              count(DISTINCT account_id) AS active_accounts
       FROM win GROUP BY 1),
     creations AS (SELECT day, count(*) AS accounts_created FROM created WHERE day IS NOT NULL GROUP BY day)""")
                + """SELECT coalesce(daily.day, creations.day) AS day,
       coalesce(exchanges, 0) AS exchanges,
       coalesce(active_accounts, 0) AS active_accounts,
       coalesce(accounts_created, 0) AS accounts_created
FROM daily FULL OUTER JOIN creations ON daily.day = creations.day
ORDER BY day"""),
        section(con, "subnets", "Subnets", w + f"""SELECT {subnet_sql('client_ip')} AS subnet,
       count(DISTINCT account_id) AS accounts,
       count(*) AS exchanges,
       count(DISTINCT client_ip) AS ips,
       count(*) OVER () AS subnets_in_all
FROM win WHERE client_ip IS NOT NULL
GROUP BY subnet ORDER BY accounts DESC, exchanges DESC, subnet LIMIT {TOP_SUBNETS}""",
                "/24 for IPv4, /48 for IPv6. The hosting label comes from the public IP lists shipped "
                "with distillguard (data/README.md), not from the query; unlisted means residential, "
                "mobile or a network no list covers."),
        section(con, "asns", "Autonomous systems", w + f"""SELECT client_asn AS asn, count(DISTINCT account_id) AS accounts,
       count(*) AS exchanges, count(DISTINCT client_ip) AS ips, count(*) OVER () AS asns_in_all
FROM win WHERE client_asn IS NOT NULL
GROUP BY client_asn ORDER BY accounts DESC, exchanges DESC, asn LIMIT {TOP_ASNS}""",
                "The client's autonomous system, as the logs carry it (client_asn; empty when they do not). "
                "The label comes from the public list of hosting ASNs shipped with distillguard "
                "(bad-asn-list), not from the query."),
        section(con, "user_agents", "User agents", w + f"""SELECT user_agent, count(DISTINCT account_id) AS accounts,
       count(*) AS exchanges, count(*) OVER () AS user_agents_in_all
FROM win WHERE user_agent IS NOT NULL
GROUP BY user_agent ORDER BY accounts DESC, exchanges DESC, user_agent LIMIT {TOP_USER_AGENTS}"""),
        section(con, "payments", "Shared payment fingerprints", w + f"""SELECT payment_fingerprint,
       count(DISTINCT account_id) AS accounts, count(*) AS exchanges, count(*) OVER () AS shared_in_all
FROM win WHERE payment_fingerprint IS NOT NULL
GROUP BY payment_fingerprint HAVING count(DISTINCT account_id) >= 2
ORDER BY accounts DESC, exchanges DESC, payment_fingerprint LIMIT {TOP_PAYMENTS}""",
                "Payment methods on file used by two or more members."),
        section(con, "email_domains", "E-mail domains", w + f"""SELECT email_domain, count(DISTINCT account_id) AS accounts,
       count(*) OVER () AS domains_in_all
FROM win WHERE email_domain IS NOT NULL
GROUP BY email_domain ORDER BY accounts DESC, email_domain LIMIT {TOP_DOMAINS}"""),
        section(con, "linkage", "Linkage evidence between members", _with(
            scope, f"""e AS (SELECT * FROM edges WHERE scan_id = {scan_id}
                AND a IN (SELECT account_id FROM members) AND b IN (SELECT account_id FROM members))""")
                + "\nUNION ALL\n".join(
                    f"SELECT {lit(kind)} AS kind, {lit(ev.meaning)} AS evidence, "
                    f"count(*) FILTER (WHERE shared_{kind} > 0) AS account_pairs, "
                    f"coalesce(sum(shared_{kind}), 0) AS shared_keys FROM e"
                    for kind, ev in EVIDENCE.items()),
                "Pairs of members the scan linked, by the kind of evidence they share "
                "(one pair can share several kinds). The graph picture draws the strongest pairs."),
        section(con, "exclusive_indicators", "Indicators held only by this campaign", f"""SELECT kind, count(*) AS keys,
       max(holders) AS most_holders
FROM indicators WHERE scan_id = {scan_id} AND campaign_id = {campaign}
GROUP BY kind ORDER BY keys DESC, kind""",
                "Keys (addresses, subnets, user agents, payment methods, prompt framing) every holder of "
                "which is a stopped member of this campaign: what the gateway matches new accounts on, "
                "and what the STIX export shares."),
        section(con, "indicator_keys", "The exclusive indicators", f"""SELECT kind, key, sha256(key) AS key_sha256, holders
FROM indicators WHERE scan_id = {scan_id} AND campaign_id = {campaign}
QUALIFY row_number() OVER (PARTITION BY kind ORDER BY holders DESC, key) <= {INDICATOR_KEYS}
ORDER BY kind, holders DESC, key""",
                f"At most {INDICATOR_KEYS:,} keys of each kind, the most held first. Scaffold keys are "
                "four-word n-grams of the normalised opening and closing words of prompts, system-prompt "
                "keys the normalised system prompt (docs/signals.md); key_sha256 is the sha256 of the key's "
                "UTF-8 text, what the STIX export shares for them."),
        section(con, "capabilities", "Capability targeting", _with(
            scope,
            # the sample is chosen on the ids alone, then only its prompts are read
            f"""campaign_ids AS (SELECT exchange_id FROM win ORDER BY md5(exchange_id) LIMIT {CAPABILITY_SAMPLE})""",
            "campaign AS (SELECT lower(prompt) AS low FROM win SEMI JOIN campaign_ids USING (exchange_id))",
            f"""allowed AS (SELECT * FROM exchanges
       WHERE timestamp >= {_ts(scope.start)} AND timestamp < {_ts(scope.end)}
         AND account_id IN (SELECT account_id FROM verdicts WHERE scan_id = {scan_id}
                            AND action = 'allow' AND campaign_id IS NULL))""",
            f"""organic_ids AS (SELECT exchange_id FROM allowed ORDER BY md5(exchange_id) LIMIT {CAPABILITY_SAMPLE})""",
            "organic AS (SELECT lower(prompt) AS low FROM allowed SEMI JOIN organic_ids USING (exchange_id))",
            "flags AS (" + "\n       UNION ALL ".join(
                f"SELECT {lit(pop)} AS population, " + ", ".join(
                    f"({test})::DOUBLE AS {area}" for area, test in enrich.area_sql("low").items())
                + f" FROM {pop}" for pop in ("campaign", "organic")) + ")")
                + "SELECT population, count(*) AS prompts, " + ", ".join(
                    f"avg({area}) AS {area}" for area in enrich.CAPABILITIES)
                + "\nFROM flags GROUP BY population ORDER BY population",
                f"Share of prompts in each capability area (a prompt can fall in several), for the campaign "
                f"and for the accounts the scan allowed in the same window; at most {CAPABILITY_SAMPLE:,} "
                f"prompts of each, chosen by md5 of the exchange id."),
        section(con, "signals", "Signals among members", f"""WITH members AS (SELECT account_id FROM verdicts
       WHERE scan_id = {scan_id} AND campaign_id = {campaign})
SELECT signal, any_value(threshold) AS threshold, count(*) FILTER (WHERE fired) AS accounts_fired,
       count(*) AS accounts, median(value) AS median_value
FROM signals WHERE {member_filter}
GROUP BY signal ORDER BY accounts_fired DESC, signal"""),
        section(con, "sample_prompts", "Sample prompts", w + f"""SELECT prompt, count(DISTINCT account_id) AS accounts,
       count(*) AS exchanges
FROM win GROUP BY prompt ORDER BY accounts DESC, exchanges DESC, md5(prompt) LIMIT {SAMPLE_PROMPTS}""",
                "The prompts sent by the most members. Prompt text is the sender's; shown as text only."),
        section(con, "members", "Members", f"""SELECT account_id, action, score,
       list_filter(reasons, r -> starts_with(r, 'member evidence='))[1] AS tie,
       array_to_string(list_filter(reasons, r -> NOT starts_with(r, 'campaign ')
                                             AND NOT starts_with(r, 'member evidence=')), ' | ') AS own_reasons
FROM verdicts WHERE scan_id = {scan_id} AND campaign_id = {campaign}
ORDER BY score DESC, account_id""",
                "Each member's verdict: how strongly it is tied to the campaign, the calibrated tests that "
                "found it, the collective acts it took part in and its own signals that fired (the campaign's "
                "reason, the same for every member, is left out here; the verdicts table has them all)."),
        section(con, "graph", "Linkage graph", _with(scope, f"""e AS (SELECT * FROM edges WHERE scan_id = {scan_id}
                AND a IN (SELECT account_id FROM members) AND b IN (SELECT account_id FROM members))""")
                + "SELECT DISTINCT a, b, round(weight, 4) AS weight, " + ", ".join(f"shared_{k}" for k in EVIDENCE)
                + "\nFROM (" + "\n      UNION ALL ".join(
                    [f"(SELECT * FROM e ORDER BY weight DESC, a, b LIMIT {GRAPH_EDGES})"]
                    + [f"(SELECT * FROM e WHERE shared_{k} > 0 ORDER BY sim_{k} DESC, weight DESC, a, b "
                       f"LIMIT {GRAPH_EDGES_PER_KIND})" for k in EVIDENCE])
                + ")\nORDER BY weight DESC, a, b",
                f"The {GRAPH_EDGES:,} strongest edges between members, and for each kind of evidence the "
                f"{GRAPH_EDGES_PER_KIND:,} pairs that share the most of it (so that weaker links between "
                f"tightly knit cells show too); the layout is computed by distillguard (report/svg.py) "
                f"and only places the accounts."),
    ]
    return {s["key"]: s for s in out}


def subnet_labels(subnets: list[str]) -> dict[str, tuple[str, str | None]]:
    """subnet -> (hosting category or 'unlisted', provider), looked up by the subnet's first address."""
    firsts: dict[str, str] = {}
    for subnet in subnets:
        try:
            firsts[subnet] = str(ipaddress.ip_network(subnet, strict=False).network_address)
        except ValueError:
            continue
    table = enrich.ip_table(sorted(set(firsts.values())))
    by_ip = {ip: (cat, prov) for ip, cat, prov in zip(*(table.column(k).to_pylist()
                                                        for k in ("ip", "infra_category", "provider")))}
    out = {}
    for subnet in subnets:
        cat, prov = by_ip.get(firsts.get(subnet, ""), (None, None))
        out[subnet] = (cat or "unlisted", prov)
    return out


def asn_labels(asns: list[int]) -> dict[int, tuple[str, str | None]]:
    """asn -> ('hosting', entity) for the ASNs of the public hosting list, else ('not listed', None)."""
    from distillguard.data import load_asns

    listed = {e.asn: e.entity for e in load_asns()}
    return {a: ("hosting", listed[a]) if a in listed else ("not listed", None) for a in asns}

