"""Replay a scenario in time order, with detection every few simulated hours on the data so far.

At each step ``t`` a detector judges the store as of ``t`` (``detect(store, t)`` sees only
exchanges before ``t``); an account throttled (or stronger) at a step is treated as stopped from
then on. The replay covers the campaigns' window: from the first step after the first campaign
exchange to the first step after the last. Steps outside it cannot change when a campaign was
caught or what it obtained.

Detectors that judge step by step can run their steps in parallel worker processes (each
step is independent: it sees only exchanges before its own ``t``); each worker opens the store
read-only. The replay's wall time then counts the steps per worker, and its peak memory is the
largest of the workers'.

A detector that exports campaign indicators (:class:`Inheriting`: the distillguard scan) is
also credited with what the gateway does between its scans (inherit.py): after the step at
``t_k``, a new account whose requests in ``[t_k, t_(k+1))`` complete the evidence against a
throttled campaign's indicators of step ``k`` is stopped at that request.

Simplification, stated: the store keeps every exchange, so after an account is stopped a
detector still sees the traffic it would have sent. Only other accounts' verdicts can gain from
that, and only for detectors that link accounts.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

import pyarrow as pa
import pyarrow.compute as pc

from distillguard.detect import inherit
from distillguard.bench.cost import Cost, measured, process_peak_mb
from distillguard.bench.metrics import first_flags
from distillguard.detect.policy import Inheritance
from distillguard.store import Store
from distillguard.store.verdicts import SEVERITY, VERDICT_SCHEMA, Detector, severities

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@runtime_checkable
class Replayable(Protocol):
    """A detector that can judge every step of a replay in one pass.

    ``replay(store, as_ofs)`` returns VERDICT_SCHEMA rows, one for each account and as-of time
    ``t_k`` at which the account had exchanges in ``[t_(k-1), t_k)``, each equal to what
    ``detect(store, t_k)`` says of that account; at an as-of time without a row, the account's
    verdict is its latest earlier one. Only a detector whose verdict on an account depends on
    nothing but that account's own exchanges can promise that; the benchmark's conformance test
    checks the promise against a loop of ``detect`` calls.
    """

    def replay(self, store: Store, as_ofs: Sequence[datetime]) -> pa.Table: ...


@runtime_checkable
class Inheriting(Protocol):
    """A detector whose judgement also exports campaign indicators (inherit.INDICATOR_SCHEMA)
    that new accounts inherit between judgements, under ``inheritance`` (policy.Inheritance)."""

    inheritance: Inheritance

    def judge(self, store: Store, as_of: datetime | None = None) -> tuple[pa.Table, pa.Table]: ...


@dataclass
class ReplayRun:
    """First flag times per account (metrics.first_flags), and what the replay cost."""

    flags: pa.Table
    mode: str  # "one_pass" (Replayable) or "per_step" (one detect call per step)
    steps: int
    cost: Cost
    slowest_step_seconds: float | None
    workers: int = 1
    inherited: pa.Table | None = None  # VERDICT_SCHEMA rows of accounts stopped by inheritance between steps
    scans_only: pa.Table | None = None  # with inheritance: the flags the scans alone gave (first_flags)


def grid(first: datetime, last: datetime, every: timedelta) -> list[datetime]:
    """Detection times on the UTC grid of ``every`` (00:00, 06:00, ... for 6 hours): from the
    first after ``first`` to the first after ``last``."""
    k = (first - EPOCH) // every + 1
    end = (last - EPOCH) // every + 1
    return [EPOCH + i * every for i in range(k, end + 1)]


def campaign_window(store: Store, labels: pa.Table, relayed: pa.Table) -> tuple[datetime, datetime] | None:
    """First and last campaign exchange (relayed customers' requests excluded); None if none."""
    with _registered(store, labels, relayed):
        first, last = store.con.execute(
            f'SELECT min("timestamp"), max("timestamp") FROM {_CAMPAIGN_EXCHANGES}').fetchone()
    return None if first is None else (first, last)


def campaign_traffic(store: Store, labels: pa.Table, relayed: pa.Table, as_ofs: Sequence[datetime],
                     flags: pa.Table | None = None) -> pa.Table:
    """Each campaign account's own exchanges per replay step (see metrics), on a regular grid.

    With ``flags`` (metrics.first_flags: ``first_throttle`` may fall between steps when an
    account inherited a campaign's action), each bin also counts ``leaked_exchanges`` and
    ``leaked_output_tokens``: those sent before the account was stopped.
    """
    if len(as_ofs) == 1:
        bin_sql, params = "$last::TIMESTAMPTZ", {"last": as_ofs[0]}
    else:
        step = as_ofs[1] - as_ofs[0]
        step_us = step // timedelta(microseconds=1)
        bin_sql = (f"$origin::TIMESTAMPTZ + to_microseconds("
                   f"((epoch_us(\"timestamp\") - epoch_us($origin::TIMESTAMPTZ)) // {step_us} + 1) * {step_us})")
        params = {"origin": as_ofs[0] - step, "last": as_ofs[-1]}
    leaked, source = "", _CAMPAIGN_EXCHANGES
    if flags is not None:
        before = '(stop IS NULL OR "timestamp" < stop)'
        leaked = (f", count(*) FILTER ({before})::BIGINT AS leaked_exchanges, "
                  f"coalesce(sum(output_tokens) FILTER ({before}), 0)::BIGINT AS leaked_output_tokens")
        source = f"(SELECT c.*, s.first_throttle AS stop FROM {_CAMPAIGN_EXCHANGES} c " \
                 f"LEFT JOIN _bench_stops s USING (account_id))"
    with _registered(store, labels, relayed, flags):
        return store.con.execute(f"""
            SELECT account_id, campaign_id, {bin_sql} AS as_of, count(*)::BIGINT AS exchanges,
                   coalesce(sum(output_tokens), 0)::BIGINT AS output_tokens, min("timestamp") AS first_timestamp
                   {leaked}
            FROM {source} WHERE "timestamp" < $last::TIMESTAMPTZ
            GROUP BY ALL ORDER BY as_of, account_id""", params).to_arrow_table()


_CAMPAIGN_EXCHANGES = """(
    SELECT e."timestamp", e.account_id, e.output_tokens, l.campaign_id
    FROM exchanges e JOIN _bench_campaign_accounts l USING (account_id)
    WHERE e.exchange_id NOT IN (SELECT exchange_id FROM _bench_relayed))"""


class _registered:
    """Labels of campaign accounts and relayed ids as temporary relations of the store."""

    def __init__(self, store: Store, labels: pa.Table, relayed: pa.Table, flags: pa.Table | None = None) -> None:
        self.con = store.con
        self.accounts = labels.filter(labels["campaign_id"].is_valid()).select(["account_id", "campaign_id"])
        self.relayed = relayed.select(["exchange_id"])
        self.flags = flags

    def __enter__(self) -> None:
        self.con.register("_bench_campaign_accounts", self.accounts)
        self.con.register("_bench_relayed", self.relayed)
        if self.flags is not None:
            self.con.register("_bench_stops", self.flags.select(["account_id", "first_throttle"]))

    def __exit__(self, *exc: object) -> None:
        self.con.unregister("_bench_campaign_accounts")
        self.con.unregister("_bench_relayed")
        if self.flags is not None:
            self.con.unregister("_bench_stops")


def replay(detector: Detector, store: Store, as_ofs: Sequence[datetime],
           progress: Callable[[int, int], None] | None = None, workers: int = 1) -> ReplayRun:
    """Run the detector at every as-of time and keep, per account, when it was first flagged.

    ``workers`` > 1 runs a step-by-step detector's steps in that many processes (the store must
    be a file that others may open read-only, i.e. not held open for writing here).
    """
    slowest, inherited, scans_only = None, None, None
    parallel = workers > 1 and not isinstance(detector, Replayable) and store.path != ":memory:"
    with measured() as cost:
        if isinstance(detector, Replayable):
            mode = "one_pass"
            verdicts = detector.replay(store, list(as_ofs))
            flagged = verdicts.filter(pc.not_equal(verdicts["action"], "allow"))
        else:
            mode = "per_step"
            steps = _parallel_steps(detector, store.path, as_ofs, workers, progress) if parallel else \
                _steps(detector, store, as_ofs, progress)
            parts = [flagged_now for flagged_now, _, _, _ in steps]
            slowest = max((seconds for _, seconds, _, _ in steps), default=0.0)
            worker_peak = max((peak for _, _, peak, _ in steps if peak is not None), default=None)
            if isinstance(detector, Inheriting) and detector.inheritance.enabled:
                inherited = between_steps(store, as_ofs, steps, detector.inheritance)
                scans_only = first_flags(_concat(parts).cast(VERDICT_SCHEMA))
                parts.append(inherited)
            flagged = _concat(parts)
        flags = first_flags(flagged.cast(VERDICT_SCHEMA))
    if parallel and worker_peak is not None:
        cost.peak_rss_mb = max(cost.peak_rss_mb or 0.0, worker_peak)
    return ReplayRun(flags=flags, mode=mode, steps=len(as_ofs), cost=cost, slowest_step_seconds=slowest,
                     workers=workers if parallel else 1, inherited=inherited, scans_only=scans_only)


def _concat(parts: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(parts) if parts else VERDICT_SCHEMA.empty_table()


# flagged verdicts stamped with the step, seconds, worker peak MiB, indicators (Inheriting detectors)
Step = tuple[pa.Table, float, float | None, pa.Table | None]


def _step(detector: Detector, store: Store, as_of: datetime) -> tuple[pa.Table, float, pa.Table | None]:
    started = time.perf_counter()
    if isinstance(detector, Inheriting):
        step, indicators = detector.judge(store, as_of)
    else:
        step, indicators = detector.detect(store, as_of), None
    seconds = time.perf_counter() - started
    flagged_now = step.filter(pc.not_equal(step["action"], "allow")).select(VERDICT_SCHEMA.names)
    flagged_now = flagged_now.set_column(
        VERDICT_SCHEMA.get_field_index("as_of"), "as_of",
        pa.array([as_of] * flagged_now.num_rows, VERDICT_SCHEMA.field("as_of").type))
    return flagged_now, seconds, indicators


def _steps(detector: Detector, store: Store, as_ofs: Sequence[datetime],
           progress: Callable[[int, int], None] | None) -> list[Step]:
    out = []
    for i, as_of in enumerate(as_ofs, start=1):
        flagged_now, seconds, indicators = _step(detector, store, as_of)
        out.append((flagged_now, seconds, None, indicators))
        if progress:
            progress(i, len(as_ofs))
    return out


def between_steps(store: Store, as_ofs: Sequence[datetime], steps: Sequence[Step],
                  inheritance: Inheritance) -> pa.Table:
    """What the gateway stops between scans: per step, the new accounts that inherit a
    campaign's action from that step's indicators before the next step (inherit.inherited).

    Eligible are accounts not already throttled (or stronger) by the step's scan and new at
    the request by the gateway's rule (inherit.Freshness: first seen and created recently).
    """
    parts = []
    fresh = inherit.Freshness.of(inheritance)
    first_seen = store.con.execute(
        'SELECT account_id, min("timestamp") AS first_seen FROM exchanges GROUP BY account_id').to_arrow_table()
    store.con.register("_bench_first_seen", first_seen)
    for k, (flagged_now, _, _, indicators) in enumerate(steps):
        if indicators is None or indicators.num_rows == 0 or k + 1 >= len(as_ofs):
            continue
        stopped = flagged_now.filter(pc.greater_equal(severities(flagged_now["action"]), SEVERITY["throttle"]))
        store.con.register("_bench_stopped", stopped.select(["account_id"]))
        try:
            # accounts first seen before the window opened minus the rule's span cannot be new
            # in it: left out here for speed only, the rule itself is applied by inherit.inherited
            requests = store.con.execute("""
                SELECT e.account_id, e."timestamp", f.first_seen, e.payment_fingerprint, e.client_ip,
                       e.system_prompt, e.prompt, e.email_domain, e.account_created_at
                FROM exchanges e JOIN _bench_first_seen f USING (account_id)
                WHERE e."timestamp" >= $start AND e."timestamp" < $end
                  AND f.first_seen >= $start::TIMESTAMPTZ - to_microseconds($us)
                  AND e.account_id NOT IN (SELECT account_id FROM _bench_stopped)""",
                {"start": as_ofs[k], "end": as_ofs[k + 1],
                 "us": int(fresh.first_seen_within.total_seconds() * 1e6)}).to_arrow_table()
        finally:
            store.con.unregister("_bench_stopped")
        parts.append(inherit.inherited(requests, indicators, as_ofs[k], inheritance.action,
                                       inheritance.min_families, fresh=fresh,
                                       habitual_uses=inheritance.habitual_uses,
                                       signature_words=inheritance.signature_words,
                                       scaffold_ngrams=inheritance.scaffold_ngrams))
    store.con.unregister("_bench_first_seen")
    return pa.concat_tables(parts) if parts else VERDICT_SCHEMA.empty_table()


_worker_store: Store | None = None


def _open_worker(path: str) -> None:
    global _worker_store
    _worker_store = Store(path, read_only=True)


def _worker_step(detector: Detector, as_of: datetime) -> Step:
    assert _worker_store is not None, "worker initializer did not run"
    flagged_now, seconds, indicators = _step(detector, _worker_store, as_of)
    return flagged_now, seconds, process_peak_mb(), indicators


def _parallel_steps(detector: Detector, path: str, as_ofs: Sequence[datetime], workers: int,
                    progress: Callable[[int, int], None] | None) -> list[Step]:
    # spawn, not fork: a forked child would inherit this process's DuckDB connection
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_open_worker,
                             initargs=(path,)) as pool:
        futures = [pool.submit(_worker_step, detector, as_of) for as_of in as_ofs]
        out = []
        for i, future in enumerate(futures, start=1):
            out.append(future.result())
            if progress:
                progress(i, len(as_ofs))
    return out
