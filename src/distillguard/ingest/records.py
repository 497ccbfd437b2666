"""Python-side handling of individual records: shapes, flattening and typing.

Fast readers hand whole Arrow tables to normalize.py. Records that need per-record care (a
malformed line, an OpenAI request/response pair, an OpenTelemetry export) come through here:
each becomes a flat dict keyed by canonical names, and a batch of them becomes an all-text
Arrow table plus a per-row ``_pre_reason`` for faults only Python can see (a list where text
was expected). normalize.py then applies exactly the same rules as on the fast path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import pyarrow as pa

from distillguard.ingest import openai_pairs, otel
from distillguard.ingest.normalize import LINE, PRE_REASON, RECORD
from distillguard.ingest.keys import canonical_keys, flatten
from distillguard.schema import BY_NAME, COLUMNS


#: one parsed value -> its records (a dict), or reasons (a str, or a (str, part) pair)
Expander = Callable[[Any], Iterator[dict[str, Any] | str | tuple[str, Any]]]


@dataclass(slots=True)
class Rejected:
    """A record refused before normalisation (unparseable, not an object, not a GenAI span)."""

    record: int
    line: int | None
    reason: str
    raw: str
    exchange_id: str | None = None


def expand(obj: Any) -> Iterator[dict[str, Any] | str | tuple[str, Any]]:
    """Yield flat canonical dicts for one parsed JSON value, or a reason string per bad row."""
    if not isinstance(obj, dict):
        yield f"malformed record: expected a JSON object, got {type(obj).__name__}"
        return
    if otel.is_otlp_export(obj):
        yield from otel.expand_otlp(obj)
    elif otel.is_sdk_span(obj):
        yield otel.from_sdk_span(obj)
    elif openai_pairs.is_pair(obj):
        yield openai_pairs.to_flat(obj)
    else:
        yield canonical_keys(flatten(obj))


def _as_text(name: str, value: Any) -> tuple[str | None, str | None]:
    """(text for the column, or a reason the value has the wrong type)."""
    if value is None:
        return None, None
    if isinstance(value, str):
        return value, None
    if isinstance(value, bool):
        return None, f"wrong type: {name} cannot be a boolean"
    if isinstance(value, (int, float)):
        if name == "prompt":
            return None, f"wrong type: {name} cannot be a number"
        return repr(value) if isinstance(value, float) else str(value), None
    word = "an object" if isinstance(value, dict) else "a list" if isinstance(value, list) else type(value).__name__
    return None, f"wrong type: {name} cannot be {word}"


def to_table(rows: list[tuple[dict[str, Any], int, int | None]]) -> pa.Table:
    """Build an all-text Arrow table (canonical names) from (record, record_no, line_no)."""
    columns: dict[str, list[str | None]] = {c.name: [] for c in COLUMNS}
    pre: list[str | None] = []
    for record, _, _ in rows:
        reasons = []
        for col in COLUMNS:
            text, reason = _as_text(col.name, record.get(col.name))
            columns[col.name].append(text)
            if reason:
                reasons.append(reason)
        pre.append("; ".join(reasons) if reasons else None)
    arrays = {name: pa.array(values, pa.string()) for name, values in columns.items()
              if any(v is not None for v in values) or BY_NAME[name].required}
    arrays[RECORD] = pa.array([r for _, r, _ in rows], pa.int64())
    arrays[LINE] = pa.array([ln for _, _, ln in rows], pa.int64())
    arrays[PRE_REASON] = pa.array(pre, pa.string())
    return pa.table(arrays)


@dataclass(slots=True)
class Batch:
    """What a reader hands over: records as an Arrow table plus those refused outright.

    ``table`` keeps input column names (normalize.py maps them) plus ``_record``/``_line``;
    ``raw(i)`` gives the original text of row ``i`` for the quarantine; ``position`` is the
    number of input bytes consumed so far, for the progress bar.
    """

    table: pa.Table | None
    rejected: list[Rejected]
    raw: Any
    position: int

    @property
    def rows_in(self) -> int:
        return (self.table.num_rows if self.table is not None else 0) + len(self.rejected)


class Numbering:
    """Hands out 1-based record numbers for one file."""

    def __init__(self) -> None:
        self.next = 1

    def take(self) -> int:
        n = self.next
        self.next += 1
        return n


def parsed_batch(items: list[tuple[Any, int | None, str]], numbering: Numbering, position: int,
                 parse_errors: dict[int, str] | None = None,
                 expander: Expander | None = None) -> Batch:
    """Slow path: ``items`` are (parsed JSON value or None, line, raw text) in file order.

    ``parse_errors`` maps an item index to the reason its text could not be parsed;
    ``expander`` turns one value into records (``expand`` unless a named format says otherwise).
    """
    expander = expander or expand
    rows: list[tuple[dict[str, Any], int, int | None]] = []
    raws: list[str] = []
    rejected: list[Rejected] = []
    parse_errors = parse_errors or {}
    for i, (value, line, raw) in enumerate(items):
        if i in parse_errors:
            rejected.append(Rejected(numbering.take(), line, parse_errors[i], raw))
            continue
        for record in expander(value):
            number = numbering.take()
            if isinstance(record, tuple):  # (reason, the part of the value it concerns)
                reason, part = record
                rejected.append(Rejected(number, line, reason, json.dumps(part, ensure_ascii=False, default=str)))
            elif isinstance(record, str):
                rejected.append(Rejected(number, line, record, raw))
            else:
                rows.append((record, number, line))
                raws.append(raw)
    table = to_table(rows) if rows else None
    return Batch(table, rejected, raws.__getitem__, position)
