"""Turn a batch of input records (any column names, any Arrow types) into canonical rows.

Readers hand over Arrow tables whose columns still carry the input's names and types. This
module maps aliases onto canonical names, validates and converts every column in one
vectorised DuckDB query, and gives each row either canonical values or a reason it must be
quarantined. Conversions are chosen per (canonical kind, input Arrow type), so a Parquet file
with real timestamps and a CSV file with ISO strings go through the same rules.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from functools import lru_cache

import pyarrow as pa
import pyarrow.compute as pc

from distillguard.ingest.keys import PARENTS
from distillguard.schema import ALIASES, BY_NAME, COLUMNS, Column

#: Timestamps outside this window are rejected: no LLM API log predates 2000, and a date far
#: in the future is a unit error (e.g. nanoseconds read as seconds), not a real request.
EARLIEST = "2000-01-01"
LATEST = "2100-01-01"
#: The widest UTC offset a real time zone has (Kiribati, +14:00; the lowest is -12:00). DuckDB
#: accepts any two-digit offset (``+25:00``, ``-99:59``), which can only be a corrupt value.
MAX_OFFSET_MINUTES = 14 * 60

RECORD = "_record"  # 1-based position of the record in its file
LINE = "_line"  # 1-based line in the file, where the format has lines
PRE_REASON = "_pre_reason"  # reason found by a reader before normalisation (slow path)
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


def _nested(f: pa.Field) -> bool:
    """A struct column read as its fields (keys.flatten's rule for one record)."""
    return pa.types.is_struct(f.type) and (f.name not in ALIASES or f.name in PARENTS)


def _flatten(table: pa.Table) -> pa.Table:
    while any(_nested(f) for f in table.schema):
        names, columns = [], []
        for f, col in zip(table.schema, table.columns):
            if _nested(f):
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


#: a canonical dotted-quad IPv4 address (no leading zeros): valid and canonical as it stands
IPV4 = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}"
IP_MAP = "_ip_map"


def register_ips(con, source: str, schema: pa.Schema) -> None:
    """Validate the client IPs of ``source`` that are not plain IPv4, once per distinct value.

    Plain IPv4 is checked by a regular expression inside the query; everything else (IPv6,
    junk) is parsed by Python's ipaddress once per distinct text and remembered in ``_ip_map``
    for the rest of the connection, so NATs and proxies repeating an address cost nothing.
    """
    con.execute(f"CREATE TEMP TABLE IF NOT EXISTS {IP_MAP} (_ip_raw VARCHAR, _ip_canonical VARCHAR)")
    if "client_ip" not in schema.names or pa.types.is_nested(schema.field("client_ip").type):
        return
    values = [v for (v,) in con.execute(
        f"SELECT DISTINCT CAST(client_ip AS VARCHAR) AS v FROM {source} WHERE client_ip IS NOT NULL "
        f"AND NOT regexp_full_match(CAST(client_ip AS VARCHAR), '{IPV4}') "
        f"EXCEPT SELECT _ip_raw FROM {IP_MAP}").fetchall()]
    if values:
        mapping = pa.table({"_ip_raw": pa.array(values, pa.string()),
                            "_ip_canonical": pa.array([_canonical_ip(v) for v in values], pa.string())})
        con.register("_ip_new", mapping)
        con.execute(f"INSERT INTO {IP_MAP} SELECT * FROM _ip_new")
        con.unregister("_ip_new")


@lru_cache(maxsize=1_000_000)
def _canonical_ip(text: str) -> str | None:
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


#: the column that holds an e-mail address's fingerprint (an address given under its input names
#: is hashed), and the column that the address's domain fills where the input gives none
FINGERPRINTED = "email_fingerprint"
ADDRESS_DOMAIN = "email_domain"
#: white space trimmed from both ends of an address; an address is one "@" between two runs of
#: anything else (patterns read the same by Python's re and DuckDB's RE2)
_SPACE = r"\t\n\r\f\v "
_ADDRESS = f"[^@{_SPACE}]+@[^@{_SPACE}]+"
_FINGERPRINT = "[0-9a-f]{64}"
_UPPER, _LOWER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz"


def email_fingerprint(value: str) -> str | None:
    """The fingerprint an e-mail address is stored as: the hex sha256 of its UTF-8 bytes once
    trimmed of white space and with A-Z lowered (ASCII only, so that every engine and every
    partner of a sharing group computes the same bytes). A value that already is 64 hex digits
    is a fingerprint and kept (lowered); anything else is None. normalize_sql applies the same
    rule in SQL; a property test holds the two together."""
    text = re.sub(f"^[{_SPACE}]+|[{_SPACE}]+$", "", value).translate(str.maketrans(_UPPER, _LOWER))
    if re.fullmatch(_FINGERPRINT, text):
        return text
    if re.fullmatch(_ADDRESS, text):
        return hashlib.sha256(text.encode("utf-8")).hexdigest()
    return None


#: an e-mail address inside free text (a quarantined record's raw text)
_ADDRESS_IN_TEXT = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


def scrub_addresses(text: str) -> str:
    """``text`` with every e-mail address in it replaced by ``email:sha256:`` and its fingerprint,
    so that the quarantine, which keeps a rejected record's raw text, keeps no address either."""
    return _ADDRESS_IN_TEXT.sub(lambda m: "email:sha256:" + email_fingerprint(m.group(0)), text)


def _address_sql(q: str) -> str:
    """The input ``q`` trimmed and lowered as email_fingerprint does."""
    return (f"translate(regexp_replace(CAST({q} AS VARCHAR), '^[{_SPACE}]+|[{_SPACE}]+$', '', 'g'), "
            f"'{_UPPER}', '{_LOWER}')")


def _fingerprint_sql(q: str) -> str:
    a = _address_sql(q)
    return (f"CASE WHEN regexp_full_match({a}, '{_FINGERPRINT}') THEN {a} "
            f"WHEN regexp_full_match({a}, '{_ADDRESS}') THEN sha256({a}) END")


def _domain_sql(q: str) -> str:
    """The domain of the address in ``q`` (NULL when ``q`` holds no address, or a fingerprint)."""
    a = _address_sql(q)
    return f"CASE WHEN regexp_full_match({a}, '{_ADDRESS}') THEN split_part({a}, '@', 2) END"


# --- the SQL -------------------------------------------------------------------------------

def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _epoch(x: str, integral: bool) -> str:
    """Epoch number -> TIMESTAMPTZ, unit guessed by magnitude (s, ms, us, ns)."""
    if integral:
        size = f"abs(CAST({x} AS DOUBLE))"  # abs() of the lowest BIGINT overflows
        micros = (f"CASE WHEN {size} < 100000000000 THEN {x} * 1000000 "
                  f"WHEN {size} < 100000000000000 THEN {x} * 1000 "
                  f"WHEN {size} < 100000000000000000 THEN {x} "
                  f"ELSE {x} // 1000 END")
        return f"CAST(make_timestamp(TRY_CAST({micros} AS BIGINT)) AS TIMESTAMPTZ)"
    seconds = (f"CASE WHEN abs({x}) < 1e11 THEN {x} WHEN abs({x}) < 1e14 THEN {x} / 1e3 "
               f"WHEN abs({x}) < 1e17 THEN {x} / 1e6 ELSE {x} / 1e9 END")
    return f"CASE WHEN isfinite({x}) AND abs({x}) < 1e19 THEN to_timestamp({seconds}) END"


def _convert(col: Column, t: pa.DataType, ip_passthrough: bool = False) -> tuple[str, bool]:
    """SQL converting input column ``col`` of Arrow type ``t``; bool = type is wrong outright."""
    q = _q(col.name)
    if pa.types.is_dictionary(t):
        t = t.value_type
    is_text = pa.types.is_string(t) or pa.types.is_large_string(t)
    is_int = pa.types.is_integer(t)
    is_float = pa.types.is_floating(t) or pa.types.is_decimal(t)
    if col.kind == "ip":
        if is_text or is_int:
            text = f"CAST({q} AS VARCHAR)"
            other = f"NULLIF({text}, '')" if ip_passthrough else f"{IP_MAP}._ip_canonical"
            return f"CASE WHEN regexp_full_match({text}, '{IPV4}') THEN {text} ELSE {other} END", False
        return "NULL", True
    if col.name == FINGERPRINTED:
        return (_fingerprint_sql(q), False) if is_text else ("NULL", True)
    if col.kind == "string":
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


def _offset_check(q: str, name: str) -> str:
    """CASE branch: the text timestamp ``q`` ends in a UTC offset no time zone has."""
    offset = f"regexp_extract(trim({q}), ':[0-9]{{2}}(?:[.,][0-9]*)?\\s*([+-][0-9]{{2}}(?::?[0-9]{{2}}){{0,2}})$', 1)"
    hours = f"TRY_CAST(substr({offset}, 2, 2) AS INTEGER)"
    minutes = f"coalesce(TRY_CAST(substr(replace({offset}, ':', ''), 4, 2) AS INTEGER), 0)"
    return (f"WHEN {offset} <> '' AND ({minutes} >= 60 OR {hours} * 60 + {minutes} > {MAX_OFFSET_MINUTES}) "
            f"THEN 'bad timestamp: {name} has UTC offset ' || {offset} || ', beyond -14:00..+14:00'")


def _is_text(t: pa.DataType) -> bool:
    vt = t.value_type if pa.types.is_dictionary(t) else t
    return pa.types.is_string(vt) or pa.types.is_large_string(vt)


def _present(col: Column, t: pa.DataType) -> str:
    """SQL true when the input holds a value (empty text counts as absent, except prompt)."""
    q = _q(col.name)
    vt = t.value_type if pa.types.is_dictionary(t) else t
    if (pa.types.is_string(vt) or pa.types.is_large_string(vt)) and col.name != "prompt":
        return f"({q} IS NOT NULL AND trim(CAST({q} AS VARCHAR)) <> '')"
    return f"({q} IS NOT NULL)"


def normalize_sql(schema: pa.Schema, source: str, wrong: set[str] = frozenset(), *,
                  ip_passthrough: bool = False) -> str:
    """One query over ``source`` giving canonical columns, ``_record``, ``_line``, ``_reason``.

    ``wrong`` names columns that neutralize_nested found to hold non-scalar values. With
    ``ip_passthrough`` an address that is not plain IPv4 is kept as given, unvalidated: the
    caller must check those values itself (fast_jsonl does, on the distinct values written).
    """
    inner, reasons = [], []
    names = set(schema.names)
    # an address given (not a fingerprint) also names the account's e-mail domain
    address = FINGERPRINTED in names and FINGERPRINTED not in wrong and _is_text(schema.field(FINGERPRINTED).type)
    for col in COLUMNS:
        v = _q("_v_" + col.name)
        derived = _domain_sql(_q(FINGERPRINTED)) if col.name == ADDRESS_DOMAIN and address else None
        if col.name not in names:
            inner.append(f"CAST({derived or 'NULL'} AS {col.duckdb_type}) AS {v}")
            if col.required:
                reasons.append(f"'missing field: {col.name}'")
            continue
        t = schema.field(col.name).type
        if col.name in wrong:
            expr, is_wrong = "NULL", True
        else:
            expr, is_wrong = _convert(col, t, ip_passthrough)
        if derived is not None:
            expr = f"coalesce({expr}, {derived})"
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
            # cheap tests first: CASE evaluates the expensive ``present`` only where needed
            checks.append(f"WHEN ({v} IS NULL OR {v} < TIMESTAMPTZ '{EARLIEST}' "
                          f"OR {v} >= TIMESTAMPTZ '{LATEST}') AND {present} "
                          f"THEN 'bad timestamp: {col.name}=' || {shown}")
            if _is_text(t):
                checks.append(_offset_check(_q(col.name), col.name))
        elif col.name == FINGERPRINTED:  # the value is not shown: it may be an address
            checks.append(f"WHEN {v} IS NULL AND {present} THEN 'bad value: {col.name} is neither an e-mail "
                          "address nor a sha256 fingerprint (64 hex digits)'")
        elif col.kind == "ip":
            checks.append(f"WHEN {v} IS NULL AND {present} THEN 'bad IP: {col.name} is not an IPv4 or IPv6 address'")
        elif col.kind in ("integer", "number"):
            word = "an integer" if col.kind == "integer" else "a number"
            checks.append(f"WHEN {v} IS NULL AND {present} THEN 'wrong type: {col.name} is not {word}: ' || {shown}")
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
    joined = source
    if "client_ip" in names and "client_ip" not in wrong and not ip_passthrough:
        joined = f"{source} LEFT JOIN {IP_MAP} ON {IP_MAP}._ip_raw = CAST({source}.{_q('client_ip')} AS VARCHAR)"
    return f"SELECT {', '.join(outer)} FROM (SELECT {inner_sql} FROM {joined})"


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
