"""Per-account behaviour features, as a generic anomaly detector would be given them.

These are the features an engineer would hand an unsupervised model without knowing how any
campaign works: volume, tokens, timing, conversation shape, request parameters, network spread
and account age, each from the canonical columns alone. Every feature is computed from running
aggregates of the account's own exchanges before the as-of time (baselines.history), so the
value at each step of a replay comes from one pass over the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa

from distillguard.bench.baselines.history import US_PER, Accumulate, running_aggregates

HOURS = tuple(f"hour_{h:02d}" for h in range(24))


@dataclass(frozen=True)
class Feature:
    """One per-account feature: what it means, and whether it is heavy-tailed (modelled on log1p)."""

    name: str
    meaning: str
    heavy_tailed: bool
    value: Callable[[dict[str, np.ndarray]], np.ndarray]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=float), where=den > 0)


def _hour_entropy(c: dict[str, np.ndarray]) -> np.ndarray:
    counts = np.column_stack([c[h] for h in HOURS])
    p = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log2(p), 0.0).sum(axis=1)


FEATURES: tuple[Feature, ...] = (
    Feature("exchanges_per_active_day", "exchanges per UTC day with any exchange", True,
            lambda c: _ratio(c["exchanges"], c["active_days"])),
    Feature("output_tokens_per_active_day", "output tokens per active day", True,
            lambda c: _ratio(c["output_tokens"], c["active_days"])),
    Feature("output_tokens_per_exchange", "mean output tokens", True,
            lambda c: _ratio(c["output_tokens"], c["exchanges"])),
    Feature("active_days", "UTC days with any exchange", True, lambda c: c["active_days"]),
    Feature("account_age_days", "days from account creation (or first exchange) to the last exchange", True,
            lambda c: np.maximum(c["last_seen"] - c["created"], 0.0) / 86400.0),
    Feature("hour_entropy", "Shannon entropy of the UTC hour of day, bits (4.58 = around the clock)", False,
            _hour_entropy),
    Feature("single_turn_share", "share of conversations (turn_index 0) without a second turn", False,
            lambda c: 1.0 - _ratio(c["multi_turn"], c["conversations"])),
    Feature("max_tokens_mean", "mean max_tokens over requests that set it (0 if none)", True,
            lambda c: _ratio(c["max_tokens_sum"], c["max_tokens_set"])),
    Feature("tool_count_mean", "mean tool definitions per request", True,
            lambda c: _ratio(c["tools"], c["exchanges"])),
    Feature("output_input_ratio", "output tokens / input tokens", True,
            lambda c: _ratio(c["output_tokens"], np.maximum(c["input_tokens"], 1.0))),
    Feature("distinct_ips", "distinct client IPs", True, lambda c: c["ips"]),
    Feature("distinct_subnets", "distinct /24 (IPv4) or /48 (IPv6) client subnets", True, lambda c: c["subnets"]),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)

_ACCUMULATE: dict[str, Accumulate] = {
    "exchanges": "sum", "output_tokens": "sum", "input_tokens": "sum", "max_tokens_sum": "sum",
    "max_tokens_set": "sum", "tools": "sum", "last_seen": "max", "created": "min",
    **{h: "sum" for h in HOURS},
    "active_days": "sum", "ips": "sum", "subnets": "sum", "conversations": "sum", "multi_turn": "sum",
}

# /48 of an IPv6 address in canonical (compressed) text: expand "::" to zero groups, keep three.
_V6_HEAD = ("CASE WHEN split_part(client_ip, '::', 1) = '' THEN []::VARCHAR[] "
            "ELSE string_split(split_part(client_ip, '::', 1), ':') END")
_V6_TAIL = ("CASE WHEN NOT contains(client_ip, '::') OR split_part(client_ip, '::', 2) = '' THEN []::VARCHAR[] "
            "ELSE string_split(split_part(client_ip, '::', 2), ':') END")
_V6_ZEROS = f"list_resize([]::VARCHAR[], greatest(8 - len({_V6_HEAD}) - len({_V6_TAIL}), 0), '0')"
_SUBNET = f"""CASE WHEN contains(client_ip, ':')
    THEN array_to_string(list_slice(list_concat({_V6_HEAD}, {_V6_ZEROS}, {_V6_TAIL}), 1, 3), ':') || '::/48'
    ELSE regexp_replace(client_ip, '\\.[0-9]+$', '') || '.0/24' END"""

_HOUR_COLUMNS = ", ".join(f"(hour_of_day = {h})::DOUBLE * n AS {name}" for h, name in enumerate(HOURS))

# Exchanges are first folded per account, bin and clock hour (every exchange of a clock hour has
# the same hour of day). The first exchange of a day, an IP or a subnet carries the distinct
# count, in the bin where it became true. A conversation opens at turn 0 and stops being
# single-turn at turn 1 (a missing turn_index counts as an opening).
_EVENTS = f"""
    SELECT account_id, as_of, n AS exchanges, output_tokens, input_tokens, max_tokens_sum, max_tokens_set,
      tools, last_seen, created, conversations, multi_turn, {_HOUR_COLUMNS}
    FROM (
      SELECT account_id, as_of, (us // {US_PER["hour"]}) % 24 AS hour_of_day, count(*)::DOUBLE AS n,
        sum(output_tokens)::DOUBLE AS output_tokens, sum(input_tokens)::DOUBLE AS input_tokens,
        sum(max_tokens)::DOUBLE AS max_tokens_sum, count(max_tokens)::DOUBLE AS max_tokens_set,
        sum(tool_count)::DOUBLE AS tools, max(us)::DOUBLE / 1e6 AS last_seen,
        min(coalesce(epoch_us(account_created_at), us))::DOUBLE / 1e6 AS created,
        count(*) FILTER (WHERE coalesce(turn_index, 0) = 0)::DOUBLE AS conversations,
        count(*) FILTER (WHERE turn_index = 1)::DOUBLE AS multi_turn
      FROM scoped GROUP BY account_id, as_of, us // {US_PER["hour"]})
    UNION ALL BY NAME
    SELECT account_id, min(as_of) AS as_of, 1.0 AS active_days FROM scoped
    GROUP BY account_id, us // {US_PER["day"]}
    UNION ALL BY NAME
    SELECT account_id, min(as_of) AS as_of, 1.0 AS ips FROM scoped WHERE client_ip IS NOT NULL
    GROUP BY account_id, client_ip
    UNION ALL BY NAME
    SELECT account_id, min(as_of) AS as_of, 1.0 AS subnets FROM (
      SELECT account_id, {_SUBNET} AS subnet, min(as_of) AS as_of FROM scoped WHERE client_ip IS NOT NULL
      GROUP BY account_id, client_ip)
    GROUP BY account_id, subnet
"""


def account_features(con, as_ofs: Sequence[datetime]) -> pa.Table:
    """``account_id``, ``as_of`` and every feature of FEATURES (float64), one row per account and
    as-of time at which the account had new exchanges (see ``running_aggregates``)."""
    totals = running_aggregates(con, _EVENTS, _ACCUMULATE, as_ofs)
    counters = {name: totals[name].to_numpy() for name in _ACCUMULATE}
    columns = {f.name: pa.array(f.value(counters), pa.float64()) for f in FEATURES} if totals.num_rows else \
        {f.name: pa.array([], pa.float64()) for f in FEATURES}
    return pa.table({"account_id": totals["account_id"], "as_of": totals["as_of"], **columns})


def model_matrix(features: pa.Table) -> np.ndarray:
    """Features as a model sees them: heavy-tailed ones on a log1p scale."""
    if features.num_rows == 0:
        return np.zeros((0, len(FEATURES)))
    return np.column_stack([
        np.log1p(features[f.name].to_numpy()) if f.heavy_tailed else features[f.name].to_numpy()
        for f in FEATURES])
