"""Assemble VERDICT_SCHEMA tables from the per-account arrays a baseline computes."""

from __future__ import annotations

from datetime import datetime
from typing import Sequence

import numpy as np
import pyarrow as pa

from distillguard.store.verdicts import ACTIONS, VERDICT_SCHEMA


def verdict_table(account_id: pa.Array, severity: np.ndarray, score: np.ndarray,
                  reasons: Sequence[list[str]], as_of: pa.Array | datetime | None) -> pa.Table:
    """One verdict row per entry; ``severity`` indexes ACTIONS (0 = allow).

    ``as_of`` is one value for every row (a ``detect`` call) or an array (a replay).
    """
    n = len(account_id)
    if not isinstance(as_of, (pa.Array, pa.ChunkedArray)):
        as_of = pa.array([as_of] * n, VERDICT_SCHEMA.field("as_of").type)
    return pa.table({
        "account_id": pa.array(account_id, pa.string()),
        "action": pa.array(np.asarray(ACTIONS, dtype=object)[severity.astype(np.int64)] if n else [], pa.string()),
        "score": pa.array(np.clip(score, 0.0, 1.0), pa.float64()),
        "campaign_id": pa.nulls(n, pa.string()),
        "reasons": pa.array(list(reasons), pa.list_(pa.string())),
        "as_of": as_of.cast(VERDICT_SCHEMA.field("as_of").type),
    }, schema=VERDICT_SCHEMA)
