"""The scanned store the threat-intelligence tests (STIX, MISP, TAXII) share."""

from __future__ import annotations

from pathlib import Path

import ibis
import pytest

from distillguard.detect import scan
from distillguard.detect.policy import Policy
from distillguard.ingest import ingest_paths
from distillguard.simulate import simulate
from distillguard.store import Store

#: the scan policy of the report tests' stores: a generous throttle budget (1e-2 per entity, 1e-3 for
#: block, against the default 1e-4 and 1e-6) so that at a tenth of a per mille the calibrated tests stop
#: the campaign and its addresses, cards and templates become indicators the writers must share;
#: the tests are of the writers, not of the detector's error budget
WRITER_POLICY = Policy(lookback_days=365, statistics={"budget": {"throttle": 1e-2, "block": 1e-3}})


@pytest.fixture(scope="session")
def intel_store(tmp_path_factory) -> Path:
    """A tenth of a per mille of alibaba-2026, scanned with WRITER_POLICY: its campaign is
    throttled or stopped, so STIX, MISP and TAXII have something to share."""
    root = tmp_path_factory.mktemp("intel")
    simulate("alibaba-2026", scale=0.001, seed=11, out_dir=root / "sim")
    db = root / "store.duckdb"
    with Store(db) as store:
        ingest_paths(store, [root / "sim" / "exchanges.parquet"])
        result = scan.scan(ibis.duckdb.from_connection(store.con).table("exchanges"), None, WRITER_POLICY)
        scan.store_result(store, result)
    return db
