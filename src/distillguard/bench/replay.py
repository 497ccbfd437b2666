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

Simplification, stated: the store keeps every exchange, so after an account is stopped a
detector still sees the traffic it would have sent. Only other accounts' verdicts can gain from
that, and only for detectors that link accounts.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Protocol, Sequence, runtime_checkable

import pyarrow as pa
import pyarrow.compute as pc

from distillguard.bench.cost import Cost, measured, process_peak_mb
from distillguard.bench.metrics import first_flags
from distillguard.store import Store
from distillguard.verdicts import VERDICT_SCHEMA, Detector

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


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


@dataclass
class ReplayRun:
    """First flag times per account (metrics.first_flags), and what the replay cost."""

    flags: pa.Table
    mode: str  # "one_pass" (Replayable) or "per_step" (one detect call per step)
    steps: int
    cost: Cost
    slowest_step_seconds: float | None
    workers: int = 1


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


def campaign_traffic(store: Store, labels: pa.Table, relayed: pa.Table, as_ofs: Sequence[datetime]) -> pa.Table:
    """Each campaign account's own exchanges per replay step (see metrics), on a regular grid."""
    if len(as_ofs) == 1:
        bin_sql, params = "$last::TIMESTAMPTZ", {"last": as_ofs[0]}
    else:
        step = as_ofs[1] - as_ofs[0]
        step_us = step // timedelta(microseconds=1)
        bin_sql = (f"$origin::TIMESTAMPTZ + to_microseconds("
                   f"((epoch_us(\"timestamp\") - epoch_us($origin::TIMESTAMPTZ)) // {step_us} + 1) * {step_us})")
        params = {"origin": as_ofs[0] - step, "last": as_ofs[-1]}
    with _registered(store, labels, relayed):
        return store.con.execute(f"""
            SELECT account_id, campaign_id, {bin_sql} AS as_of, count(*)::BIGINT AS exchanges,
                   coalesce(sum(output_tokens), 0)::BIGINT AS output_tokens, min("timestamp") AS first_timestamp
            FROM {_CAMPAIGN_EXCHANGES} WHERE "timestamp" < $last::TIMESTAMPTZ
            GROUP BY ALL ORDER BY as_of, account_id""", params).to_arrow_table()


_CAMPAIGN_EXCHANGES = """(
    SELECT e."timestamp", e.account_id, e.output_tokens, l.campaign_id
    FROM exchanges e JOIN _bench_campaign_accounts l USING (account_id)
    WHERE e.exchange_id NOT IN (SELECT exchange_id FROM _bench_relayed))"""


class _registered:
    """Labels of campaign accounts and relayed ids as temporary relations of the store."""

    def __init__(self, store: Store, labels: pa.Table, relayed: pa.Table) -> None:
        self.con = store.con
        self.accounts = labels.filter(labels["campaign_id"].is_valid()).select(["account_id", "campaign_id"])
        self.relayed = relayed.select(["exchange_id"])

    def __enter__(self) -> None:
        self.con.register("_bench_campaign_accounts", self.accounts)
        self.con.register("_bench_relayed", self.relayed)

    def __exit__(self, *exc: object) -> None:
        self.con.unregister("_bench_campaign_accounts")
        self.con.unregister("_bench_relayed")


def replay(detector: Detector, store: Store, as_ofs: Sequence[datetime],
           progress: Callable[[int, int], None] | None = None, workers: int = 1) -> ReplayRun:
    """Run the detector at every as-of time and keep, per account, when it was first flagged.

    ``workers`` > 1 runs a step-by-step detector's steps in that many processes (the store must
    be a file that others may open read-only, i.e. not held open for writing here).
    """
    slowest = None
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
            parts = [flagged_now for flagged_now, _, _ in steps]
            slowest = max((seconds for _, seconds, _ in steps), default=0.0)
            worker_peak = max((peak for _, _, peak in steps if peak is not None), default=None)
            flagged = pa.concat_tables(parts) if parts else VERDICT_SCHEMA.empty_table()
        flags = first_flags(flagged.cast(VERDICT_SCHEMA))
    if parallel and worker_peak is not None:
        cost.peak_rss_mb = max(cost.peak_rss_mb or 0.0, worker_peak)
    return ReplayRun(flags=flags, mode=mode, steps=len(as_ofs), cost=cost, slowest_step_seconds=slowest,
                     workers=workers if parallel else 1)


Step = tuple[pa.Table, float, float | None]  # flagged verdicts stamped with the step, seconds, worker peak MiB


def _step(detector: Detector, store: Store, as_of: datetime) -> tuple[pa.Table, float]:
    started = time.perf_counter()
    step = detector.detect(store, as_of)
    seconds = time.perf_counter() - started
    flagged_now = step.filter(pc.not_equal(step["action"], "allow")).select(VERDICT_SCHEMA.names)
    flagged_now = flagged_now.set_column(
        VERDICT_SCHEMA.get_field_index("as_of"), "as_of",
        pa.array([as_of] * flagged_now.num_rows, VERDICT_SCHEMA.field("as_of").type))
    return flagged_now, seconds


def _steps(detector: Detector, store: Store, as_ofs: Sequence[datetime],
           progress: Callable[[int, int], None] | None) -> list[Step]:
    out = []
    for i, as_of in enumerate(as_ofs, start=1):
        flagged_now, seconds = _step(detector, store, as_of)
        out.append((flagged_now, seconds, None))
        if progress:
            progress(i, len(as_ofs))
    return out


_worker_store: Store | None = None


def _open_worker(path: str) -> None:
    global _worker_store
    _worker_store = Store(path, read_only=True)


def _worker_step(detector: Detector, as_of: datetime) -> Step:
    assert _worker_store is not None, "worker initializer did not run"
    flagged_now, seconds = _step(detector, _worker_store, as_of)
    return flagged_now, seconds, process_peak_mb()


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
