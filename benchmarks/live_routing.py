"""Live routing on replayed simulated traffic: how many organic sessions ever reach the
fallback, how much of each campaign is routed after its first detection, and what the scorer
adds per request.

    python benchmarks/live_routing.py [--scenario alibaba-2026] [--scale 0.004] [--docs docs/benchmarks.md]

Simulates the scenario, scans it once at an early as-of (``--scan-after-days`` after the first
campaign exchange), calibrates the live reference on the accounts that scan allowed (their
exchanges before the as-of), then feeds every later exchange in time order through the
gateway's own decision (enforce.Enforcer: verdicts, inheritance, online limits) and live
routing (live.LiveRouter), in process, twice: under the policy as given, and under the same
policy with ``gateway.findings_to_fallback`` on (the scan's throttles served by the fallback
model instead of refused), over the same scan and reference. The labels are read only to
count, never to tune.

Figures, per policy: organic sessions (split by ``live.session_gap_seconds``) after the as-of
that ever get the fallback, and how many by live routing (floor <= 1%, with the Clopper-Pearson
95% upper bound); the looks at which live routing's sessions crossed; per campaign, from its
first detection (the first of its requests that gets throttle, fallback, verify or block, from
any source), the share of its exchanges served by the fallback model and the share served by
it or refused (floor >= 90%: routed, to the fallback); the scorer's time per request
(``LiveRouter.route``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import ibis
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from scipy.stats import beta

from distillguard.bench.report import write_docs
from distillguard.detect import scan
from distillguard.detect.policy import Policy, load_policy
from distillguard.gateway import live
from distillguard.gateway.enforce import Enforcer, Request, ScanOutputs
from distillguard.gateway.limits import MemoryCounters
from distillguard.ingest import ingest_paths
from distillguard.simulate import simulate
from distillguard.store import Store
from distillguard.store.verdicts import SEVERITY

COLUMNS = ("timestamp", "account_id", "organization_id", "payment_fingerprint", "email_domain", "account_created_at",
           "client_ip", "client_asn", "user_agent", "system_prompt", "prompt", "max_tokens", "tool_count")


def upper_bound(k: int, n: int, level: float = 0.95) -> float:
    """Clopper-Pearson one-sided upper bound of a share seen as ``k`` of ``n``."""
    return 1.0 if k >= n else float(beta.ppf(level, k + 1, n - k))


async def replay(store: Store, enforcer: Enforcer, router: live.LiveRouter,
                 as_of: datetime) -> tuple[list[tuple], list[int]]:
    """(account, timestamp, action, source, route seconds, scored) of every exchange from ``as_of`` on
    (scored: the enforcer left it at allow or monitor, so live routing scored it), and the look of
    its session (as the scorer counts them) at which each session live routing sent away crossed."""
    cursor = store.con.execute(f"SELECT {', '.join(COLUMNS)} FROM exchanges WHERE \"timestamp\" >= ? "
                               "ORDER BY \"timestamp\"", [as_of])
    out, crossed_at = [], []
    while rows := cursor.fetchmany(20_000):
        for (at, account, org, card, domain, created, ip, asn, ua, system, prompt, max_tokens, tools) in rows:
            decision = await enforcer.decide(Request(account, org, card, domain, created, ip, system, prompt, at))
            record = SimpleNamespace(account_id=account, organization_id=org, payment_fingerprint=card,
                                     email_domain=domain)
            client = SimpleNamespace(ip=ip, asn=asn, user_agent=ua)
            facts = SimpleNamespace(max_tokens=max_tokens, tool_count=tools, system_prompt=system, prompt=prompt)
            crossed_before = router.sessions_routed
            t0 = time.perf_counter()
            final = router.route(decision, record, client, facts, at)
            out.append((account, at, final.action, final.source, time.perf_counter() - t0,
                        decision.action in ("allow", "monitor")))
            if router.sessions_routed > crossed_before:
                crossed_at.append(router.scorer.sessions.by_account[account].looks)
    return out, crossed_at


def measure(rows: list[tuple], crossed_at: list[int], labels, gap: float) -> dict:
    role = dict(zip(labels.column("account_id").to_pylist(), labels.column("role").to_pylist()))
    campaign = dict(zip(labels.column("account_id").to_pylist(), labels.column("campaign_id").to_pylist()))
    sessions: dict[str, list] = {}  # account -> [last time, session index]
    # per organic session: the sources that sent it to the fallback, and whether it was ever refused or sent there
    organic_sessions: dict[tuple[str, int], tuple[frozenset[str], bool]] = {}
    by_campaign: dict[str, list[tuple[datetime, str, str]]] = defaultdict(list)
    for account, at, action, source, _, _ in rows:
        last = sessions.get(account)
        t = at.timestamp()
        if last is None or t - last[0] > gap:
            last = sessions[account] = [t, 0 if last is None else last[1] + 1]
        last[0] = t
        if role.get(account) == "organic":
            key = (account, last[1])
            sources, stopped = organic_sessions.get(key, (frozenset(), False))
            organic_sessions[key] = (sources | {source} if action == "fallback" else sources,
                                     stopped or SEVERITY[action] >= SEVERITY["throttle"])
        elif campaign.get(account):
            by_campaign[campaign[account]].append((at, action, source))
    reached = sum(1 for sources, _ in organic_sessions.values() if sources)
    reached_by = {source: sum(1 for sources, _ in organic_sessions.values() if source in sources)
                  for source in ("live", "verdict", "inherited")}
    stopped = sum(1 for _, was in organic_sessions.values() if was)
    campaigns = {}
    for cid, seen in sorted(by_campaign.items()):
        acted = [i for i, (_, action, _) in enumerate(seen) if SEVERITY[action] >= SEVERITY["throttle"]]
        if not acted:
            campaigns[cid] = {"exchanges": len(seen), "first": None}
            continue
        after = seen[acted[0]:]
        campaigns[cid] = {
            "exchanges": len(seen), "first": seen[acted[0]][0], "after": len(after),
            "fallback": sum(1 for _, a, _ in after if a == "fallback"),
            "live": sum(1 for _, a, s in after if s == "live"),
            "stopped": sum(1 for _, a, _ in after if SEVERITY[a] >= SEVERITY["throttle"])}
    micros = sorted(r[4] * 1e6 for r in rows if r[5])
    return {"organic_sessions": len(organic_sessions), "organic_reached": reached, "organic_by": reached_by,
            "organic_stopped": stopped, "campaigns": campaigns, "scored": len(micros), "crossed_at": sorted(crossed_at),
            "route_us_p50": statistics.median(micros) if micros else 0.0,
            "route_us_p99": micros[int(0.99 * (len(micros) - 1))] if micros else 0.0, "requests": len(rows)}


def markdown(runs: dict[str, dict], setup: dict, command: str) -> str:
    """The live-routing block: one line of setup, per policy the organic floor, one table row per
    policy and campaign, the campaign floor, and the scorer's time (under the first policy)."""
    first = next(iter(runs.values()))
    lines = [
        (f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, {os.cpu_count()} cores, "
         f"Python {platform.python_version()}, with `{command}`: {setup['scenario']} at scale {setup['scale']} "
         f"(seed {setup['seed']}), scanned once at {setup['as_of']:%Y-%m-%d %H:%M} ({setup['after_days']:g} days "
         f"after the first campaign exchange: {setup['flagged']} accounts throttled or stronger, "
         f"{setup['flagged_organic']} of them organic, "
         f"{setup['monitored']} monitored); reference of {setup['reference_sessions']:,} organic sessions "
         f"before it; then {first['requests']:,} exchanges replayed through the enforcer and live routing "
         f"(session budget {setup['budget']:g}, decided at looks 1, 2, 4, 8, ...), once per policy: "
         f"{', '.join(f'`{name}`' for name in runs)}."), ""]
    for name, m in runs.items():
        n, k = m["organic_sessions"], m["organic_reached"]
        share = k / n if n else 0.0
        looks = m["crossed_at"]
        where = ("crossed at " + ", ".join(f"look {look}: {count:,}" for look, count in sorted(Counter(looks).items()))
                 if looks else "crossed nowhere")
        by = m["organic_by"]
        lines.append(f"`{name}`: organic sessions that ever reached the fallback {k:,} of {n:,} = {share:.3%} "
                     f"(95% upper bound {upper_bound(k, n):.3%}; floor <= 1%: {'met' if share <= 0.01 else 'MISSED'}):"
                     f" {by['live']:,} by live routing, {by['verdict']:,} by the scan's verdicts, {by['inherited']:,} "
                     f"by inheritance; ever refused or sent to the fallback {m['organic_stopped']:,} "
                     f"({m['organic_stopped'] / max(n, 1):.3%}). Live routing's {len(looks):,} sessions {where}.")
    lines += ["", ("| policy | campaign | exchanges after the as-of | first detection | after it | served by the "
                   "fallback | of which by live routing | fallback or refused |"), "|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for name, m in runs.items():
        met = []
        for cid, c in m["campaigns"].items():
            if c["first"] is None:
                lines.append(f"| `{name}` | {cid} | {c['exchanges']:,} | never | | | | |")
                met.append(False)
                continue
            after = max(c["after"], 1)
            lines.append(f"| `{name}` | {cid} | {c['exchanges']:,} | {c['first']:%Y-%m-%d %H:%M} | {c['after']:,} | "
                         f"{c['fallback'] / after:.1%} | {c['live'] / after:.1%} | {c['stopped'] / after:.1%} |")
            met.append(c["fallback"] / after >= 0.9)
        verdicts.append(f"`{name}` {'met' if met and all(met) else 'MISSED'} ({sum(met)} of {len(met)})")
    lines += ["", (f"Floor >= 90% of a campaign's exchanges after its first detection served by the fallback: "
                   f"{'; '.join(verdicts)}."),
              (f"Scorer's added time per request it scored (`{next(iter(runs))}`: {first['scored']:,} at allow or "
               f"monitor; LiveRouter.route, in process): median {first['route_us_p50']:.1f} us, "
               f"p99 {first['route_us_p99']:.1f} us."), ""]
    return "\n".join(lines)


@dataclass
class Prepared:
    """A simulated scenario scanned once and the live reference calibrated on what that scan allowed."""

    store: Store
    labels: pa.Table
    as_of: datetime
    outputs: ScanOutputs
    actions: dict[str, str]
    reference: live.Reference


def build_reference(out: Path, policy: Policy, scenario: str = "alibaba-2026", scale: float = 0.004, seed: int = 11,
                    scan_after_days: float = 2.0) -> Prepared:
    """Simulate ``scenario`` into ``out``, ingest it, scan it once ``scan_after_days`` after the first
    campaign exchange, and calibrate live routing's reference on the accounts that scan allowed,
    their exchanges before its as-of (what ``distillguard gateway calibrate --verdicts`` does).
    The store stays open: the caller closes ``Prepared.store``."""
    simulate(scenario, scale=scale, seed=seed, out_dir=out / "sim")
    labels = pq.read_table(out / "sim" / "labels.parquet")
    store = Store(str(out / "store.duckdb"))
    ingest_paths(store, [out / "sim" / "exchanges.parquet"])
    store.con.register("_attackers", labels.filter(pc.not_equal(labels.column("role"), "organic")).select(["account_id"]))
    first = store.con.execute('SELECT min("timestamp") FROM exchanges WHERE account_id IN '
                              "(SELECT account_id FROM _attackers)").fetchone()[0]
    as_of = first + timedelta(days=scan_after_days)
    result = scan.scan(ibis.duckdb.from_connection(store.con).table("exchanges"), as_of, policy)
    scan.write_outputs(result, out / "scan")
    actions = dict(zip(result.verdicts.column("account_id").to_pylist(), result.verdicts.column("action").to_pylist()))
    allowed = {a for a, x in actions.items() if x == "allow"}
    reference = live.calibrate(store.con, policy.live, allowed, as_of)
    return Prepared(store, labels, as_of, ScanOutputs(out / "scan"), actions, reference)


def run(prepared: Prepared, policy: Policy) -> dict:
    """Replay the exchanges after the as-of under ``policy`` (a fresh enforcer and router over the
    prepared scan and reference) and measure them."""
    store, as_of = prepared.store, prepared.as_of
    enforcer = Enforcer(policy, prepared.outputs, MemoryCounters())
    enforcer.first_seen.update(dict(store.con.execute(
        'SELECT account_id, min("timestamp") FROM exchanges WHERE "timestamp" < ? GROUP BY 1', [as_of]).fetchall()))
    router = live.LiveRouter(policy, None, "fallback-model")
    router.refresh(None, prepared.outputs)
    router.scorer = live.Scorer(policy.live, policy.statistics.budget, prepared.reference)
    rows, crossed_at = asyncio.run(replay(store, enforcer, router, as_of))
    return measure(rows, crossed_at, prepared.labels, policy.live.session_gap_seconds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="alibaba-2026")
    p.add_argument("--scale", type=float, default=0.004)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--scan-after-days", type=float, default=2.0)
    p.add_argument("--policy", default=None, help="policy YAML (default: the built-in policy)")
    p.add_argument("--docs", default="", help="replace the live-routing block of this Markdown file")
    args = p.parse_args()
    policy = load_policy(args.policy)
    policies = {"policy" if args.policy else "default": policy}
    if not policy.gateway.findings_to_fallback:
        policies["findings_to_fallback"] = policy.model_copy(update={"gateway": policy.gateway.model_copy(
            update={"findings_to_fallback": True})})
    with tempfile.TemporaryDirectory() as tmp:
        prepared = build_reference(Path(tmp), policy, args.scenario, args.scale, args.seed, args.scan_after_days)
        runs = {name: run(prepared, each) for name, each in policies.items()}
        prepared.store.close()
    actions = prepared.actions
    role = dict(zip(prepared.labels.column("account_id").to_pylist(), prepared.labels.column("role").to_pylist()))
    setup = {"scenario": args.scenario, "scale": args.scale, "seed": args.seed, "as_of": prepared.as_of,
             "after_days": args.scan_after_days, "budget": policy.live.session_budget,
             "reference_sessions": prepared.reference.sessions,
             "flagged": sum(1 for x in actions.values() if SEVERITY[x] >= SEVERITY["throttle"]),
             "flagged_organic": sum(1 for a, x in actions.items() if SEVERITY[x] >= SEVERITY["throttle"]
                                    and role.get(a) == "organic"),
             "monitored": sum(1 for x in actions.values() if x == "monitor")}
    text = markdown(runs, setup, "python benchmarks/live_routing.py " + " ".join(sys.argv[1:]))
    print(text)
    if args.docs:
        write_docs(text, args.docs, "live-routing")


if __name__ == "__main__":
    main()
