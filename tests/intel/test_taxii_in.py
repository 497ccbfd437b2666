"""A TAXII 2.1 collection in: distillguard's own TAXII server (report/taxii.py) on a free port,
pulled with taxii2-client, the second pull asking only for what was added after the first."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

import pytest
import stix2
from aiohttp import web

from distillguard.gateway.ports import free_port
from distillguard.intel import imports, indicators
from distillguard.intel.indicators import IntelError
from distillguard.report import taxii
from distillguard.store import Store

T0 = datetime(2026, 5, 1, tzinfo=UTC)
TOKEN = "intel-test-token"


def _indicator(value: str) -> stix2.Indicator:
    return stix2.Indicator(pattern=f"[ipv4-addr:value = '{value}']", pattern_type="stix", valid_from=T0,
                           created=T0, modified=T0, confidence=70)


@pytest.fixture
def served():
    """(collection URL, the scans it serves: append one to publish it) of a running TAXII server."""
    scans: list = [(T0, [_indicator("203.0.113.1"), _indicator("203.0.113.2")])]
    source = taxii.Source(lambda: taxii.entries_of_scans(list(scans)), lambda: (len(scans),), refresh_seconds=0.0)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(taxii.make_app(source, TOKEN))
    port = free_port()
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/{taxii.API_ROOT}/collections/{taxii.COLLECTION_ID}/", scans
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_a_second_pull_asks_only_for_objects_added_after_the_first(served):
    url, scans = served
    with Store(":memory:") as store:
        first = imports.import_source(store.con, url, T0, token=TOKEN)
        assert first.format == "taxii" and first.added_after is None and first.stored == {"network": 2}
        marker = indicators.last_pull(store.con, url)
        assert marker is not None and marker.startswith("2026-05-01")
        scans.append((T0 + timedelta(days=1), [_indicator("203.0.113.3")]))
        second = imports.import_source(store.con, url, T0, token=TOKEN)
        assert second.added_after == marker and second.stored == {"network": 1}
        assert indicators.last_pull(store.con, url) > marker
        values = sorted(indicators.load(store.con).column("value").to_pylist())
    assert values == ["203.0.113.1", "203.0.113.2", "203.0.113.3"]


def test_a_refused_pull_is_one_error_naming_the_collection_and_stores_nothing(served):
    url, _ = served
    with Store(":memory:") as store:
        with pytest.raises(IntelError) as caught:
            imports.import_source(store.con, url, T0, token="wrong")
        assert indicators.load(store.con).num_rows == 0 and indicators.last_pull(store.con, url) is None
    assert str(caught.value).startswith(f"{url}: TAXII pull failed") and "\n" not in str(caught.value)
