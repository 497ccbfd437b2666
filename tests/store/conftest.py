"""The small simulated store that the Spark tests scan on both engines."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from distillguard.ingest import ingest_paths
from distillguard.simulate import simulate
from distillguard.store import Store


@pytest.fixture(scope="session")
def small_store_template(tmp_path_factory) -> Path:
    """Two per mille of alibaba-2026 (seed 5), ingested: a directory holding ``s.duckdb`` and its
    ``s.segments``, simulated once for every test that copies it (``small_store``)."""
    root = tmp_path_factory.mktemp("small-store")
    simulate("alibaba-2026", scale=0.002, seed=5, out_dir=root / "sim")
    (root / "store").mkdir()
    with Store(root / "store" / "s.duckdb") as store:
        ingest_paths(store, [root / "sim" / "exchanges.parquet"])
    return root / "store"


@pytest.fixture
def small_store(small_store_template: Path, tmp_path: Path) -> Path:
    """The test's own copy of ``small_store_template`` (a scan may write into it): the path of
    its ``s.duckdb``, its segments beside it."""
    shutil.copytree(small_store_template, tmp_path / "store")
    return tmp_path / "store" / "s.duckdb"
