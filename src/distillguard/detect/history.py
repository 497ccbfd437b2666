"""Evidence that accumulates: what an earlier scan found is not dropped while the evidence stays.

A scan over a longer window looks at more entities and more windows, so its corrections for the
looks grow and a finding that was within budget yesterday can fall just outside it today, although
the accounts did nothing different. An account that an earlier scan put at throttle or stronger
therefore keeps that action while the current scan still finds *some* evidence against it (a
monitor-level verdict or any statistical result), and while that scan lies within the lookback. It
is lifted when its evidence is gone (its behaviour changed, or it stopped) or by an operator.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distillguard.store.verdicts import SEVERITY

STRONG = ("throttle", "fallback", "block")


HELD = "held from the scan as of "


def found_at(row: dict) -> datetime:
    """When the action of an earlier verdict was found: its scan, or for a verdict that was itself
    held, the scan it was held from (so a hold never outlives the lookback of its finding)."""
    first = (row.get("reasons") or [""])[0]
    if first.startswith(HELD):
        try:
            return datetime.fromisoformat(first[len(HELD):].split(" ", 1)[0])
        except ValueError:
            pass
    return row["as_of"]


def carried(verdicts: pa.Table, previous: pa.Table | None, evidenced: set[str], as_of: datetime,
            lookback_days: float, capped: frozenset[str] = frozenset()) -> pa.Table:
    """``verdicts`` with earlier throttle+ actions kept where the evidence stays (module docstring).

    ``previous`` holds an earlier scan's verdicts (account_id, action, campaign_id, reasons, as_of);
    ``evidenced`` the accounts the current scan still finds evidence against; ``capped`` accounts
    (allowlisted organisations) are never held.
    """
    if previous is None or previous.num_rows == 0:
        return verdicts
    oldest = as_of - timedelta(days=lookback_days)
    earlier: dict[str, dict] = {}
    strong = previous.filter(pc.is_in(previous.column("action"), value_set=pa.array(STRONG)))
    for row in strong.select(["account_id", "action", "campaign_id", "reasons", "as_of"]).to_pylist():
        if row["as_of"] is not None and row["as_of"] < as_of and found_at(row) >= oldest:
            earlier[row["account_id"]] = row
    if not earlier:
        return verdicts
    at = [i for i, a in enumerate(verdicts.column("account_id").to_pylist())
          if a in earlier and a in evidenced and a not in capped]
    held: dict[int, dict] = {}
    for i, row in zip(at, verdicts.take(pa.array(at, pa.int64())).to_pylist()):
        before = earlier[row["account_id"]]
        if SEVERITY[before["action"]] <= SEVERITY.get(row["action"], 0):
            continue
        first = (before["reasons"] or ["(no reason kept)"])[0]
        if first.startswith(HELD):
            line = first
        else:
            line = f"{HELD}{before['as_of'].isoformat()} ({before['action']}), while evidence stays: {first}"
        row["reasons"] = [line] + list(row["reasons"] or [])
        row["action"] = before["action"]
        row["campaign_id"] = row["campaign_id"] or before["campaign_id"]
        held[i] = row
    return with_rows(verdicts, held)


def with_rows(table: pa.Table, replaced: dict[int, dict]) -> pa.Table:
    """``table`` with the rows at the positions of ``replaced`` replaced (each a whole row), in its
    order: the quarter of a million verdicts a full-scale scan changes a few of are not converted
    to Python and back."""
    if not replaced:
        return table
    at = sorted(replaced)
    new = pa.Table.from_pylist([replaced[i] for i in at], schema=table.schema)
    order = np.arange(table.num_rows)
    order[at] = table.num_rows + np.arange(len(at))
    return pa.concat_tables([table, new]).take(pa.array(order))
