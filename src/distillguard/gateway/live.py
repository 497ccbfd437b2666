"""Live routing: per request, a p-value for "this session is organic", and the fallback model
for a session whose p-value falls below its share of the policy's budget (``live``).

What is scored is only what the gateway sees as it serves (``STATISTICS``, each larger = less
like organic traffic): the request's shape (``max_tokens``, ``tool_count``, ``prompt_chars``),
the session's recent pattern over the account's last ``live.window`` requests
(``rate_per_hour``, ``regularity``, ``template_repeat``), the latest scan's verdicts of the
account and of its campaign, and imported indicators (``distillguard intel import``) the
request matches.

The null is organic traffic as the store holds it: ``calibrate`` replays the exchanges of the
accounts the latest scan allowed through the same session code, and keeps each statistic's
values per look bucket (a session's 1st request, 2nd-3rd, 4th-7th, ... 64th on), so that a
look is compared with looks at the same depth of organic sessions. A statistic's p-value is the
conformal tail share ``(1 + #{reference >= value}) / (1 + n)``. A verdict's p-value is the
scan's error budget of its action (``statistics.budget``: expected false positives per organic
entity); an indicator's is ``(1 + organic accounts that matched it) / (1 + organic accounts)``.
The parts are combined by Bonferroni (``m`` times the smallest of the ``m`` p-values defined at
that look, ``parts_at``): valid under any dependence between them, which these share (a
scripted session is fast, regular and repetitive at once).

Every request is scored, but a session is decided only at checkpoints on a geometric schedule:
its 1st, 2nd, 4th, 8th, 16th, ... request (``checkpoint``). The j-th checkpoint (j = 0, 1, ...,
at look ``2 ** j``) may spend ``budget / ((j + 1) (j + 2))``; these shares sum to the budget over
any number of looks, so (by the union bound over the checkpoints) the chance that an organic
session ever crosses stays within ``live.session_budget``, however long it runs. Spending per
checkpoint rather than per request keeps a long session decidable: its 64th request may spend
``budget / 56`` where one share per request left it ``budget / 4160``. Between checkpoints a
session keeps its state. A session that crosses stays routed until it ends
(``live.session_gap_seconds`` of quiet).

Live routing only adds: it routes an account whose standing action is allow or monitor, never
one under an operator's override or in an allowlisted organisation; stronger actions stay as
the enforcer decided them.

A recognised reseller's key (gateway/resellers.py, from the scan whose verdicts the gateway
enforces) fronts many end users: its requests that name an end user form that end user's
sessions (the entity ``<account>::<end user>`` the scan judges), so that end users' requests
interleaved on one key neither look like one fast, irregular session nor route each other.
"""

from __future__ import annotations

import bisect
import hashlib
import ipaddress
import json
import logging
import math
import os
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import pyarrow as pa

from distillguard.detect.policy import ErrorBudget, LiveRouting, Policy
from distillguard.errors import UserError
from distillguard.gateway.enforce import Decision, ScanOutputs
from distillguard.gateway.resellers import ENTITY_SEPARATOR
from distillguard.intel import indicators as intel
from distillguard.store import resellers as stored_resellers
from distillguard.store.verdicts import SEVERITY

log = logging.getLogger("distillguard.gateway")

REFERENCE_VERSION = 1


@dataclass(frozen=True)
class Statistic:
    """One online statistic: larger values are less like organic traffic; defined from look ``first_look``."""

    name: str
    about: str
    first_look: int = 1


STATISTICS: tuple[Statistic, ...] = (
    Statistic("max_tokens", "max_tokens requested (0 when unset): distillation asks for long answers"),
    Statistic("tool_count", "tool definitions offered: agentic capability harvesting"),
    Statistic("prompt_chars", "characters of the request's last user message"),
    Statistic("rate_per_hour", "requests of the session's window per hour of its span", 2),
    Statistic("regularity", "1 / (1 + coefficient of variation of the window's gaps): 1 for a metronome", 3),
    Statistic("template_repeat", "share of the window's earlier requests with this one's template (system "
              "prompt fingerprint and first words)", 2),
)


def parts_at(look: int) -> int:
    """How many p-values a session's ``look``-th request combines: the statistics defined by then,
    the verdicts and the indicators. It depends on the look alone, so Bonferroni over it stays valid."""
    return sum(1 for s in STATISTICS if s.first_look <= look) + 2
#: look buckets: 1, 2-3, 4-7, ..., 64 and later
BUCKETS = 7


def bucket(look: int) -> int:
    """The reference bucket of a session's ``look``-th request."""
    return min(look.bit_length() - 1, BUCKETS - 1)


def checkpoint(look: int) -> int | None:
    """The index j of the checkpoint a session's ``look``-th request is (look ``2 ** j``), or None
    for a request between checkpoints, which decides nothing."""
    return look.bit_length() - 1 if look > 0 and look & (look - 1) == 0 else None


def share(budget: float, j: int) -> float:
    """What the j-th checkpoint may spend: ``budget / ((j + 1) (j + 2))``, which sums to ``budget``
    over j = 0, 1, ... (the union bound's total)."""
    return budget / ((j + 1) * (j + 2))


def threshold(budget: float, look: int) -> float:
    """The p-value at or below which the ``look``-th request of a session crosses: its
    checkpoint's share of ``budget``, 0 between checkpoints (a p-value is never 0, so none crosses)."""
    j = checkpoint(look)
    return 0.0 if j is None else share(budget, j)


def combine(p_values: list[float] | tuple[float, ...], parts: int) -> float:
    """Bonferroni: ``parts`` times the smallest p-value, at most 1."""
    return min(1.0, parts * min(p_values, default=1.0))


def verdict_levels(budget: ErrorBudget) -> dict[str, float]:
    """The p-value a scan's action stands for: its share of the error budget per organic entity."""
    return {"allow": 1.0, "monitor": budget.monitor, "throttle": budget.throttle, "fallback": budget.throttle,
            "verify": budget.throttle, "block": budget.block}


def template(system_prompt: str | None, prompt: str | None) -> str:
    """A request's template: its system prompt's fingerprint and its first four words, lower case."""
    fingerprint = hashlib.md5((system_prompt or "").encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return fingerprint + "|" + " ".join((prompt or "")[:100].lower().split()[:4])


class Session:
    """One account's current session: its look count and a bounded window of recent requests."""

    __slots__ = ("last", "looks", "routed", "templates", "times")

    def __init__(self, window: int) -> None:
        self.looks = 0
        self.times: deque[float] = deque(maxlen=window)
        self.templates: deque[str] = deque(maxlen=window)
        self.routed = False
        self.last = -math.inf

    def observe(self, at: float, max_tokens: int | None, tool_count: int | None, prompt_chars: int,
                shape: str) -> tuple[float | None, ...]:
        """Add one request (``at`` in epoch seconds); the values of STATISTICS at this look
        (None where not defined yet)."""
        repeat = None
        if self.templates:
            repeat = sum(1 for t in self.templates if t == shape) / len(self.templates)
        self.looks += 1
        self.times.append(at)
        self.templates.append(shape)
        self.last = at
        rate = regularity = None
        n = len(self.times)
        if n >= 2:
            span = max(self.times[-1] - self.times[0], 1.0)
            rate = (n - 1) / span * 3600.0
        if n >= 3:
            gaps = [b - a for a, b in zip(self.times, list(self.times)[1:])]
            mean = sum(gaps) / len(gaps)
            if mean > 0:
                sd = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps))
                regularity = 1.0 / (1.0 + sd / mean)
            else:
                regularity = 1.0
        return (float(max_tokens or 0), float(tool_count or 0), float(prompt_chars), rate, regularity, repeat)


class Sessions:
    """The sessions of every account seen, split by ``gap_seconds`` of quiet."""

    def __init__(self, rules: LiveRouting) -> None:
        self.window, self.gap = rules.window, rules.session_gap_seconds
        self.by_account: dict[str, Session] = {}

    def get(self, account: str, at: float) -> Session:
        s = self.by_account.get(account)
        if s is None or at - s.last > self.gap:
            s = self.by_account[account] = Session(self.window)
        return s

    def forget_idle(self, now: float) -> int:
        """Drop the sessions that ended (quiet for longer than the gap); how many."""
        idle = [a for a, s in self.by_account.items() if now - s.last > self.gap]
        for a in idle:
            del self.by_account[a]
        return len(idle)


# --- the reference of organic traffic -------------------------------------------------------------

@dataclass
class Tail:
    """One statistic's reference values in one look bucket, as the distinct values and how many
    reference values are at least each: the tail share of any value is one bisection."""

    values: list[float] = field(default_factory=list)
    at_least: list[int] = field(default_factory=list)
    n: int = 0

    @classmethod
    def of(cls, sample: list[float]) -> Tail:
        """The Tail of ``sample``, each value rounded up to three significant digits: at most a
        few thousand distinct values, and never fewer reference values at or above any value
        than the exact sample has (so p-values only grow: still valid)."""
        sample = sorted(_round_up(v) for v in sample)
        values, at_least = [], []
        for i, v in enumerate(sample):
            if not values or v != values[-1]:
                values.append(v)
                at_least.append(len(sample) - i)
        return cls(values, at_least, len(sample))

    def p_value(self, value: float) -> float:
        """``(1 + #{reference >= value}) / (1 + n)``: a valid p-value for a value exchangeable with the reference."""
        i = bisect.bisect_left(self.values, value)
        return (1 + (self.at_least[i] if i < len(self.values) else 0)) / (1 + self.n)


def _round_up(value: float) -> float:
    """``value`` rounded up to three significant digits (values here are >= 0)."""
    if value < 1e-6 or not math.isfinite(value):  # kept exact: no statistic is that fine
        return value
    step = 10.0 ** (math.floor(math.log10(value)) - 2)
    up = float(f"{math.ceil(value / step) * step:.3g}")
    return up if up >= value else up + step


@dataclass
class Reference:
    """Organic traffic as the live statistics see it: per statistic and look bucket a Tail, and
    how many organic accounts matched each imported indicator."""

    tails: dict[str, list[Tail]]
    accounts: int
    indicator_matches: dict[str, int]
    as_of: str | None = None
    sessions: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"version": REFERENCE_VERSION, "as_of": self.as_of, "sessions": self.sessions,
                "accounts": self.accounts, "indicator_matches": self.indicator_matches,
                "statistics": {name: [{"values": t.values, "at_least": t.at_least, "n": t.n} for t in tails]
                               for name, tails in self.tails.items()}}

    @classmethod
    def from_json(cls, data: Any, where: str) -> Reference:
        """The reference in ``data`` (read from ``where``); UserError naming the field when it is not one."""
        try:
            if data.get("version") != REFERENCE_VERSION:
                raise ValueError(f"version {data.get('version')!r} (this gateway reads {REFERENCE_VERSION})")
            tails = {}
            for s in STATISTICS:
                rows = data["statistics"][s.name]
                if len(rows) != BUCKETS:
                    raise ValueError(f"statistics.{s.name}: {len(rows)} buckets, not {BUCKETS}")
                tails[s.name] = [Tail([float(v) for v in r["values"]], [int(c) for c in r["at_least"]], int(r["n"]))
                                 for r in rows]
                for t in tails[s.name]:
                    if len(t.values) != len(t.at_least) or t.values != sorted(t.values):
                        raise ValueError(f"statistics.{s.name}: values unsorted or not one count each")
            matches = {str(k): int(v) for k, v in data["indicator_matches"].items()}
            return cls(tails, int(data["accounts"]), matches, data.get("as_of"), int(data.get("sessions", 0)))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UserError(f"{where}: not a live routing reference (distillguard gateway calibrate): "
                            f"{type(exc).__name__}: {exc}") from None

    @classmethod
    def read(cls, path: str | Path) -> Reference:
        try:
            data = json.loads(Path(path).read_bytes())
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: cannot read the live routing reference ({exc})") from None
        return cls.from_json(data, str(path))

    def write(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json()))
        os.replace(tmp, path)  # a gateway that re-reads it never sees half a file


def calibrate(con: duckdb.DuckDBPyConnection, rules: LiveRouting, allowed: set[str] | None = None,
              as_of: datetime | None = None, indicator_table: pa.Table | None = None,
              reseller_keys: frozenset[str] | None = None) -> Reference:
    """The reference of organic traffic: the exchanges before ``as_of`` of the ``allowed``
    accounts (those the latest scan allowed; None: every account, which only widens the tails),
    replayed in time order through the same sessions the gateway keeps: a reseller key's
    exchanges that name an end user as that end user's (``reseller_keys``; None: those of the
    store's scan as of ``as_of``), whose entity id is what ``allowed`` holds for it."""
    keys = _reseller_keys(con, as_of) if reseller_keys is None else reseller_keys
    who, source = "account_id", "exchanges"
    if keys:
        con.register("_live_resellers", pa.table({"key": pa.array(sorted(keys), pa.string())}))
        relayed = ("coalesce(end_user, '') <> '' AND (api_key_id IN (SELECT \"key\" FROM _live_resellers) "
                   "OR account_id IN (SELECT \"key\" FROM _live_resellers))")
        who = "who"
        source = (f"(SELECT *, CASE WHEN {relayed} THEN account_id || '{ENTITY_SEPARATOR}' || end_user "
                  "ELSE account_id END AS who FROM exchanges) AS relayed")
    where, params = [], []
    if as_of is not None:
        where.append('"timestamp" < ?')
        params.append(as_of)
    if allowed is not None:
        con.register("_live_allowed", pa.table({"account_id": pa.array(sorted(allowed), pa.string())}))
        where.append(f"{who} IN (SELECT account_id FROM _live_allowed)")
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    try:
        cursor = con.execute(
            f'SELECT {who}, epoch("timestamp"), max_tokens, tool_count, coalesce(length(prompt), 0), '
            f'system_prompt, left(prompt, 100) FROM {source} {clause} ORDER BY {who}, "timestamp"', params)
        samples: dict[str, list[list[float]]] = {s.name: [[] for _ in range(BUCKETS)] for s in STATISTICS}
        sessions = Sessions(rules)
        count = 0
        while rows := cursor.fetchmany(50_000):
            for account, at, max_tokens, tools, chars, system, prompt in rows:
                session = sessions.get(account, at)
                if session.looks == 0:
                    count += 1
                values = session.observe(at, max_tokens, tools, chars, template(system, prompt))
                b = bucket(session.looks)
                for s, v in zip(STATISTICS, values):
                    if v is not None:
                        samples[s.name][b].append(v)
        accounts, matches = _indicator_matches(con, source, who, clause, params, indicator_table, as_of)
    finally:
        if allowed is not None:
            con.unregister("_live_allowed")
        if keys:
            con.unregister("_live_resellers")
    tails = {name: [Tail.of(b) for b in buckets] for name, buckets in samples.items()}
    return Reference(tails, accounts, matches, as_of.isoformat() if as_of else None, count)


def _reseller_keys(con: duckdb.DuckDBPyConnection, as_of: datetime | None) -> frozenset[str]:
    """The reseller keys of the store's scan as of ``as_of`` (the latest without it); none where
    the store holds no such scan (verdicts of ``scan --input``, or no store tables at all)."""
    found = stored_resellers.latest(con, as_of)
    return frozenset(found[1].column("key").to_pylist()) if found is not None else frozenset()


def _indicator_matches(con: duckdb.DuckDBPyConnection, source: str, who: str, clause: str, params: list,
                       table: pa.Table | None, as_of: datetime | None) -> tuple[int, dict[str, int]]:
    """How many reference accounts (or end users of resellers) there are, and how many of them
    matched each indicator."""
    accounts = con.execute(f"SELECT count(DISTINCT {who}) FROM {source} {clause}", params).fetchone()[0]
    index = Indicators(table if table is not None else intel.SCHEMA.empty_table())
    if not index.size:
        return accounts, {}
    when = as_of or datetime.now(UTC)
    matched: dict[str, set[str]] = {i: set() for i in index.ids}
    cursor = con.execute(f"SELECT DISTINCT {who}, client_ip, client_asn, user_agent, email_domain, "
                         f"payment_fingerprint FROM {source} {clause}", params)
    while rows := cursor.fetchmany(50_000):
        for account, ip, asn, ua, domain, card in rows:
            for i in index.match(ip, asn, ua, domain, card, when, valid_only=False):
                matched[i].add(account)
    return accounts, {i: len(a) for i, a in matched.items()}


# --- imported indicators ------------------------------------------------------------------------

class Indicators:
    """Imported indicators (intel.indicators.SCHEMA) as lookups by what a request carries."""

    _COLUMN: ClassVar[dict[str, str]] = {"autonomous-system": "asn", "user-agent": "user_agent", "email-domain": "email_domain",
               "payment-fingerprint": "payment"}

    def __init__(self, table: pa.Table) -> None:
        self.exact: dict[str, dict[str, list[str]]] = {c: {} for c in ("ip", *self._COLUMN.values())}
        self.ranges: dict[tuple[int, int], dict[str, list[str]]] = {}
        self.valid: dict[str, tuple[datetime | None, datetime | None]] = {}
        for r in table.select(["indicator_id", "type", "value", "valid_from", "valid_until"]).to_pylist():
            kind, value, i = r["type"], r["value"], r["indicator_id"]
            if kind == "network":
                if "/" in value:
                    net = ipaddress.ip_network(value, strict=False)
                    self.ranges.setdefault((net.version, net.prefixlen), {}).setdefault(str(net), []).append(i)
                else:
                    self.exact["ip"].setdefault(value, []).append(i)
            elif kind in self._COLUMN:
                self.exact[self._COLUMN[kind]].setdefault(value, []).append(i)
            else:
                continue  # e-mail addresses: kept by intel import, never matched (the store holds domains)
            self.valid[i] = (r["valid_from"], r["valid_until"])
        self.ids = list(self.valid)
        self.size = len(self.ids)

    def match(self, ip: str | None, asn: int | None, user_agent: str | None, email_domain: str | None,
              payment: str | None, at: datetime, valid_only: bool = True) -> list[str]:
        """The ids of the indicators the request's values match (valid at ``at`` unless not ``valid_only``)."""
        if not self.size:
            return []
        found: list[str] = []
        e = self.exact
        for table, value in ((e["ip"], ip), (e["asn"], None if asn is None else str(asn)),
                             (e["user_agent"], user_agent), (e["email_domain"], email_domain and email_domain.lower()),
                             (e["payment"], payment)):
            if value is not None and value in table:
                found.extend(table[value])
        if ip and self.ranges:
            parsed = _address(ip)
            if parsed is not None:
                for (version, prefix), nets in self.ranges.items():
                    if parsed.version == version:
                        found.extend(nets.get(_network(parsed, prefix), ()))
        if valid_only:
            found = [i for i in found if (self.valid[i][0] is None or self.valid[i][0] <= at)
                     and (self.valid[i][1] is None or at < self.valid[i][1])]
        return found


@lru_cache(maxsize=1 << 16)
def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(ip)
    except ValueError:
        return None


@lru_cache(maxsize=1 << 16)
def _network(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, prefix: int) -> str:
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


# --- the scorer -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Look:
    """One request's score: its combined p-value, the look's threshold (0 between checkpoints),
    whether the session is routed, and, at the look where it crossed, the parts."""

    p_value: float
    threshold: float
    look: int
    parts: dict[str, float]
    crossed: bool


class Scorer:
    """Scores requests against a Reference; holds the sessions and the imported indicators."""

    def __init__(self, rules: LiveRouting, budget: ErrorBudget, reference: Reference,
                 indicators: Indicators | None = None) -> None:
        self.rules = rules
        self.levels = verdict_levels(budget)
        self.reference = reference
        self.indicators = indicators or Indicators(intel.SCHEMA.empty_table())
        self.sessions = Sessions(rules)
        # per statistic, per bucket: the Tail, or None where the bucket is too thin to count
        self._tails = [[t if t.n >= rules.min_reference else None for t in reference.tails[s.name]]
                       for s in STATISTICS]
        self._parts = [0, *(parts_at(k) for k in range(1, 4))]

    def look(self, account: str, at: datetime, max_tokens: int | None, tool_count: int | None,
             system_prompt: str | None, prompt: str | None, ip: str | None = None, asn: int | None = None,
             user_agent: str | None = None, email_domain: str | None = None, payment: str | None = None,
             verdict_p: float = 1.0) -> Look:
        """Add one request of ``account`` to its session and score it; the session crosses only
        at a checkpoint whose share its p-value is within."""
        t = at.timestamp()
        session = self.sessions.get(account, t)
        values = session.observe(t, max_tokens, tool_count, len(prompt) if prompt else 0,
                                 template(system_prompt, prompt))
        b = bucket(session.looks)
        p_stats = [tails[b].p_value(v) if v is not None and tails[b] is not None else 1.0
                   for tails, v in zip(self._tails, values)]
        p_indicator = 1.0
        matched = (self.indicators.match(ip, asn, user_agent, email_domain, payment, at)
                   if self.rules.indicators else ())
        if matched:
            counts = self.reference.indicator_matches
            known = [counts[i] for i in matched if i in counts]
            if known:
                p_indicator = (1 + min(known)) / (1 + self.reference.accounts)
        p = combine([*p_stats, verdict_p, p_indicator], self._parts[min(session.looks, 3)])
        cut = threshold(self.rules.session_budget, session.looks)
        crossed = session.routed or p <= cut
        if crossed and not session.routed:
            session.routed = True
            parts = dict(zip((s.name for s in STATISTICS), p_stats)) | {"verdicts": verdict_p,
                                                                          "indicators": p_indicator}
            return Look(p, cut, session.looks, parts, True)
        return Look(p, cut, session.looks, {}, crossed)


class LiveRouter:
    """The gateway's live routing: a Scorer (when a reference and a fallback model are there),
    what the latest scan says of each campaign, and the counters /metrics shows."""

    def __init__(self, policy: Policy, reference_path: str | None, fallback_model: str | None,
                 metrics: Any = None) -> None:
        self.policy = policy
        self.path = Path(reference_path) if reference_path else None
        self.fallback_model = fallback_model
        self.scorer: Scorer | None = None
        self.reference: Reference | None = None
        self.indicators = Indicators(intel.SCHEMA.empty_table())
        self.campaign_action: dict[str, str] = {}
        self.looks = self.routed = self.sessions_routed = 0
        self._stamp: tuple | None = None
        self._verdicts_seen: object = None
        self._indicators_read_at = self._forgot_at = -math.inf
        self.allowlist = frozenset(policy.allowlist_organizations)
        if metrics is not None:
            metrics.counter("distillguard_live_looks_total", "Requests scored by live routing.", lambda: self.looks)
            metrics.counter("distillguard_live_routed_total", "Requests live routing sent to the fallback model.",
                            lambda: self.routed)
            metrics.counter("distillguard_live_sessions_routed_total", "Sessions whose p-value crossed their "
                            "threshold (served by the fallback model until they end).", lambda: self.sessions_routed)
        if self.path is not None and not fallback_model:
            log.warning("live routing: no fallback model (--fallback-model): nothing will be routed")

    def set_policy(self, policy: Policy) -> None:
        self.policy = policy
        self.allowlist = frozenset(policy.allowlist_organizations)
        self._stamp = None  # rebuild the scorer with the new rules

    def refresh(self, db: str | None, scan: ScanOutputs, indicators_every_seconds: float = 30.0) -> None:
        """Re-read what changed: the reference file, the scan's campaigns, the store's indicators (every ``indicators_every_seconds``). Runs off the event loop; each swap
        is one assignment."""
        if scan.verdicts is not self._verdicts_seen:
            actions: dict[str, str] = {}
            for d in scan.verdicts.values():
                if d.campaign_id and SEVERITY[d.action] > SEVERITY.get(actions.get(d.campaign_id, "allow"), 0):
                    actions[d.campaign_id] = d.action
            self.campaign_action, self._verdicts_seen = actions, scan.verdicts
        now = time.monotonic()
        changed = False
        if self.path is None or not self.policy.live.enabled:
            # nothing is scored: the store's indicators (a DuckDB open, ~10 ms of the gateway's CPU)
            # are read once live routing is on
            self.scorer = None
            return
        if db and now - self._indicators_read_at >= indicators_every_seconds:
            self._indicators_read_at = now
            table = _stored_indicators(db)
            if table is not None:
                self.indicators, changed = Indicators(table), True
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if stamp is None:
            if self._stamp is not None or self.scorer is None:
                log.warning("live routing: no reference at %s yet (distillguard gateway calibrate): nothing is "
                            "routed", self.path)
            self._stamp, self.scorer = None, None
            return
        if stamp != self._stamp:
            try:
                self.reference = Reference.read(self.path)
            except UserError as exc:
                log.error("live routing: %s; keeping the reference already loaded", exc)
                self._stamp = stamp
                return
            self._stamp = stamp
            self.scorer = Scorer(self.policy.live, self.policy.statistics.budget, self.reference, self.indicators)
            unknown = sum(1 for i in self.indicators.ids if i not in self.reference.indicator_matches)
            log.info("live routing: reference of %d organic sessions (as of %s) loaded%s", self.reference.sessions,
                     self.reference.as_of, f"; {unknown} imported indicators it has not counted are not matched "
                     "until the next calibrate" if unknown else "")
        elif changed and self.scorer is not None:
            self.scorer.indicators = self.indicators
        if self.scorer is not None and now - self._forgot_at >= 60.0:  # a pass over every open session
            self._forgot_at = now
            self.scorer.sessions.forget_idle(time.time())

    def route(self, decision: Decision, record: Any, client: Any, facts: Any, at: datetime,
              entity: str | None = None) -> Decision:
        """``decision``, or the fallback when this request's session crosses its threshold. The
        session is ``entity``'s: the one the gateway decided the request as (``<account>::<end
        user>`` for a recognised reseller's request naming an end user, gateway/resellers.py);
        None: the account's."""
        scorer = self.scorer
        if (scorer is None or not self.fallback_model or decision.action not in ("allow", "monitor")
                or decision.source == "override" or record.organization_id in self.allowlist):
            return decision
        self.looks += 1
        levels = scorer.levels
        verdict_p = levels[decision.action] if decision.source in ("verdict", "inherited") else 1.0
        if decision.campaign_id and decision.campaign_id in self.campaign_action:
            verdict_p = min(verdict_p, levels[self.campaign_action[decision.campaign_id]])
        who = entity or record.account_id
        seen = scorer.look(who, at, facts.max_tokens, facts.tool_count, facts.system_prompt,
                           facts.prompt, client.ip, client.asn, client.user_agent, record.email_domain,
                           record.payment_fingerprint, verdict_p)
        if not seen.crossed:
            return decision
        self.routed += 1
        if seen.parts:
            self.sessions_routed += 1
            strongest = min(seen.parts, key=seen.parts.get)
            log.warning("live: %s routed to the fallback for the rest of its session (look %d: p %.3g <= %.3g; "
                        "strongest part %s p %.3g)", who, seen.look, seen.p_value, seen.threshold,
                        strongest, seen.parts[strongest])
        why = f"live routing: session p-value crossed its threshold at look {seen.look}"
        return Decision("fallback", "live", (*decision.reasons, why), decision.campaign_id)


def _stored_indicators(db: str) -> pa.Table | None:
    """The store's imported indicators, or None when the store cannot be read now."""
    from distillguard.gateway.journal import STORE_LOCK

    if not Path(db).exists():
        return intel.SCHEMA.empty_table()
    try:
        with STORE_LOCK, duckdb.connect(db, read_only=True) as con:
            con.execute("SET TimeZone='UTC'")
            return intel.load(con)
    except duckdb.Error as exc:  # a busy store: keep the indicators already loaded
        log.warning("live routing: cannot read the store's indicators now (%s)", exc)
        return None
