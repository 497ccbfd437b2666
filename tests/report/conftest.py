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


@pytest.fixture(scope="session")
def intel_store(tmp_path_factory) -> Path:
    """A tenth of a per mille of alibaba-2026, scanned: its campaign is throttled or stopped, so
    STIX, MISP and TAXII have something to share."""
    root = tmp_path_factory.mktemp("intel")
    simulate("alibaba-2026", scale=0.001, seed=11, out_dir=root / "sim")
    db = root / "store.duckdb"
    with Store(db) as store:
        ingest_paths(store, [root / "sim" / "exchanges.parquet"])
        result = scan.scan(ibis.duckdb.from_connection(store.con).table("exchanges"), None, Policy(lookback_days=365))
        scan.store_result(store, result)
    return db
