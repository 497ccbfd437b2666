"""One entry for every intelligence file: told apart by content, and any bytes at all are
imported or refused in one line naming the file."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from distillguard.cli import app
from distillguard.ingest import normalize
from distillguard.intel import hashed, imports, indicators
from distillguard.intel.indicators import Indicator, IntelError
from distillguard.store import Store

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=12),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                     max_leaves=12)
_shaped = st.one_of(
    st.fixed_dictionaries({"type": st.just("bundle")}, optional={"objects": _json}),
    st.fixed_dictionaries({"Event": st.fixed_dictionaries({"info": _json}, optional={"Attribute": _json, "Tag": _json})}),
    st.fixed_dictionaries({"format": st.just(hashed.FORMAT)}, optional={
        "group": _json, "key_fingerprint": st.just(hashed.key_fingerprint(b"k" * 16)) | _json,
        "tlp": st.sampled_from(["amber", "red", "purple"]) | _json,
        "hashes": st.lists(st.fixed_dictionaries({"type": st.sampled_from(list(hashed.COLUMNS)) | _json,
                                                  "hmac": st.text(max_size=8) | _json}), max_size=3) | _json}),
    _json)


@pytest.fixture(scope="module")
def store():
    with Store(":memory:") as s:
        yield s


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.one_of(_shaped.map(lambda d: json.dumps(d).encode()), st.binary(max_size=64)))
def test_any_file_is_imported_or_refused_with_one_line_naming_it(tmp_path_factory, store, content):
    path = tmp_path_factory.mktemp("feed") / "feed.json"
    path.write_bytes(content)
    try:
        imports.read_file(path, store.con, b"k" * 16)
    except IntelError as e:
        assert str(e).startswith(str(path)) and "\n" not in str(e)


def test_a_missing_file_and_a_file_of_no_known_kind_are_one_line_and_exit_2(tmp_path, eight_accounts):
    other = tmp_path / "other.json"
    other.write_text('{"spec": "something else"}')
    for path, said in ((tmp_path / "absent.json", "No such file"), (other, "neither a STIX 2.1 bundle")):
        done = CliRunner().invoke(app, ["intel", "import", str(path), "--db", str(eight_accounts)])
        assert done.exit_code == 2 and said in done.output and done.output.count("\n") == 1, done.output


def test_importing_a_file_twice_stores_each_indicator_once(tmp_path, eight_accounts):
    bundle = {"type": "bundle", "id": "bundle--0e2c7c3b-6f0a-4d0e-9d4b-3c0a3b1f0e11", "objects": [
        {"type": "indicator", "spec_version": "2.1", "id": "indicator--8f2b5e8e-5d3c-4f63-8b5d-0e0c5b6d2a10",
         "created": "2026-04-01T00:00:00Z", "modified": "2026-04-01T00:00:00Z", "pattern_type": "stix",
         "pattern": "[ipv4-addr:value = '198.51.2.7' OR ipv4-addr:value = '198.51.4.0/24']",
         "valid_from": "2026-04-01T00:00:00Z"}]}
    (tmp_path / "b.json").write_text(json.dumps(bundle))
    with Store(eight_accounts) as s:
        for _ in range(2):
            imports.import_source(s.con, str(tmp_path / "b.json"), datetime.now(UTC))
        assert s.con.execute("SELECT count(*) FROM intel_indicators").fetchone()[0] == 2


def test_an_address_an_earlier_import_kept_raw_becomes_its_fingerprint_at_the_next_import(tmp_path):
    with Store(tmp_path / "s.duckdb") as store:
        earlier = Indicator("old.json", "indicator--1", "email-address", "ops@byte81.top", 80, None, None, "red")
        indicators.store(store.con, [earlier], datetime(2026, 5, 1, tzinfo=UTC))
        feed = tmp_path / "feed.json"
        feed.write_text(json.dumps({"type": "bundle", "objects": []}))
        imports.import_source(store.con, str(feed), datetime(2026, 5, 2, tzinfo=UTC))
        rows = store.con.execute("SELECT source, external_id, type, value, confidence, tlp FROM intel_indicators"
                                 ).fetchall()
    assert rows == [("old.json", "indicator--1", "email-fingerprint", normalize.email_fingerprint("ops@byte81.top"),
                     80, "red")]
