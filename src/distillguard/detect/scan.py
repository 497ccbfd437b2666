"""The scan: exchanges -> features -> signals -> linkage -> campaigns -> verdicts.

Pure over an Ibis table of canonical exchanges and an explicit ``as_of`` clock; the engine
(DuckDB or Spark) is whatever backend the table is bound to (engine.py). Only the small
per-distinct-value lookups (enrich.py) and the graph clustering run in Python, on collected
tables.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import threading
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Sequence

import ibis
import ibis.expr.types as ir
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from distillguard.detect import campaigns as camp
from distillguard.detect import extract, features, inherit, lineage, linkage, signals
from distillguard.ingest import enrich
from distillguard.store import has_table
from distillguard.store.engine import digest64
from distillguard.ingest.enrich import CAPABILITIES
from distillguard.detect import evidence as detect_evidence
from distillguard.detect import history as detect_history
from distillguard.detect import verdicts as detect_verdicts
from distillguard.detect.policy import Policy
from distillguard.store.verdicts import SEVERITY, VERDICT_SCHEMA


@dataclass(frozen=True)
class Verdict:
    """One account's verdict: a row of VERDICT_SCHEMA (store.verdicts), field for column."""

    account_id: str
    # what to do with the account, and how likely it is part of a campaign (0..1, higher = more likely)
    action: str
    score: float
    campaign_id: str | None  # the campaign (or statistical group) it was judged with, if any
    reasons: list[str]  # what the action rests on: signal, value and threshold, in words
    as_of: datetime  # the scan's clock

    @staticmethod
    def table(verdicts: list[Verdict]) -> pa.Table:
        """``verdicts`` as a VERDICT_SCHEMA table, in their order."""
        return pa.table({f.name: [getattr(v, f.name) for v in verdicts] for f in fields(Verdict)},
                        schema=VERDICT_SCHEMA)


@dataclass
class ScanResult:
    as_of: datetime
    verdicts: pa.Table
    campaigns: list[camp.Campaign]
    signals: pa.Table
    edges: pa.Table
    features: pa.Table
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage
    ties: dict[str, camp.Tie] = field(default_factory=dict)  # clustered account -> what ties it to its cluster
    # keys only a throttled campaign's members hold, for new accounts to inherit its action (inherit.py)
    indicators: pa.Table = field(default_factory=inherit.INDICATOR_SCHEMA.empty_table)
    policy: Policy | None = None  # the policy the verdicts came from, kept with them (store_result)

    def summary(self) -> dict:
        actions = pc.value_counts(self.verdicts.column("action")).to_pylist() if self.verdicts.num_rows else []
        return {
            "as_of": self.as_of.isoformat(),
            "accounts": self.verdicts.num_rows,
            "actions": {d["values"]: d["counts"] for d in actions},
            "campaigns": [{"campaign_id": c.campaign_id, "members": c.members, "exchanges": c.exchanges,
                           "score": c.score, "action": c.action} for c in self.campaigns],
            "seconds": self.seconds,
        }


def _campaign_id(members: list[str]) -> str:
    """The id of a campaign with no predecessor in the previous scan (lineage.member_id)."""
    return lineage.member_id(members)


Lookup = Callable[[str, pa.Table], ir.Table]
log = logging.getLogger(__name__)


def scan(exchanges: ir.Table, as_of: datetime | None, policy: Policy,
         params: linkage.LinkageParams | None = None, lookup: Lookup | None = None,
         previous: pa.Table | None = None,
         previous_campaigns: list[lineage.Previous] | None = None,
         progress: Callable[[str], None] | None = None, intel: pa.Table | None = None,
         accounts: ir.Table | None = None) -> ScanResult:
    """Judge every account seen in ``exchanges`` before ``as_of`` (all data when None).

    ``previous``: an earlier scan's verdicts; its throttle+ actions are kept where the evidence
    stays (detect.history). ``previous_campaigns``: the campaigns of the scan before this one
    (:func:`previous_campaigns`), whose ids campaigns that continue them keep (lineage.trace);
    without them every campaign is new and named by its members.

    ``lookup(name, arrow_table)`` makes a small Python-side table usable next to ``exchanges``
    on its engine (engine.py); by default an Ibis memtable, which suits DuckDB.

    ``progress(stage)`` is called as each stage of STAGES ends, for a progress display; the
    outputs do not depend on it.

    ``intel``: imported indicators (intel.indicators.SCHEMA); an account that matches one gets
    it as a reason, and matches alone act up to ``policy.intel`` (:func:`with_outside_evidence`).

    ``accounts``: sign-up and payment events (schema.ACCOUNT_EVENT_COLUMNS) on the same engine; their
    accounts are judged from their sign-up on, before any exchange (features.account_events).
    """
    lookup = lookup or _memtable
    params = params or policy.linkage
    cparams = policy.clustering.model_copy(update={"min_members": policy.campaign.min_members})
    as_of = resolve_as_of(exchanges, as_of)
    clock = _Clock(progress)
    ex = features.with_seconds(features.window(exchanges, as_of, policy.lookback_days))
    events = None if accounts is None else features.account_events(accounts, as_of, policy.lookback_days)

    # each account's addresses, materialised: features and linkage both read them
    with features.ip_pairs(ex).cache() as pairs:
        labelled = _labelled(pairs, lookup)
        clock.lap("ip_labels")
        outside = None
        if intel is not None and intel.num_rows:
            addresses = labelled.select("client_ip").distinct().to_pyarrow().column(0).to_pylist()
            src = detect_evidence.Sources(ex, labelled, intel=lookup("dg_intel", extract.outside_rows(
                intel, addresses, as_of)))
            outside = ibis.union(*(detect_evidence.KINDS[k].extractor(src) for k in detect_evidence.OUTSIDE),
                                 distinct=True).to_pyarrow()
        feats, scaffold = _features(ex, labelled, as_of, params, lookup, clock, events,
                                    policy.statistics.cohort_min_exchanges if policy.statistics.enabled else None)
        signal_table, suspicion = signals.evaluate(feats, policy.signal_thresholds)
        suspicion_of = dict(zip(suspicion.column("account_id").to_pylist(),
                                suspicion.column("suspicion").to_pylist()))
        clock.lap("signals")

        # materialised once: the statistical tests and the linkage both read the keys
        cached_keys = keys = linkage.account_keys(ex, labelled, lookup("dg_scaffold", scaffold), params,
                                                  events).cache()
        pending = None
        if policy.statistics.enabled:
            # the statistical kinds are other kinds than the linkage's, so the two sets never overlap
            every_key = pa.concat_tables([keys.to_pyarrow(), detect_evidence.statistical_keys(ex, events).to_pyarrow()],
                                         promote_options="permissive")
            # the tests run in numpy beside the linkage and campaigns below, which run in the
            # engine; they meet at the verdicts
            pending = _Beside(detect_verdicts.evaluate, every_key, feats, policy, as_of)
            del every_key
        keys = linkage.weighted_keys(keys)
        # a name-free order of the accounts, for the ring lattice (linkage.ranked) and Leiden (campaigns.cluster)
        digest = features.activity_digest(feats)
        orgs = lookup("dg_orgs", feats.select(["account_id", "organization_id"]).append_column(
            "order_key", pa.array([digest[a] for a in feats.column("account_id").to_pylist()], pa.string())))
        # materialised once: the pair join reads it nine times
        with linkage.ranked(linkage.informative_keys(keys, feats.num_rows, params), orgs).cache() as held:
            cached_keys.release()
            clock.lap("linkage_keys")
            edges = linkage.pair_edges(held, params).to_pyarrow()
            edges = edges.sort_by([("a", "ascending"), ("b", "ascending")])
            clock.lap("linkage_pairs")
            membership = camp.cluster(edges, cparams, digest)
            clock.lap("clustering")
            # clusters smaller than a campaign cannot have members reaching one (campaigns.admitted)
            big = camp.campaign_sized(membership, cparams.min_members)
            members = lookup("dg_members", pa.table({"account_id": pa.array(list(big), pa.string()),
                                                     "cluster": pa.array(list(big.values()), pa.int64())}))
            # reach is only ever compared with min_members - 1: counting further costs a larger self-join
            evidence = camp.member_evidence(held, members, cparams.min_key_support,
                                            reach_cap=cparams.min_members - 1).to_pyarrow()
            candidates = common = None
            if policy.inherit.enabled and big:
                new = _new_accounts(feats, as_of, policy)
                candidates = inherit.candidate_keys(held, members, policy.inherit.min_holders, lookup("dg_new", new),
                                                    policy.inherit.framing_outside).to_pyarrow()
                common = inherit.common_domains(feats.select(["account_id", "email_domain"]), big,
                                                new["account_id"].to_pylist(), policy.inherit.framing_outside)
    tie = camp.ties(evidence)
    pivot_hours = dict(zip(feats.column("account_id").to_pylist(), feats.column("pivot_hours").to_pylist()))
    pivot = camp.pivoted_together(big, pivot_hours, cparams)
    tie = camp.with_coordination(tie, pivot.coordinated)
    created, first_seen, domain = (dict(zip(feats.column("account_id").to_pylist(), feats.column(k).to_pylist()))
                                   for k in ("created_at", "first_seen", "email_domain"))
    recruitment = camp.recruited_together(big, created, first_seen, domain, cparams)
    tie = camp.with_recruitment(tie, recruitment, cparams)
    # what earned a member the families and evidence added above, in its own words
    acted = {a: [pivot.reason(a, big[a], pivot_hours[a], cparams)] for a in pivot.coordinated}
    # recruited members credited by with_recruitment (not those whose creation a burst key
    # already counted, nor those tied by addresses alone)...
    credited = {a for a in recruitment.mates if camp.credited(tie.get(a, camp.NO_TIE))}
    for a in sorted(credited):
        acted.setdefault(a, []).append(recruitment.reason(a, cparams))
    clock.lap("member_evidence")
    members_in = camp.campaign_sized(camp.admitted(membership, tie, cparams), cparams.min_members)
    prompt_stats = _prompt_stats(ex, members_in, lookup)
    clock.lap("prompt_stats")
    clusters = camp.score_clusters(edges, members_in, tie, suspicion_of, prompt_stats, cparams,
                                   camp.acts(pivot, credited, big, set(members_in.values())))
    statistical = None
    if pending is not None:
        statistical = pending.result()
        clock.lap("statistics")
    tested = statistical.groups(policy.campaign.min_members) if statistical is not None else []
    campaigns = _with_lineage(_campaigns(clusters, edges, feats, policy, cparams, tested),
                              previous_campaigns or [], as_of)
    clock.lap("campaigns")
    verdicts = _verdicts(feats, signal_table, suspicion_of, tie, acted, campaigns, policy, as_of)
    if statistical is not None:
        verdicts = with_statistics(verdicts, statistical, policy)
    if previous is not None:
        evidenced = set(statistical.by_account(policy.campaign.min_members)) if statistical is not None else set()
        evidenced |= {a for a, act in zip(verdicts.column("account_id").to_pylist(),
                                          verdicts.column("action").to_pylist()) if act != "allow"}
        verdicts = detect_history.carried(verdicts, previous, evidenced, as_of, policy.lookback_days,
                                          statistical.capped if statistical is not None else frozenset())
    verdicts = _with_quiet_accounts(verdicts, exchanges, as_of, policy)
    if outside is not None:
        verdicts = with_outside_evidence(verdicts, outside, intel, policy, as_of)
    campaigns = _acted(campaigns, verdicts)
    clock.lap("verdicts")
    indicators = inherit.indicators(candidates, verdicts, policy.inherit.min_holders,
                                    policy.inherit.framing_share, common) if candidates is not None \
        else inherit.INDICATOR_SCHEMA.empty_table()
    clock.lap("indicators")
    return ScanResult(as_of, verdicts, campaigns, signal_table, edges, feats, clock.laps, tie, indicators, policy)


def account_table(exchanges: ir.Table, as_of: datetime | None, policy: Policy,
                  lookup: Lookup | None = None) -> tuple[pa.Table, pa.Table]:
    """The scan's per-account feature table (what the signals judge) and each account's
    (account_id, client_ip, subnet, n) addresses, without the linkage: for analyses that judge
    the features themselves, such as the benchmark's one-feature oracle (bench.oracle)."""
    lookup = lookup or _memtable
    as_of = resolve_as_of(exchanges, as_of)
    ex = features.with_seconds(features.window(exchanges, as_of, policy.lookback_days))
    with features.ip_pairs(ex).cache() as pairs:
        labelled = _labelled(pairs, lookup)
        feats, _ = _features(ex, labelled, as_of, linkage.LinkageParams(), lookup, _Clock())
        addresses = labelled.select("account_id", "client_ip", "subnet", "n").to_pyarrow()
    return feats, addresses


def _labelled(pairs: ir.Table, lookup: Lookup) -> ir.Table:
    """features.label_ips of the (account, IP) pairs: labels computed once per distinct IP."""
    ips = enrich.ip_table(pairs.select("client_ip").distinct().to_pyarrow().column(0))
    return features.label_ips(pairs, lookup("dg_ips", ips))


def _new_accounts(feats: pa.Table, as_of: datetime, policy: Policy) -> pa.Table:
    """account_id of the accounts inheritance would still judge as new at ``as_of``
    (inherit.Freshness: first seen at most ``inherit.new_account_hours`` before it and, where
    the creation time is known, created at most ``inherit.max_account_age_days`` before it);
    inherit.candidate_keys leaves them out of a key's holders. A customer of long standing
    whose first request in the lookback is recent is not new and counts."""
    at = pa.array([as_of] * feats.num_rows, pa.timestamp("us", tz="UTC"))
    table = pa.table({"timestamp": at, "first_seen": feats.column("first_seen"),
                      "account_created_at": feats.column("created_at"), "account_id": feats.column("account_id")})
    known = table.filter(table["first_seen"].is_valid())
    return inherit.Freshness.of(policy.inherit).filter(known).select(["account_id"])


def _memtable(name: str, table: pa.Table) -> ir.Table:
    return ibis.memtable(table)


def resolve_as_of(exchanges: ir.Table, as_of: datetime | None) -> datetime:
    """``as_of`` in UTC; by default one second after the last exchange, at whole seconds."""
    if as_of is None:
        last = exchanges.timestamp.max().to_pyarrow().as_py()
        as_of = (last or datetime(2000, 1, 1, tzinfo=timezone.utc))
        as_of = as_of.replace(microsecond=0) + (datetime(2000, 1, 1, 0, 0, 1) - datetime(2000, 1, 1))
    return as_of.replace(tzinfo=timezone.utc) if as_of.tzinfo is None else as_of


def _features(ex: ir.Table, labelled: ir.Table, as_of: datetime, params: linkage.LinkageParams,
              lookup: Lookup, clock: _Clock, events: ir.Table | None = None, judge_at: int | None = None
              ) -> tuple[pa.Table, pa.Table]:
    """(per-account features with the prompt-text features, habitual scaffold keys); with
    ``judge_at``, when each account sent that many exchanges (features.feature_parts)."""
    sample = features.prompt_sample(ex, enrich.SAMPLE_PROMPTS).to_pyarrow()
    clock.lap("prompt_sample")
    text, scaffold = enrich.prompt_fingerprints(sample, params.scaffold_min_uses, params.scaffold_min_share)
    del sample
    clock.lap("prompt_fingerprints")
    # each part on its own, then the small results joined (features.feature_parts)
    parts = {name: lookup(f"dg_features_{name}", part.to_pyarrow())
             for name, part in features.feature_parts(ex, labelled, events, judge_at).items()}
    feats = features.combine_features(parts, as_of).to_pyarrow()
    feats = _join_text(feats, text).sort_by("account_id")
    clock.lap("features")
    return feats, scaffold


# the scan's stages in the order they end (statistics only where policy.statistics.enabled)
STAGES = ("ip_labels", "prompt_sample", "prompt_fingerprints", "features", "signals", "linkage_keys",
          "linkage_pairs", "clustering", "member_evidence", "prompt_stats", "statistics", "campaigns", "verdicts",
          "indicators")


class _Beside:
    """``run(*args)`` in a daemon thread; :meth:`result` waits for its value or raises its error.
    A scan that fails before asking leaves it to finish alone, and never keeps the process from
    exiting (an interrupted scan does not wait minutes for its tests)."""

    def __init__(self, run: Callable[..., detect_verdicts.Evidence], *args: object) -> None:
        self._value: detect_verdicts.Evidence | None = None
        self._error: BaseException | None = None

        def target() -> None:
            try:
                self._value = run(*args)
            except BaseException as error:  # handed to the caller of result()
                self._error = error
        self._thread = threading.Thread(target=target, name="distillguard-tests", daemon=True)
        self._thread.start()

    def result(self) -> detect_verdicts.Evidence:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value


class _Clock:
    """Wall time per stage, reported with the scan (the cost users plan capacity by), and told
    to ``on_lap`` as each stage ends."""

    def __init__(self, on_lap: Callable[[str], None] | None = None) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()
        self._on_lap = on_lap

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps[stage] = round(now - self._last, 2)
        self._last = now
        log.info("scan stage %s: %.1f s", stage, self.laps[stage])
        if self._on_lap is not None:
            self._on_lap(stage)


def _with_quiet_accounts(verdicts: pa.Table, exchanges: ir.Table, as_of: datetime, policy: Policy) -> pa.Table:
    """Every account seen before ``as_of`` gets a verdict; those idle during the lookback are allowed."""
    if policy.lookback_days:
        earliest = exchanges.timestamp.min().to_pyarrow().as_py()
        if earliest is not None and earliest.tzinfo is None:  # Spark returns UTC without the zone
            earliest = earliest.replace(tzinfo=timezone.utc)
        start = as_of - timedelta(seconds=int(policy.lookback_days * 86400))  # as features.window
        if earliest is None or earliest >= start:
            return verdicts  # the window holds every exchange: no account was idle through it
    before = exchanges.filter(exchanges.timestamp < ibis.literal(as_of))
    seen = before.select("account_id").distinct().to_pyarrow().column(0)
    quiet = pc.filter(seen, pc.invert(pc.is_in(seen, value_set=verdicts.column("account_id"))))
    if len(quiet) == 0:
        return verdicts
    idle = f"no exchanges in the last {policy.lookback_days:g} days"
    extra = Verdict.table([Verdict(account_id=account, action="allow", score=0.0, campaign_id=None, reasons=[idle],
                                   as_of=as_of) for account in quiet.cast(pa.string()).to_pylist()])
    return pa.concat_tables([verdicts, extra]).sort_by("account_id")


def _join_text(feats: pa.Table, text: pa.Table) -> pa.Table:
    """Account features plus the prompt-text features of the account's sample (0 when none)."""
    joined = feats.join(text, "account_id", join_type="left outer")
    for name in text.column_names:
        if name != "account_id":
            column = joined.column(name)
            joined = joined.set_column(joined.column_names.index(name), name,
                                       pc.fill_null(column, pa.scalar(0, column.type)))
    return joined


def _prompt_stats(ex: ir.Table, membership: dict[str, int], lookup: Lookup) -> dict[int, tuple[int, int]]:
    """cluster -> (exchanges, distinct prompts) of the members in ``membership`` (the admitted
    members of clusters big enough to score).

    Over every exchange, not a sample: a sample would hide what tells benchmark runners from
    a sweep, that they send the same items again and again. Distinct prompts are counted by
    a 64-bit digest (engine.digest64): exact but for a collision expected once in 10,000 scans.
    """
    if not membership:
        return {}
    members = lookup("dg_scored", pa.table({"account_id": list(membership),
                                             "cluster": pa.array(list(membership.values()), pa.int64())}))
    joined = ex.join(members, "account_id")
    stats = joined.group_by("cluster").aggregate(n=joined.count(), distinct=digest64(joined.prompt).nunique()).to_pyarrow()
    return {c: (n, d) for c, n, d in zip(*(stats.column(k).to_pylist() for k in ("cluster", "n", "distinct")))}


def _campaigns(clusters: list[camp.Cluster], edges: pa.Table, feats: pa.Table, policy: Policy,
               cparams: camp.CampaignParams, tested: Sequence[tuple[str, frozenset[str]]] = ()
               ) -> list[camp.Campaign]:
    """The scan's campaigns, described: clusters scored at least ``monitor`` merged into linkage
    campaigns (linked cells), reconciled with the calibrated tests' groups (``tested``:
    campaigns.reconcile, one campaign per group)."""
    # cells are merged only when each is throttle-worthy on its own: a monitored community of
    # customers must never inherit a campaign's action through a few stray links
    flagged = [c for c in clusters if policy.campaign_action(c.score) != "allow"]
    strong = [c for c in flagged if policy.campaign_action(c.score) not in ("allow", "monitor")]
    weak = [[c] for c in flagged if policy.campaign_action(c.score) == "monitor"]
    linked = camp.merge_cells(edges, strong, policy.campaign.merge_link) + weak
    by_account = {a: i for i, a in enumerate(feats.column("account_id").to_pylist())}
    cols = {name: feats.column(name).to_pylist() for name in
            ("exchanges", "output_tokens", "first_seen", "last_seen", "pivot_hours",
             *(f"{c}_share" for c in CAPABILITIES))}
    out = []
    for found in camp.reconcile([frozenset(a for c in cells for a in c.members) for cells in linked],
                                list(tested), cparams.min_members):
        cells = [c for i in found.linked for c in linked[i]]
        members = sorted(found.members)
        rows = [by_account[a] for a in members if a in by_account]
        exchanges = sum(cols["exchanges"][i] for i in rows)
        # float sums with math.fsum (correctly rounded): cells and members come in name order,
        # and a renaming of the accounts must not move a score in its last bits
        score = _size_weighted(cells, lambda c: c.score)
        if found.action is not None:
            # a tested group's campaign scores at least its action's threshold, as its verdicts do
            score = max(score, getattr(policy.campaign, found.action))
        indicators: dict[str, camp.Linked] = {}
        for c in cells:
            for kind, v in c.indicators.items():
                slot = indicators.get(kind, camp.Linked(shared_keys=0, accounts=0))
                indicators[kind] = camp.Linked(shared_keys=slot.shared_keys + v.shared_keys,
                                               accounts=slot.accounts + v.accounts)
        mix = {cap: round(math.fsum(cols[f"{cap}_share"][i] * cols["exchanges"][i] for i in rows) / max(exchanges, 1), 4)
               for cap in CAPABILITIES}
        out.append(camp.Campaign(
            campaign_id=_campaign_id(members),
            members=len(members),
            cells=len(cells),
            exchanges=exchanges,
            output_tokens=sum(cols["output_tokens"][i] or 0 for i in rows),
            first_seen=min(cols["first_seen"][i] for i in rows).isoformat(),
            last_seen=max(cols["last_seen"][i] for i in rows).isoformat(),
            score=score,
            action=policy.campaign_action(score),
            structure=_size_weighted(cells, lambda c: c.structure),
            automation=_size_weighted(cells, lambda c: c.automation),
            collective=_size_weighted(cells, lambda c: c.collective),
            complementarity=_size_weighted(cells, lambda c: c.complementarity),
            recruited=_size_weighted(cells, lambda c: c.recruited),
            pivoted=_size_weighted(cells, lambda c: c.pivoted),
            indicators=indicators,
            capability_mix=mix,
            # members that moved to a newly released model within pivot_hours (a day) of its release
            pivot_within_day_share=round(sum(1 for i in rows if (cols["pivot_hours"][i] is not None
                                                                 and cols["pivot_hours"][i] < cparams.pivot_hours))
                                         / max(len(rows), 1), 4),
            accounts=members,
            tested=found.tested,
        ))
    out.sort(key=lambda c: (-c.score, c.campaign_id))
    return out


def _acted(campaigns: list[camp.Campaign], verdicts: pa.Table) -> list[camp.Campaign]:
    """Each campaign with the action its members' verdicts take: the strongest action that at least
    half of its members hold (monitor at least: its score flagged it). The score's own action is
    a recommendation the verdicts cap at monitor (:func:`_verdicts`); what a campaign record says
    is done must be what the verdicts do."""
    action_of = dict(zip(verdicts.column("account_id").to_pylist(), verdicts.column("action").to_pylist()))
    name_of = {v: k for k, v in SEVERITY.items()}
    out = []
    for c in campaigns:
        held = sorted((SEVERITY.get(action_of.get(a, "allow"), 0) for a in c.accounts), reverse=True)
        majority = held[(len(held) - 1) // 2] if held else 0
        out.append(replace(c, action=name_of[max(majority, SEVERITY["monitor"])]))
    return out


def _with_lineage(campaigns: list[camp.Campaign], previous: list[lineage.Previous],
                  as_of: datetime) -> list[camp.Campaign]:
    """``campaigns`` with the ids and lineage that lineage.trace gives them against the previous
    scan's campaigns, in the scan's order (score, then id). Ids only: actions stay as they are."""
    scan_time = as_of.isoformat()
    traced = lineage.trace([c.accounts for c in campaigns], previous, scan_time)
    out = [replace(c, campaign_id=t.campaign_id, first_scan=t.first_scan, last_scan=scan_time,
                   members_added=t.members_added, members_removed=t.members_removed,
                   merged_from=t.merged_from, split_from=t.split_from) for c, t in zip(campaigns, traced)]
    out.sort(key=lambda c: (-c.score, c.campaign_id))
    return out


def _size_weighted(cells: list[camp.Cluster], sub_score: Callable[[camp.Cluster], float]) -> float:
    """A sub-score of a campaign's cells, weighted by their size (math.fsum: the same in any order);
    0 without cells (a tested group that no linkage campaign overlaps)."""
    if not cells:
        return 0.0
    return round(math.fsum(sub_score(c) * c.size for c in cells) / sum(c.size for c in cells), 4)


def _verdicts(feats: pa.Table, signal_table: pa.Table, suspicion: dict[str, float], tie: dict[str, camp.Tie],
              acted: dict[str, list[str]], campaigns: list[camp.Campaign], policy: Policy,
              as_of: datetime) -> pa.Table:
    """One verdict per account from the rule-based campaigns and its own signals: monitor at most.

    A member of a campaign the clustering scored at least ``monitor`` is monitored, with the
    campaign's score, what links it, the member's own tie and the collective acts (``acted``:
    recruitment, the coordinated pivot) it took part in as reasons; any other account is
    monitored when its own suspicion reaches ``account_monitor``. The campaign's score never
    throttles or blocks on its own: its thresholds were fitted to one simulator, and a
    customer team tied by a card, an office address and a shared tool scored like a campaign.
    Throttle and stronger come from the calibrated tests (:func:`with_statistics`), an earlier
    scan's finding still held (detect.history) or inheritance.
    """
    fired: dict[str, list[str]] = {}
    for account, name, value, threshold, hit in zip(*(signal_table.column(k).to_pylist() for k in
                                                     ("account_id", "signal", "value", "threshold", "fired"))):
        if hit:
            op = ">" if signals.BY_NAME[name].direction == "above" else "<"
            fired.setdefault(account, []).append(f"{name}={value:.3g} ({op} {threshold:g})")
    membership = {a: c for c in campaigns for a in c.accounts}
    allowed = set(policy.allowlist_organizations)
    rows: list[Verdict] = []
    for account, org in zip(feats.column("account_id").to_pylist(), feats.column("organization_id").to_pylist()):
        own = suspicion.get(account, 0.0)
        reasons = list(fired.get(account, []))
        campaign = membership.get(account)
        action, score = "allow", round(0.5 * own, 4)
        if campaign is not None and campaign.action != "allow":
            action, score = "monitor", max(score, campaign.score)
            links = ", ".join(f"{k} x{v.accounts}" for k, v in campaign.indicators.items())
            if campaign.tested:
                # its tested members are raised by with_statistics, with the tests' reasons
                lines = [f"campaign {campaign.campaign_id}: score={campaign.score:.3f} "
                         f"(>= {campaign.action} {getattr(policy.campaign, campaign.action):g}), "
                         f"{campaign.tested} of its {campaign.members} accounts at throttle or stronger "
                         f"by calibrated tests"
                         + (f"; the linkage ties its cells by {links}" if links else "")]
            else:
                capped = "" if campaign.action == "monitor" else (
                    f"; its score recommends {campaign.action}, but a rule-based campaign is monitored only: "
                    f"throttle and stronger need a calibrated test")
                lines = [f"campaign {campaign.campaign_id}: score={campaign.score:.3f} "
                         f"(>= {campaign.action} {getattr(policy.campaign, campaign.action):g}), "
                         f"{campaign.members} accounts linked by {links}{capped}"]
            if account in tie:
                own_tie = tie[account]
                lines.append(f"member evidence={own_tie.evidence:.3g} from {own_tie.families} "
                             f"independent families, tied to >= {own_tie.reach} members")
            # the collective acts that added evidence to the member's tie, with their numbers
            reasons[0:0] = lines + acted.get(account, [])
        elif own >= policy.account_monitor:
            action = "monitor"
            reasons.insert(0, f"account suspicion={own:.3f} (>= monitor {policy.account_monitor:g})")
        if org is not None and org in allowed and action != "allow":
            reasons.insert(0, f"organization {org} is allowlisted: capped at monitor")
            action = "monitor"
        rows.append(Verdict(account_id=account, action=action, score=float(score),
                            campaign_id=campaign.campaign_id if campaign else None,
                            reasons=reasons if action != "allow" else reasons[:3], as_of=as_of))
    return Verdict.table(rows)


#: what a spreadsheet takes as the start of a formula (OWASP, "CSV Injection")
_FORMULA_START = "^[=+\\-@\t\r]"


def spreadsheet_safe(table: pa.Table) -> pa.Table:
    """``table`` with a single quote before every text cell a spreadsheet would run as a formula.

    verdicts.csv holds account ids and reasons that echo client-controlled input; an analyst
    opening it must not run ``=HYPERLINK(...)`` planted in an account id. The quote is what
    OWASP recommends: spreadsheets show the text and do not evaluate it.
    """
    for i, field in enumerate(table.schema):
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            column = table.column(i)
            risky = pc.fill_null(pc.match_substring_regex(column, _FORMULA_START), False)
            table = table.set_column(i, field, pc.if_else(risky, pc.binary_join_element_wise("'", column, ""), column))
    return table


def with_statistics(verdicts: pa.Table, evidence: detect_verdicts.Evidence, policy: Policy) -> pa.Table:
    """Verdicts raised to what the calibrated tests (detect/) earn at throttle or stronger, never
    lowered: an account keeps the stronger of the two, with both sets of reasons. An account of an
    allowlisted organisation stays capped at monitor. A block finding at monitor (co-location
    without the behaviour that makes a campaign) raises an allowed account to monitor, no further."""
    found = evidence.by_account(policy.campaign.min_members)
    watched = evidence.co_located()
    rank = detect_verdicts.ORDER
    at = [i for i, a in enumerate(verdicts.column("account_id").to_pylist()) if a in found]
    rows = dict(zip(at, (Verdict(**row) for row in verdicts.take(pa.array(at, pa.int64())).to_pylist())))
    capped = evidence.capped
    for i, row in rows.items():
        hit = found[row.account_id]
        if hit[0] == "monitor" and row.account_id in watched and row.action == "allow":
            # a co-located group's member is watched from its sign-up on (policy.verify may ask a
            # new one to verify); co-location alone never restricts it
            rows[i] = replace(row, action="monitor",
                              score=max(row.score, policy.campaign.monitor), reasons=hit[2] + list(row.reasons or []))
            continue
        if hit[0] not in ("throttle", "block"):
            continue
        action, _, reasons = hit
        current = row.action if row.action in rank else "throttle"  # fallback ranks with throttle+
        if rank.index(action) <= rank.index(current) or row.account_id in capped:
            rows[i] = replace(row, reasons=list(row.reasons or []) + reasons)
            continue
        # the campaign that holds the account's group is already its campaign (campaigns.reconcile)
        rows[i] = replace(row, action=action,
                          score=max(row.score, getattr(policy.campaign, action)),
                          reasons=reasons + list(row.reasons or []))
    return detect_history.with_rows(verdicts, {i: asdict(v) for i, v in rows.items()})


def with_outside_evidence(verdicts: pa.Table, matches: pa.Table, intel: pa.Table, policy: Policy,
                          as_of: datetime) -> pa.Table:
    """Verdicts with each imported indicator an account matched as a reason, with its provenance.

    A match weighs its confidence / 100 halved every ``policy.intel.half_life_days`` since its
    valid_from (else its import); an account's matches combine as independent pieces of
    evidence, 1 - product of (1 - w). From ``policy.intel.min_weight`` they raise the account's
    action, but never past ``policy.intel.max_action``; an action the scan's own evidence gave
    is never lowered. ``matches`` is (account_id, kind, key = indicator_id).
    """
    cfg = policy.intel
    about = {r["indicator_id"]: r for r in intel.to_pylist()}
    held: dict[str, list[dict]] = {}
    for account, key in zip(matches.column("account_id").to_pylist(), matches.column("key").to_pylist()):
        held.setdefault(account, []).append(about[key])
    rank = detect_verdicts.ORDER
    rows = [Verdict(**row) for row in verdicts.to_pylist()]
    for i, row in enumerate(rows):
        found = sorted(held.get(row.account_id, []), key=lambda r: r["indicator_id"])
        if not found:
            continue
        reasons, remaining = [], 1.0
        for r in found:
            since = r["valid_from"] or r["imported_at"]
            age = max(0.0, (as_of - since).total_seconds() / 86400)
            confidence = cfg.unstated_confidence if r["confidence"] is None else r["confidence"]
            weight = confidence / 100 * 0.5 ** (age / cfg.half_life_days)
            remaining *= 1 - weight
            reasons.append(f"imported indicator {r['indicator_id']} ({r['type']} {r['value']}) from {r['source']}"
                           f"{' id ' + r['external_id'] if r['external_id'] else ''}: confidence {confidence}, "
                           f"{age:.0f} days old, weight {weight:.2f}")
        total = 1 - remaining
        # fallback ranks with throttle
        if total >= cfg.min_weight and rank.index(cfg.max_action if cfg.max_action in rank else "throttle") \
                > rank.index(row.action if row.action in rank else "throttle"):
            reasons.insert(0, f"imported indicators: weight {total:.2f} (>= {cfg.min_weight:g}), "
                              f"{cfg.max_action} at most on their own (policy intel.max_action)")
            rows[i] = replace(row, action=cfg.max_action, score=max(row.score, round(total, 4)),
                              reasons=reasons + list(row.reasons or []))
        else:
            rows[i] = replace(row, reasons=list(row.reasons or []) + reasons)
    return Verdict.table(rows)


def write_outputs(result: ScanResult, out: Path) -> dict[str, Path]:
    """verdicts.parquet/.csv, campaigns.parquet/.json, signals.parquet, indicators.parquet under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"verdicts.parquet": out / "verdicts.parquet", "verdicts.csv": out / "verdicts.csv",
             "campaigns.parquet": out / "campaigns.parquet", "campaigns.json": out / "campaigns.json",
             "signals.parquet": out / "signals.parquet", "indicators.parquet": out / "indicators.parquet"}
    pq.write_table(result.indicators, files["indicators.parquet"])
    pq.write_table(result.verdicts, files["verdicts.parquet"])
    flat = result.verdicts.set_column(4, "reasons", pc.fill_null(
        pc.binary_join(result.verdicts.column("reasons"), " | "), ""))
    pacsv.write_csv(spreadsheet_safe(flat), files["verdicts.csv"])
    described = [c.to_row() for c in result.campaigns]
    # one row per campaign without its member list (members added and removed as counts, as the
    # store's campaigns table keeps them), the nested mappings as JSON text
    campaigns = [{**{k: v for k, v in c.items() if k != "accounts"},
                  "indicators": json.dumps(c["indicators"]), "capability_mix": json.dumps(c["capability_mix"]),
                  "members_added": len(c["members_added"]), "members_removed": len(c["members_removed"])}
                 for c in described]
    table = pa.Table.from_pylist(campaigns) if campaigns else pa.table({"campaign_id": pa.array([], pa.string())})
    pq.write_table(table, files["campaigns.parquet"])
    files["campaigns.json"].write_text(json.dumps(described, indent=2, default=str))
    pq.write_table(result.signals, files["signals.parquet"])
    return files


def previous_verdicts(store, as_of: datetime | None) -> pa.Table | None:
    """The latest stored scan's verdicts before ``as_of`` (all scans when None), or None."""
    con = store.con
    if not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'verdicts'").fetchone()[0]:
        return None
    where = "" if as_of is None else "WHERE as_of < ?"
    params = [] if as_of is None else [as_of]
    latest = con.execute(f"SELECT max(as_of) FROM scans {where}", params).fetchone()
    if latest is None or latest[0] is None:
        return None
    return con.execute("SELECT account_id, action, campaign_id, reasons, as_of FROM verdicts WHERE as_of = ?",
                       [latest[0]]).to_arrow_table()


def previous_campaigns(store, as_of: datetime) -> list[lineage.Previous]:
    """The campaigns of the latest stored scan strictly before ``as_of`` (scan.resolve_as_of:
    a rescan at the same time must not read itself), for lineage.trace; empty when there is none.
    A campaign stored before lineage existed counts as first found by its own scan."""
    con = store.con
    if not (has_table(con, "scans") and has_table(con, "campaigns")):
        return []
    latest = con.execute("SELECT scan_id, as_of FROM scans WHERE as_of < ? ORDER BY as_of DESC, scanned_at DESC "
                         "LIMIT 1", [as_of]).fetchone()
    if latest is None:
        return []
    scan_id, scanned = latest
    out = []
    for campaign_id, detail in con.execute("SELECT campaign_id, detail FROM campaigns WHERE scan_id = ?",
                                           [scan_id]).fetchall():
        row = json.loads(detail)
        out.append(lineage.Previous(campaign_id, frozenset(row["accounts"]),
                                    row.get("first_scan") or scanned.isoformat()))
    return out


def store_result(store, result: ScanResult, *, policy_source: str = "built-in", engine: str = "duckdb") -> str:
    """Keep the scan in the store: the gateway and the reports read the latest one. Returns its scan_id.

    Besides the outputs, the store keeps what an outside reader needs to check them (report.py):
    ``scans``, one row per scan with the policy it applied (canonical JSON and its sha256), the
    engine, the lookback window and the version; and ``edges``, the linkage edges between
    members of the scan's campaigns with their per-kind evidence (the graph the report draws).
    """
    from distillguard import __version__

    con = store.con
    scan_id = result.as_of.strftime("%Y%m%dT%H%M%SZ")
    policy = result.policy or Policy()
    policy_json = json.dumps(policy.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    scans = pa.table({
        "scan_id": [scan_id], "as_of": pa.array([result.as_of], pa.timestamp("us", tz="UTC")),
        "scanned_at": pa.array([datetime.now(timezone.utc)], pa.timestamp("us", tz="UTC")),
        "lookback_days": pa.array([float(policy.lookback_days)], pa.float64()),
        "engine": [engine], "policy_source": [policy_source], "policy": [policy_json],
        "policy_sha256": [hashlib.sha256(policy_json.encode()).hexdigest()],
        "distillguard_version": [__version__],
        "accounts": pa.array([result.verdicts.num_rows], pa.int64()),
        "campaigns": pa.array([len(result.campaigns)], pa.int64()),
    })
    verdicts = result.verdicts.append_column("scan_id", pa.array([scan_id] * result.verdicts.num_rows, pa.string()))
    campaigns = pa.table({
        "scan_id": pa.array([scan_id] * len(result.campaigns), pa.string()),
        "campaign_id": pa.array([c.campaign_id for c in result.campaigns], pa.string()),
        "members": pa.array([c.members for c in result.campaigns], pa.int64()),
        "exchanges": pa.array([c.exchanges for c in result.campaigns], pa.int64()),
        "score": pa.array([c.score for c in result.campaigns], pa.float64()),
        "action": pa.array([c.action for c in result.campaigns], pa.string()),
        "detail": pa.array([json.dumps(c.to_row(), default=str) for c in result.campaigns], pa.string()),
        # lineage (lineage.py): the full member lists added and removed are in detail
        "first_scan": pa.array([_time_or_none(c.first_scan) for c in result.campaigns], pa.timestamp("us", tz="UTC")),
        "last_scan": pa.array([_time_or_none(c.last_scan) for c in result.campaigns], pa.timestamp("us", tz="UTC")),
        "members_added": pa.array([len(c.members_added) for c in result.campaigns], pa.int64()),
        "members_removed": pa.array([len(c.members_removed) for c in result.campaigns], pa.int64()),
        "merged_from": pa.array([c.merged_from for c in result.campaigns], pa.list_(pa.string())),
        "split_from": pa.array([c.split_from for c in result.campaigns], pa.string()),
    })
    signal_rows = result.signals.append_column("scan_id", pa.array([scan_id] * result.signals.num_rows, pa.string()))
    indicator_rows = result.indicators.append_column(
        "scan_id", pa.array([scan_id] * result.indicators.num_rows, pa.string()))
    in_campaign = pa.array(sorted({a for c in result.campaigns for a in c.accounts}), pa.string())
    edges = result.edges.filter(pc.and_(pc.is_in(result.edges.column("a"), value_set=in_campaign),
                                        pc.is_in(result.edges.column("b"), value_set=in_campaign)))
    edges = edges.append_column("scan_id", pa.array([scan_id] * edges.num_rows, pa.string()))
    con.execute("BEGIN TRANSACTION")
    try:
        for name, table in (("scans", scans), ("verdicts", verdicts), ("campaigns", campaigns),
                            ("signals", signal_rows), ("indicators", indicator_rows), ("edges", edges)):
            con.register("_scan_part", table)
            con.execute(f"CREATE TABLE IF NOT EXISTS {name} AS SELECT * FROM _scan_part LIMIT 0")
            _add_missing_columns(con, name)
            con.execute(f"DELETE FROM {name} WHERE scan_id = ?", [scan_id])
            con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM _scan_part")
            con.unregister("_scan_part")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return scan_id


def _time_or_none(value: str) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _add_missing_columns(con, name: str) -> None:
    """Add to the stored table ``name`` the columns of ``_scan_part`` it lacks (a store written by
    an older version), so that scans stored before a column existed read it as null."""
    have = {r[0] for r in con.execute("SELECT column_name FROM information_schema.columns "
                                      "WHERE table_schema = 'main' AND table_name = ?", [name]).fetchall()}
    for column, kind, *_ in con.execute("DESCRIBE _scan_part").fetchall():
        if column not in have:
            con.execute(f'ALTER TABLE {name} ADD COLUMN "{column}" {kind}')
