"""Property-based: whatever arrives, ingest never crashes and never loses a row.

The only acceptable failure is a clear IngestError for the whole file (and then nothing of
that file is stored); otherwise rows in = stored + duplicates + quarantined, exactly.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from distillguard.errors import IngestError
from distillguard.ingest import ingest_paths
from distillguard.schema import ALIASES
from distillguard.store import Store

pytestmark = pytest.mark.slow  # many generated files, each ingested: 5-20 s a test
SETTINGS = settings(max_examples=int(__import__("os").environ.get("DG_HYPOTHESIS_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30),
    st.sampled_from(["2026-04-22T10:00:00Z", "1776852000", "192.0.2.1", "::1", "", "nan", "-5"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                      max_leaves=6)
keys = st.one_of(st.sampled_from(sorted(ALIASES)), st.text(max_size=12))
records = st.dictionaries(keys, values, max_size=12)
# records that at least look like exchanges, so they are not all rejected as a foreign file
exchange_like = st.fixed_dictionaries(
    {"exchange_id": st.one_of(st.text(max_size=8), st.integers()), "account_id": scalars, "prompt": values,
     "timestamp": scalars}).flatmap(lambda base: records.map(lambda extra: {**extra, **base}))


def _ingest(path: Path) -> tuple[Store, list] | None:
    store = Store(":memory:")
    try:
        return store, ingest_paths(store, [path])
    except IngestError:
        assert store.con.execute("SELECT count(*) FROM ingests").fetchone()[0] == 0
        return None


def _check_store_invariants(store: Store) -> None:
    bad = store.con.execute(
        "SELECT count(*) FROM exchanges WHERE exchange_id IS NULL OR account_id IS NULL OR prompt IS NULL "
        "OR timestamp IS NULL OR timestamp < TIMESTAMPTZ '2000-01-01' OR input_tokens < 0 OR output_tokens < 0"
    ).fetchone()[0]
    assert bad == 0
    n, distinct = store.con.execute("SELECT count(*), count(DISTINCT exchange_id) FROM exchanges").fetchone()
    assert n == distinct


def _balanced_jsonl(tmp_path_factory, objects):
    """Ingest ``objects`` as JSON lines and check that every line is accounted for and the store
    keeps its invariants; the ingest's result, or None where the file was refused whole."""
    path = tmp_path_factory.mktemp("p") / "a.jsonl"
    path.write_text("".join(json.dumps(o) + "\n" for o in objects))
    outcome = _ingest(path)
    if outcome is None:
        return None
    store, [result] = outcome
    assert result.balanced
    assert store.con.execute("SELECT count(*) FROM exchanges").fetchone()[0] == result.rows_stored
    _check_store_invariants(store)
    return result


@SETTINGS
@given(batch=st.lists(st.one_of(exchange_like, records), min_size=1, max_size=25))
def test_arbitrary_records_in_jsonl_are_all_accounted_for(tmp_path_factory, batch):
    result = _balanced_jsonl(tmp_path_factory, batch)
    assert result is None or result.rows_in == len(batch)


@SETTINGS
@given(batch=st.lists(exchange_like, min_size=1, max_size=15))
def test_arbitrary_records_in_a_json_array_are_all_accounted_for(tmp_path_factory, batch):
    path = tmp_path_factory.mktemp("p") / "a.json"
    path.write_text(json.dumps(batch))
    outcome = _ingest(path)
    if outcome is None:
        return
    store, [result] = outcome
    assert result.rows_in == len(batch) and result.balanced
    _check_store_invariants(store)


@SETTINGS
@given(cells=st.lists(st.lists(st.text(max_size=15), min_size=4, max_size=6), min_size=1, max_size=20))
def test_arbitrary_csv_cells_are_all_accounted_for(tmp_path_factory, cells):
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["exchange_id", "timestamp", "account_id", "prompt", "client_ip"])
    writer.writerows(cells)
    path = tmp_path_factory.mktemp("p") / "a.csv"
    path.write_text(out.getvalue())
    outcome = _ingest(path)
    assert outcome is not None
    store, [result] = outcome
    non_blank = sum(1 for row in cells if any(c != "" for c in row) or len(row) > 1)
    assert result.balanced and result.rows_in <= len(cells) and result.rows_in >= non_blank - len(cells)
    _check_store_invariants(store)


@SETTINGS
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".jsonl", ".json", ".csv"]))
def test_arbitrary_bytes_never_crash_ingest(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("p") / f"a{suffix}"
    path.write_bytes(data)
    outcome = _ingest(path)
    if outcome is None:
        return
    store, [result] = outcome
    assert result.balanced
    if suffix == ".jsonl":
        assert result.rows_in == sum(1 for line in data.split(b"\n") if line.strip())
    _check_store_invariants(store)


@SETTINGS
@given(lines=st.lists(st.one_of(exchange_like.map(json.dumps), st.text(max_size=40)), min_size=1, max_size=20))
def test_every_non_blank_jsonl_line_is_one_row_in(tmp_path_factory, lines):
    lines = [line.replace("\n", " ").replace("\r", " ") for line in lines]
    path = tmp_path_factory.mktemp("p") / "a.jsonl"
    path.write_text("\n".join(lines) + "\n")
    outcome = _ingest(path)
    if outcome is None:
        return
    _, [result] = outcome
    expected_min = sum(1 for line in lines if line.encode().strip())  # ASCII whitespace only
    # a line can expand to several rows only when it is an OTel export; these lines are not
    assert result.rows_in == expected_min and result.balanced


# --- every other parser: Parquet, OpenAI request/response pairs, OTel spans, compressed bytes ---

json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.one_of(keys, st.text(max_size=8)),
                                                                         inner, max_size=4), max_leaves=12)


messages = st.lists(st.one_of(json_values, st.fixed_dictionaries(
    {"role": st.one_of(st.sampled_from(["user", "system", "developer", "assistant"]), json_values),
     "content": json_values})), max_size=4)
openai_pairs = st.fixed_dictionaries(
    {"request": st.one_of(st.fixed_dictionaries({"messages": st.one_of(messages, json_values)}),
                          st.fixed_dictionaries({"prompt": json_values}),
                          st.fixed_dictionaries({"input": st.one_of(messages, json_values)})).flatmap(
        lambda body: st.dictionaries(st.sampled_from(["model", "max_tokens", "tools", "system", "instructions"]),
                                     json_values, max_size=3).map(lambda extra: {**extra, **body})),
     "response": json_values},
    optional={"account_id": json_values, "timestamp": json_values, "id": json_values, "client_ip": json_values})


@SETTINGS
@given(batch=st.lists(openai_pairs, min_size=1, max_size=10))
def test_arbitrary_openai_pairs_are_all_accounted_for(tmp_path_factory, batch):
    _balanced_jsonl(tmp_path_factory, batch)


attributes = st.one_of(
    st.lists(st.fixed_dictionaries({"key": st.one_of(keys, st.text(max_size=10)), "value": json_values}), max_size=5),
    st.dictionaries(st.one_of(keys, st.text(max_size=10)), json_values, max_size=5), json_values)
otlp_span = st.fixed_dictionaries({}, optional={
    "attributes": attributes, "spanId": json_values, "traceId": json_values, "startTimeUnixNano": json_values,
    "endTimeUnixNano": json_values, "events": json_values})
otlp_exports = st.fixed_dictionaries({"resourceSpans": st.lists(st.one_of(json_values, st.fixed_dictionaries(
    {"resource": st.one_of(json_values, st.fixed_dictionaries({"attributes": attributes})),
     "scopeSpans": st.one_of(json_values, st.lists(st.one_of(json_values, st.fixed_dictionaries(
         {"spans": st.one_of(json_values, st.lists(st.one_of(otlp_span, json_values), max_size=4))})),
         max_size=3))})), max_size=3)})
sdk_spans = st.fixed_dictionaries({"attributes": st.dictionaries(st.one_of(keys, st.text(max_size=10)), json_values,
                                                                 max_size=5)},
                                  optional={"context": json_values, "start_time": json_values,
                                            "end_time": json_values, "resource": json_values, "events": json_values})


@SETTINGS
@given(batch=st.lists(st.one_of(otlp_exports, sdk_spans), min_size=1, max_size=6))
def test_arbitrary_otel_exports_and_spans_are_all_accounted_for(tmp_path_factory, batch):
    _balanced_jsonl(tmp_path_factory, batch)


@SETTINGS
@given(batch=st.lists(json_values, min_size=1, max_size=10))
def test_arbitrary_json_values_as_records_are_all_accounted_for(tmp_path_factory, batch):
    _balanced_jsonl(tmp_path_factory, batch)
    path = tmp_path_factory.mktemp("p") / "a.json"
    path.write_text(json.dumps(batch))
    outcome = _ingest(path)
    if outcome is not None:
        assert outcome[1][0].balanced


arrow_columns = st.sampled_from([
    (pa.string(), st.one_of(st.none(), st.text(max_size=20), st.sampled_from(["2026-04-22T10:00:00Z", "::1"]))),
    (pa.int64(), st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1))),
    (pa.float64(), st.one_of(st.none(), st.floats())),
    (pa.bool_(), st.one_of(st.none(), st.booleans())),
    (pa.timestamp("us", tz="UTC"), st.one_of(st.none(), st.datetimes(timezones=st.just(timezone.utc)))),
    (pa.list_(pa.string()), st.one_of(st.none(), st.lists(st.text(max_size=5), max_size=2))),
    (pa.binary(), st.one_of(st.none(), st.binary(max_size=8))),
])


@st.composite
def arrow_tables(draw):
    n = draw(st.integers(min_value=1, max_value=12))
    names = draw(st.lists(st.one_of(st.sampled_from(sorted(ALIASES)), st.text(min_size=1, max_size=8)),
                          min_size=1, max_size=8, unique=True))
    for required in ("exchange_id", "account_id", "prompt", "timestamp"):
        if draw(st.booleans()) and required not in names:
            names.append(required)
    columns = {}
    for name in names:
        typ, values = draw(arrow_columns)
        columns[name] = pa.array(draw(st.lists(values, min_size=n, max_size=n)), typ)
    return pa.table(columns)


@SETTINGS
@given(table=arrow_tables())
def test_arbitrary_parquet_tables_are_all_accounted_for(tmp_path_factory, table):
    path = tmp_path_factory.mktemp("p") / "a.parquet"
    pq.write_table(table, path)
    outcome = _ingest(path)
    if outcome is None:
        return
    store, [result] = outcome
    assert result.rows_in == table.num_rows and result.balanced
    _check_store_invariants(store)


@SETTINGS
@given(data=st.binary(max_size=600), suffix=st.sampled_from([".parquet", ".jsonl.gz", ".csv.zst", ".json.gz"]),
       compress=st.booleans())
@example(data=b"\x00" * 8, suffix=".csv.zst", compress=False)  # no zstd frame: told while telling the format
@example(data=b"\x1f\x8b\x08\x00", suffix=".jsonl.gz", compress=False)  # a gzip header cut short
def test_arbitrary_bytes_never_crash_the_parquet_and_compressed_readers(tmp_path_factory, data, suffix, compress):
    import gzip

    import zstandard
    if compress and suffix.endswith(".gz"):
        data = gzip.compress(data)
    elif compress and suffix.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    path = tmp_path_factory.mktemp("p") / f"a{suffix}"
    path.write_bytes(data)
    outcome = _ingest(path)
    if outcome is not None:
        assert outcome[1][0].balanced
        _check_store_invariants(outcome[0])
