"""Turn a batch of input records (any column names, any Arrow types) into canonical rows.

Readers hand over Arrow tables whose columns still carry the input's names and types. This
module maps aliases onto canonical names, validates and converts every column in one
vectorised DuckDB query, and gives each row either canonical values or a reason it must be
quarantined. Conversions are chosen per (canonical kind, input Arrow type), so a Parquet file
with real timestamps and a CSV file with ISO strings go through the same rules.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

import pyarrow as pa
import pyarrow.compute as pc

from distillguard.schema import ALIASES, BY_NAME, COLUMNS, Column

#: Timestamps outside this window are rejected: no LLM API log predates 2000, and a date far
#: in the future is a unit error (e.g. nanoseconds read as seconds), not a real request.
EARLIEST = "2000-01-01"
LATEST = "2100-01-01"

RECORD = "_record"  # 1-based position of the record in its file
LINE = "_line"  # 1-based line in the file, where the format has lines
PRE_REASON = "_pre_reason"  # reason found by a reader before normalisation (slow path)
IP_BAD = "_ip_bad"
BATCH_INDEX = "_idx"  # row index inside the batch, to fetch the raw text of rejected rows
META = (RECORD, LINE, PRE_REASON)


def canonicalize_columns(table: pa.Table) -> pa.Table:
    """Flatten nested structs, rename aliases to canonical names, drop unknown columns.

    When several input columns map to one canonical column (``model`` and
    ``gen_ai.request.model``), the canonical name wins, then aliases in declared order.
    """
    table = _flatten(table)
    chosen: dict[str, tuple[int, pa.ChunkedArray]] = {}
    for name, column in zip(table.column_names, table.columns):
        if name in META:
            continue
        target = ALIASES.get(name)
        if target is None:
            continue
        rank = 0 if name == target else 1 + BY_NAME[target].aliases.index(name)
        current = chosen.get(target)
        if current is None:
            chosen[target] = (rank, column)
        else:
            first, second = sorted([(rank, column), current], key=lambda rc: rc[0])
            chosen[target] = (first[0], _coalesce(first[1], second[1]))
    arrays = {name: column for name, (_, column) in chosen.items()}
    for meta in META:
        if meta in table.column_names:
            arrays[meta] = table.column(meta)
    return pa.table(arrays)


def _flatten(table: pa.Table) -> pa.Table:
    while any(pa.types.is_struct(f.type) and f.name not in ALIASES for f in table.schema):
        names, columns = [], []
        for f, col in zip(table.schema, table.columns):
            if pa.types.is_struct(f.type) and f.name not in ALIASES:
                for i, child in enumerate(f.type):
                    names.append(f"{f.name}.{child.name}")
                    columns.append(pc.struct_field(col, [i]))
            else:
                names.append(f.name)
                columns.append(col)
        table = pa.table(dict(zip(names, columns)))
    return table


def _coalesce(first: pa.ChunkedArray, second: pa.ChunkedArray) -> pa.ChunkedArray:
    if first.type != second.type:
        first, second = _as_text(first), _as_text(second)
    return pc.coalesce(first, second)


def _as_text(col: pa.ChunkedArray) -> pa.ChunkedArray:
    if _is_scalar_type(col.type):
        return pc.cast(col, pa.string())
    return pa.chunked_array([pa.nulls(len(col), pa.string())])


def _is_scalar_type(t: pa.DataType) -> bool:
    return not (pa.types.is_nested(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t))


def neutralize_nested(table: pa.Table) -> tuple[pa.Table, set[str]]:
    """Replace nested or binary values in canonical columns by a word naming their type.

    Every canonical column holds a scalar, so such values are wrong whatever they contain; the
    word ("a list", "an object") is what the quarantine reason shows. This also keeps Arrow
    types DuckDB cannot take (structs with no fields) out of the query.
    """
    wrong = set()
    for name, column in zip(table.column_names, table.columns):
        if name in META or name not in BY_NAME:
            continue
        t = column.type
        if _is_scalar_type(t) and not pa.types.is_boolean(t) and not pa.types.is_null(t):
            continue
        if pa.types.is_null(t):
            table = table.set_column(table.column_names.index(name), name, pa.nulls(len(column), pa.string()))
            continue
        word = pa.scalar(_type_word(t), pa.string())
        words = pc.if_else(pc.is_null(column), pa.scalar(None, pa.string()), word)
        table = table.set_column(table.column_names.index(name), name, words)
        wrong.add(name)
    return table, wrong


def prepare_ips(table: pa.Table) -> pa.Table:
    """Replace ``client_ip`` by its canonical text and add ``_ip_bad`` for invalid addresses.

    Validation runs once per distinct address in the batch (NATs and proxies repeat a few
    addresses many times), with a cache across batches.
    """
    if "client_ip" not in table.column_names:
        return table
    col = table.column("client_ip")
    t = col.type
    if pa.types.is_dictionary(t):
        col = col.cast(t.value_type)
        t = col.type
    if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
        bad = pc.invert(pc.is_null(col))
        canonical = pa.nulls(len(col), pa.string())
    else:
        uniques = pc.unique(col).drop_null()
        mapped = pa.array([_canonical_ip(v) for v in uniques.to_pylist()], pa.string())
        idx = pc.index_in(col, value_set=uniques)
        canonical = pc.take(mapped, idx)
        present = pc.and_(pc.invert(pc.is_null(col)), pc.not_equal(pc.utf8_trim_whitespace(col), ""))
        bad = pc.and_(pc.fill_null(present, False), pc.is_null(canonical))
    i = table.column_names.index("client_ip")
    table = table.set_column(i, "client_ip", canonical)
    return table.append_column(IP_BAD, bad)


@lru_cache(maxsize=1_000_000)
def _canonical_ip(text: str) -> str | None:
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


# --- the SQL -------------------------------------------------------------------------------

def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _epoch(x: str, integral: bool) -> str:
    """Epoch number -> TIMESTAMPTZ, unit guessed by magnitude (s, ms, us, ns)."""
    if integral:
        micros = (f"CASE WHEN abs({x}) < 100000000000 THEN {x} * 1000000 "
                  f"WHEN abs({x}) < 100000000000000 THEN {x} * 1000 "
                  f"WHEN abs({x}) < 100000000000000000 THEN {x} "
                  f"ELSE {x} // 1000 END")
        return f"CAST(make_timestamp(TRY_CAST({micros} AS BIGINT)) AS TIMESTAMPTZ)"
    seconds = (f"CASE WHEN abs({x}) < 1e11 THEN {x} WHEN abs({x}) < 1e14 THEN {x} / 1e3 "
               f"WHEN abs({x}) < 1e17 THEN {x} / 1e6 ELSE {x} / 1e9 END")
    return f"CASE WHEN isfinite({x}) AND abs({x}) < 1e19 THEN to_timestamp({seconds}) END"


def _convert(col: Column, t: pa.DataType) -> tuple[str, bool]:
    """SQL converting input column ``col`` of Arrow type ``t``; bool = type is wrong outright."""
    q = _q(col.name)
    if pa.types.is_dictionary(t):
        t = t.value_type
    is_text = pa.types.is_string(t) or pa.types.is_large_string(t)
    is_int = pa.types.is_integer(t)
    is_float = pa.types.is_floating(t) or pa.types.is_decimal(t)
    if col.kind in ("string", "ip"):
        if is_text:
            return (q if col.name == "prompt" else f"NULLIF(CAST({q} AS VARCHAR), '')"), False
        if col.name != "prompt" and (is_int or is_float or pa.types.is_temporal(t)):
            return f"CAST({q} AS VARCHAR)", False
        return "NULL", True
    if col.kind == "timestamp":
        if pa.types.is_timestamp(t) or pa.types.is_date(t):
            return f"CAST({q} AS TIMESTAMPTZ)", False
        if is_int:
            return _epoch(q, integral=True), False
        if is_float:
            return _epoch(f"CAST({q} AS DOUBLE)", integral=False), False
        if is_text:
            as_num = f"TRY_CAST(NULLIF(trim({q}), '') AS DOUBLE)"
            return f"COALESCE(TRY_CAST({q} AS TIMESTAMPTZ), {_epoch(as_num, integral=False)})", False
        return "NULL", True
    if col.kind == "integer":
        if is_int:
            return f"TRY_CAST({q} AS BIGINT)", False
        if is_float:
            d = f"CAST({q} AS DOUBLE)"
            return f"CASE WHEN isfinite({d}) AND {d} = round({d}) THEN TRY_CAST({d} AS BIGINT) END", False
        if is_text:
            s = f"trim({q})"
            d = f"TRY_CAST({s} AS DOUBLE)"
            return (f"CASE WHEN regexp_full_match({s}, '[+-]?[0-9]+') THEN TRY_CAST({s} AS BIGINT) "
                    f"WHEN isfinite({d}) AND {d} = round({d}) AND abs({d}) < 9e15 "
                    f"THEN CAST({d} AS BIGINT) END"), False
        return "NULL", True
    if col.kind == "number":
        if is_int or is_float:
            d = f"CAST({q} AS DOUBLE)"
            return f"CASE WHEN isfinite({d}) THEN {d} END", False
        if is_text:
            d = f"TRY_CAST(trim({q}) AS DOUBLE)"
            return f"CASE WHEN isfinite({d}) THEN {d} END", False
        return "NULL", True
    raise AssertionError(col.kind)


def _present(col: Column, t: pa.DataType) -> str:
    """SQL true when the input holds a value (empty text counts as absent, except prompt)."""
    q = _q(col.name)
    vt = t.value_type if pa.types.is_dictionary(t) else t
    if (pa.types.is_string(vt) or pa.types.is_large_string(vt)) and col.name != "prompt":
        return f"({q} IS NOT NULL AND trim(CAST({q} AS VARCHAR)) <> '')"
    return f"({q} IS NOT NULL)"


def normalize_sql(schema: pa.Schema, source: str, wrong: set[str] = frozenset()) -> str:
    """One query over ``source`` giving canonical columns, ``_record``, ``_line``, ``_reason``.

    ``wrong`` names columns that neutralize_nested found to hold non-scalar values.
    """
    inner, reasons = [], []
    names = set(schema.names)
    for col in COLUMNS:
        v = _q("_v_" + col.name)
        if col.name not in names:
            inner.append(f"CAST(NULL AS {col.duckdb_type}) AS {v}")
            if col.required:
                reasons.append(f"'missing field: {col.name}'")
            continue
        t = schema.field(col.name).type
        if col.name in wrong:
            expr, is_wrong = "NULL", True
        else:
            expr, is_wrong = _convert(col, t)
        inner.append(f"CAST({expr} AS {col.duckdb_type}) AS {v}")
        present = f"({_q(col.name)} IS NOT NULL)" if col.name in wrong else _present(col, t)
        shown = f"left(CAST({_q(col.name)} AS VARCHAR), 80)"
        checks = []
        if col.required:
            checks.append(f"WHEN NOT {present} THEN 'missing field: {col.name}'")
        if col.name in wrong:
            checks.append(f"WHEN {present} THEN 'wrong type: {col.name} cannot be ' || {_q(col.name)}")
        elif is_wrong:
            checks.append(f"WHEN {present} THEN 'wrong type: {col.name} cannot be {_type_word(t)}'")
        elif col.kind == "timestamp":
            checks.append(f"WHEN {present} AND ({v} IS NULL OR {v} < TIMESTAMPTZ '{EARLIEST}' "
                          f"OR {v} >= TIMESTAMPTZ '{LATEST}') "
                          f"THEN 'bad timestamp: {col.name}=' || {shown}")
        elif col.kind == "ip":
            checks.append(f"WHEN {_q(IP_BAD)} THEN 'bad IP: {col.name} is not an IPv4 or IPv6 address'")
        elif col.kind in ("integer", "number"):
            word = "an integer" if col.kind == "integer" else "a number"
            checks.append(f"WHEN {present} AND {v} IS NULL THEN 'wrong type: {col.name} is not {word}: ' || {shown}")
            if col.non_negative:
                checks.append(f"WHEN {v} < 0 THEN 'bad value: {col.name} is negative: ' || {shown}")
        if checks:
            reasons.append("CASE " + " ".join(checks) + " END")
    meta = [f"{_q(m)}" for m in (RECORD, LINE) if m in names]
    if PRE_REASON in names:
        reasons.insert(0, _q(PRE_REASON))
    if BATCH_INDEX in names:
        meta.append(_q(BATCH_INDEX))
    reason = f"NULLIF(concat_ws('; ', {', '.join(reasons) or 'NULL'}), '')"
    if PRE_REASON in names:  # an unreadable record has no fields worth judging one by one
        reason = f"CASE WHEN starts_with({_q(PRE_REASON)}, 'malformed record') THEN {_q(PRE_REASON)} ELSE {reason} END"
    inner_sql = ", ".join(inner + meta + [f"{reason} AS _reason"])
    outer = [f"CASE WHEN _reason IS NULL THEN {_q('_v_' + c.name)} END AS {_q(c.name)}"
             if c.kind == "timestamp" else f"{_q('_v_' + c.name)} AS {_q(c.name)}" for c in COLUMNS]
    for m in (RECORD, LINE):
        outer.append(_q(m) if m in names else f"CAST(NULL AS BIGINT) AS {_q(m)}")
    outer.append(_q(BATCH_INDEX) if BATCH_INDEX in names else f"CAST(NULL AS BIGINT) AS {_q(BATCH_INDEX)}")
    outer += ["_reason", "split_part(_reason, ':', 1) AS _reason_code"]
    return f"SELECT {', '.join(outer)} FROM (SELECT {inner_sql} FROM {source})"


def _type_word(t: pa.DataType) -> str:
    if pa.types.is_struct(t) or pa.types.is_map(t):
        return "an object"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return "a list"
    if pa.types.is_boolean(t):
        return "a boolean"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "binary"
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "a number"
    return str(t)
