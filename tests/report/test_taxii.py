"""The TAXII 2.1 server: a real ``distillguard taxii`` process pulled with taxii2-client, and
its query parsing and paging on their own (untrusted parameters: a 400, never a 500)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
from datetime import datetime, timedelta, timezone

import pytest
import requests
import stix2
from hypothesis import given, settings
from hypothesis import strategies as st
from taxii2client.v21 import Server, as_pages

from distillguard.gateway.ports import free_port, wait_port
from distillguard.report import document, stix, taxii
from distillguard.store import Store
from tests.gateway.procs import stop_process

T0 = datetime(2026, 5, 1, tzinfo=timezone.utc)


def _entries():
    """Two scans: the second re-issues one indicator (same id, later modified) and adds another."""
    def indicator(name: str, modified: datetime) -> stix2.Indicator:
        return stix2.Indicator(id=stix._id("indicator", "campaign-x", name), pattern=f"[ipv4-addr:value = '{name}']",
                               pattern_type="stix", valid_from=T0, created=T0, modified=modified)
    first = [indicator("10.0.0.1", T0), indicator("10.0.0.2", T0)]
    second = [indicator("10.0.0.1", T0 + timedelta(days=1)), indicator("10.0.0.3", T0 + timedelta(days=1))]
    return taxii.entries_of_scans([(T0, first), (T0 + timedelta(days=1), second)])


def _pull(entries, **params):
    pages, params = [], {k: str(v) for k, v in params.items()}
    while True:
        page, more = taxii.select(entries, taxii.parse_query(params))
        pages.append(page)
        if not more:
            return pages
        params["next"] = taxii.encode_cursor(page[-1])


def test_paging_returns_the_latest_version_of_each_object_once_in_the_order_added():
    pages = _pull(_entries(), limit=1)
    got = [(e.obj["pattern"], e.version[:10]) for page in pages for e in page]
    # the first scan's unchanged object, then the second scan's (in id order within one date_added)
    assert got[0] == ("[ipv4-addr:value = '10.0.0.2']", "2026-05-01")
    assert sorted(got[1:]) == [("[ipv4-addr:value = '10.0.0.1']", "2026-05-02"),
                               ("[ipv4-addr:value = '10.0.0.3']", "2026-05-02")]
    assert [len(p) for p in pages] == [1, 1, 1]


def test_added_after_and_match_version_all_select_what_a_poller_asks():
    entries = _entries()
    after = [e.obj["pattern"] for page in _pull(entries, added_after="2026-05-01T12:00:00Z") for e in page]
    assert sorted(after) == ["[ipv4-addr:value = '10.0.0.1']", "[ipv4-addr:value = '10.0.0.3']"]
    everything = [e for page in _pull(entries, **{"match[version]": "all"}) for e in page]
    assert len(everything) == 4
    first = [e.version[:10] for page in _pull(entries, **{"match[version]": "first", "match[id]": entries[0].id})
             for e in page]
    assert first == ["2026-05-01"]


@pytest.mark.parametrize("params", [
    {"limit": "0"}, {"limit": "-1"}, {"limit": "ten"}, {"limit": "9" * 40}, {"limit": "١٢"},
    {"added_after": "yesterday"}, {"added_after": "2026-13-45T99:99:99Z"}, {"added_after": "2026-01-01T00:00:00"},
    {"next": "%%%"}, {"next": "bm90IGpzb24"}, {"next": "WzEsMiwzXQ"}, {"match[version]": "2026-02-30T00:00:00Z"},
])
def test_a_bad_query_parameter_is_a_400_taxii_error(params):
    with pytest.raises(taxii.TaxiiError) as raised:
        taxii.parse_query(params)
    assert raised.value.status == 400


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["limit", "added_after", "next", "match[id]", "match[type]", "match[version]",
                                        "match[spec_version]", "other"]), st.text(max_size=60), max_size=6))
def test_any_query_parses_or_is_a_400_and_selecting_with_it_never_fails(params):
    try:
        query = taxii.parse_query(params)
    except taxii.TaxiiError as e:
        assert e.status == 400
        return
    page, _ = taxii.select(_entries(), query)
    assert len(page) <= query.limit


# --- the real server, pulled with taxii2-client --------------------------------------------------

TOKEN = "taxii-test-token"


class _Bearer(requests.auth.AuthBase):
    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request):
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


@pytest.fixture(scope="module")
def server(intel_store, tmp_path_factory):
    token_file = tmp_path_factory.mktemp("taxii") / "token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "distillguard.cli", "taxii", "--db", str(intel_store),
                             "--port", str(port), "--token-file", str(token_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc, timeout=120)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


@pytest.mark.slow
def test_a_taxii_client_pulls_the_campaigns_indicators_page_by_page(server, intel_store):
    api_root = Server(f"{server}/taxii2/", auth=_Bearer(TOKEN)).default
    collection = api_root.collections[0]
    assert collection.id == taxii.COLLECTION_ID and collection.can_read and not collection.can_write
    assert collection.media_types == [taxii.STIX_MEDIA]
    pages = list(as_pages(collection.get_objects, per_request=40))
    assert len(pages) > 1 and all(p["more"] for p in pages[:-1]) and not pages[-1]["more"]
    pulled = [o for p in pages for o in p["objects"]]
    with Store(intel_store, read_only=True) as store:
        expected = stix.bundle_objects(document.build(store.con))
    assert sorted(o["id"] for o in pulled) == sorted(o.id for o in expected)
    assert any(o["type"] == "indicator" for o in pulled)
    indicator = next(o for o in pulled if o["type"] == "indicator")
    one = collection.get_object(indicator["id"])
    assert one["objects"] == [indicator]


@pytest.mark.slow
def test_the_server_speaks_taxii_media_types_headers_and_bearer_auth(server):
    objects = f"{server}/{taxii.API_ROOT}/collections/{taxii.COLLECTION_ID}/objects/"
    auth = _Bearer(TOKEN)
    reply = requests.get(objects, params={"limit": 5}, auth=auth, headers={"Accept": taxii.TAXII_MEDIA})
    assert reply.status_code == 200 and reply.headers["Content-Type"] == taxii.TAXII_MEDIA
    body = reply.json()
    assert body["more"] and body["next"] and len(body["objects"]) == 5
    assert reply.headers["X-TAXII-Date-Added-First"] <= reply.headers["X-TAXII-Date-Added-Last"]
    later = requests.get(objects, params={"added_after": reply.headers["X-TAXII-Date-Added-Last"]}, auth=auth)
    assert later.status_code == 200 and later.json() == {"more": False}
    assert requests.get(objects).status_code == 401
    assert requests.get(objects, auth=_Bearer("wrong")).status_code == 401
    assert requests.get(objects, auth=auth, headers={"Accept": "text/html"}).status_code == 406
    assert requests.post(objects, auth=auth, json={}).status_code == 405


@pytest.mark.slow
def test_hostile_query_parameters_are_answered_with_400_never_500(server):
    base = f"{server}/{taxii.API_ROOT}/collections/{taxii.COLLECTION_ID}"
    auth = _Bearer(TOKEN)
    hostile = ["limit=%00", "limit=1e9", "added_after=%ff%fe", "next=" + "A" * 5000, "match[version]=%27;--",
               "next=W10", "added_after=2026-01-01T00:00:00.0000000001Z"]
    for query in hostile:
        for path in ("/objects/", "/manifest/", "/objects/indicator--x/", "/objects/indicator--x/versions/"):
            reply = requests.get(f"{base}{path}?{query}", auth=auth)
            assert reply.status_code in (400, 404), (path, query, reply.status_code, reply.text[:200])
            assert reply.headers["Content-Type"] == taxii.TAXII_MEDIA and json.loads(reply.text)["http_status"]
    assert requests.get(f"{server}/{taxii.API_ROOT}/collections/nope/objects/", auth=auth).status_code == 404
    assert requests.get(f"{server}/{urllib.parse.quote('../../etc/passwd')}", auth=auth).status_code == 404


def test_bad_command_line_choices_are_one_error_line_and_exit_code_2(tmp_path):
    from typer.testing import CliRunner

    from distillguard.cli import app

    runner = CliRunner()
    missing = runner.invoke(app, ["taxii", "--db", str(tmp_path / "none.duckdb")])
    assert missing.exit_code == 2 and "none.duckdb" in missing.output and "Traceback" not in missing.output
    with Store(tmp_path / "s.duckdb"):
        pass
    empty = tmp_path / "token"
    empty.write_text("\n")
    no_token = runner.invoke(app, ["taxii", "--db", str(tmp_path / "s.duckdb"), "--token-file", str(empty)])
    assert no_token.exit_code == 2 and "the file is empty" in no_token.output
    bad_tlp = runner.invoke(app, ["taxii", "--db", str(tmp_path / "s.duckdb"), "--tlp", "white"])
    assert bad_tlp.exit_code == 2 and "--tlp must be one of" in bad_tlp.output
