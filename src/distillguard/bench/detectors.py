"""The distillguard scan as a benchmark detector (the Detector protocol of verdicts.py).

``fit`` learns nothing on purpose: the scan's thresholds are fixed, documented defaults
(policy.py, signals.py), not tuned to the reference traffic, so the benchmark measures how they
generalise.
"""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa

from distillguard.store.engine import exchanges
from distillguard.detect.policy import Inheritance, Policy
from distillguard.detect import resellers
from distillguard.detect.scan import resolve_as_of, scan
from distillguard.store import Store


class DistillguardDetector:
    name = "distillguard"

    def __init__(self, policy: Policy | None = None, engine: str = "duckdb") -> None:
        # a benchmark judges whole scenarios (about ten weeks), so look back over all of it
        self.policy = policy or Policy(lookback_days=120)
        self.engine = engine

    def fit(self, reference: Store) -> DistillguardDetector:
        return self

    @property
    def inheritance(self) -> Inheritance:
        """How new accounts inherit a campaign's action between scans (the replay models it)."""
        return self.policy.inherit

    def detect(self, store: Store, as_of: datetime | None = None) -> pa.Table:
        return self.judge(store, as_of)[0]

    def judge(self, store: Store, as_of: datetime | None = None) -> tuple[pa.Table, pa.Table]:
        """(verdicts, campaign indicators) of one scan (bench.replay.Inheriting), judged as
        ``distillguard scan`` judges by default: a recognised reseller's end users one by one
        (detect/resellers.py), each account then at the strongest action any of its entities got."""
        _, table, lookup = exchanges(store, self.engine)
        table, _ = resellers.split(table, resolve_as_of(table, as_of), self.policy.lookback_days)
        result = scan(table, as_of, self.policy, lookup=lookup)
        return resellers.by_account(result.verdicts), result.indicators
