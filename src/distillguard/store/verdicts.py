"""The verdict vocabulary shared by every detector, the gateway and the benchmark.

A verdict is one row per account: ``account_id``, ``action``, ``score`` (0..1, higher = more
likely part of a distillation campaign), ``campaign_id`` (null if none), ``reasons`` (list of
human-readable strings naming signal, value and threshold) and ``as_of``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import pyarrow as pa

from distillguard.store.database import Store

#: in order of severity; "throttle or stronger" means index >= ACTIONS.index("throttle"). verify
#: refuses every request until an operator lifts it (step-up verification), block for good
ACTIONS: tuple[str, ...] = ("allow", "monitor", "throttle", "fallback", "verify", "block")
SEVERITY: dict[str, int] = {a: i for i, a in enumerate(ACTIONS)}


def severities(actions: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The SEVERITY of each action in a column, for comparisons such as "throttle or stronger"."""
    return pa.array([SEVERITY[a] for a in actions.to_pylist()], pa.int64())

VERDICT_SCHEMA = pa.schema([
    pa.field("account_id", pa.string(), nullable=False),
    pa.field("action", pa.string(), nullable=False),
    pa.field("score", pa.float64(), nullable=False),
    pa.field("campaign_id", pa.string()),
    pa.field("reasons", pa.list_(pa.string())),
    pa.field("as_of", pa.timestamp("us", tz="UTC")),
])


def at_least(action: str, floor: str) -> bool:
    """True if ``action`` is ``floor`` or stronger."""
    return SEVERITY[action] >= SEVERITY[floor]


class Detector(Protocol):
    """What the benchmark runs. Constructors store parameters only (scikit-learn style).

    ``fit`` learns thresholds or other state from reference traffic (an organic-only store the
    benchmark simulates with a different seed) and returns self; ``detect`` judges every account
    seen in ``store`` using only exchanges with timestamp < ``as_of`` (all when None) and
    returns a table with VERDICT_SCHEMA, one row per account seen.
    """

    name: str

    def fit(self, reference: Store) -> "Detector": ...

    def detect(self, store: Store, as_of: datetime | None = None) -> pa.Table: ...
