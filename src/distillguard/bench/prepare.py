"""Simulated scenarios, ingested into stores, cached by scenario, scale and seed.

Simulating and ingesting dominate a first benchmark run and do not depend on the detectors, so
each (scenario, scale, seed) is prepared once under ``<cache>/<scenario>/scale-<s>/seed-<n>/``
and reused. The store holds the exchanges sorted by time in row groups, so a detector asked
for ``timestamp < as_of`` reads only the row groups before as_of (DuckDB skips the rest on
their min/max statistics): the work of a replay step grows with the data seen so far, not with
the whole scenario.

A prepared store can also be copied with some optional columns withheld (:func:`withheld`):
another provider's logs, or another generator's traffic, may not carry every field the
simulator writes, and what detection rests on shows when one is missing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from distillguard.errors import UserError
from distillguard.ingest import ingest_paths
from distillguard.schema import COLUMNS
from distillguard.simulate import simulate
from distillguard.store import Store

#: rows per Parquet row group of the time-sorted store: the granularity of as-of pruning
ROW_GROUP_ROWS = 100_000
_DONE = "prepared.json"
#: the longest folder name made of the withheld columns' names (:func:`withheld_name`; a digest beyond it)
MAX_NAME = 100


@dataclass(frozen=True)
class Prepared:
    """One simulated scenario in a store, with its ground truth."""

    scenario: str
    scale: float
    seed: int
    directory: Path
    labels: pa.Table  # simulate's labels.parquet
    relayed: pa.Table  # exchange_id of genuine customers' requests relayed by hydra accounts
    facts: dict  # what the simulation wrote (scenario.json) plus preparation timings

    @property
    def store_path(self) -> Path:
        return self.directory / "store.duckdb"

    def open(self, read_only: bool = False) -> Store:
        return Store(self.store_path, read_only=read_only)


def cache_key(scenario: str) -> str:
    """The scenario's name plus a digest of its resolved definition (bases merged in).

    Editing a scenario, or the baseline it builds on, must not leave the benchmark scoring
    a store simulated from the old definition: the digest changes and the store is built again.
    """
    from distillguard.simulate.scenario import load_scenario

    path = Path(scenario)
    name = path.stem if path.suffix in (".yaml", ".yml") else scenario
    resolved = load_scenario(scenario).model_dump_json()
    return f"{name}-{hashlib.sha256(resolved.encode()).hexdigest()[:12]}"


def prepare(scenario: str, scale: float, seed: int, cache_dir: Path,
            progress: Callable[[str], None] | None = None) -> Prepared:
    """The scenario simulated with ``seed`` at ``scale`` and ingested; from the cache if there."""
    directory = Path(cache_dir) / cache_key(scenario) / f"scale-{scale:g}" / f"seed-{seed}"
    if not (directory / _DONE).exists():
        shutil.rmtree(directory, ignore_errors=True)
        _build(scenario, scale, seed, directory, progress)
    relayed_path = directory / "relayed.parquet"
    relayed = (pq.read_table(relayed_path, columns=["exchange_id"]) if relayed_path.exists()
               else pa.table({"exchange_id": pa.array([], pa.string())}))
    facts = json.loads((directory / _DONE).read_text())
    return Prepared(scenario=facts["scenario"], scale=scale, seed=seed, directory=directory,
                    labels=pq.read_table(directory / "labels.parquet"), relayed=relayed, facts=facts)


def _build(scenario: str, scale: float, seed: int, directory: Path,
           progress: Callable[[str], None] | None) -> None:
    sim_dir = directory / "simulated"
    if progress:
        progress(f"simulating {scenario} at scale {scale:g}, seed {seed}")
    started = time.perf_counter()
    summary = simulate(scenario, scale=scale, seed=seed, out_dir=sim_dir)
    simulated = time.perf_counter() - started
    if progress:
        progress(f"ingesting {summary.exchanges:,} exchanges of {summary.scenario}")
    started = time.perf_counter()
    by_time = sim_dir / "exchanges.by_time.parquet"
    with Store(directory / "store.duckdb") as store:
        store.con.execute(
            f"COPY (SELECT * FROM read_parquet('{_quoted(sim_dir / 'exchanges.parquet')}') "
            f"ORDER BY \"timestamp\", exchange_id) TO '{_quoted(by_time)}' "
            f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {ROW_GROUP_ROWS})")
        (result,) = ingest_paths(store, [by_time])
        quarantined = dict(store.con.execute(
            "SELECT reason_code, count(*) FROM quarantine GROUP BY ALL ORDER BY 2 DESC").fetchall())
    ingested = time.perf_counter() - started
    if quarantined and progress:
        # the simulator should write only valid rows; say what the benchmark lost, and go on
        progress(f"warning: ingest quarantined {result.rows_quarantined:,} simulated exchanges of {scenario}: "
                 + ", ".join(f"{n:,} {reason}" for reason, n in quarantined.items()))
    for name in ("labels.parquet", "relayed.parquet", "scenario.json"):
        if (sim_dir / name).exists():
            (sim_dir / name).rename(directory / name)
    shutil.rmtree(sim_dir)  # the store holds the exchanges now
    facts = {
        "scenario": summary.scenario, "seed": seed, "scale": scale, "accounts": summary.accounts,
        "exchanges": summary.exchanges, "campaign_exchanges": summary.campaign_exchanges,
        "relayed_exchanges": summary.relayed_exchanges, "stored_exchanges": result.rows_stored,
        "quarantined_exchanges": quarantined,
        "simulate_seconds": round(simulated, 3), "ingest_seconds": round(ingested, 3),
    }
    (directory / _DONE).write_text(json.dumps(facts, indent=2) + "\n")


def _quoted(path: Path) -> str:
    return str(path).replace("'", "''")


def withholdable(columns: Iterable[str]) -> tuple[str, ...]:
    """``columns`` (as typed: blanks around them and empty ones left out), sorted and without
    repeats, each an optional column of the canonical exchange schema (a required one cannot be
    withheld: a store has no row without it).

    Raises:
        UserError: an unknown or required column, named with the ones that can be withheld."""
    columns = [c.strip() for c in columns if c.strip()]
    optional = [c.name for c in COLUMNS if not c.required]
    for name in columns:
        if name not in optional:
            what = "is required" if name in {c.name for c in COLUMNS} else "is no column of the exchange schema"
            raise UserError(f"--withhold: {name!r} {what}; optional columns: {', '.join(optional)}")
    return tuple(sorted(set(columns)))


def withheld_name(columns: Iterable[str]) -> str:
    """``without-COLUMN+...``: what a store, a docs block or a report scored without ``columns``
    is named by (columns sorted)."""
    return "without-" + "+".join(sorted(columns))


def withheld(prepared: Prepared, columns: tuple[str, ...],
             progress: Callable[[str], None] | None = None) -> Prepared:
    """``prepared`` with ``columns`` (:func:`withholdable`) missing: its exchanges, in time order,
    ingested into a store of their own as logs without those fields would be (each NULL), beside
    the same ground truth; cached under ``without-<columns>`` in the prepared directory (a digest
    of them where their names would make too long a folder name). Only the exchanges are carried
    (a simulated store has no account events). No columns: ``prepared``."""
    columns = withholdable(columns)
    if not columns:
        return prepared
    name = withheld_name(columns)
    if len(name) > MAX_NAME:  # a folder name has a length limit; prepared.json names the columns
        name = "without-" + hashlib.sha256(name.encode()).hexdigest()[:12]
    directory = prepared.directory / name
    if not (directory / _DONE).exists():
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        if progress:
            progress(f"withholding {', '.join(columns)} from {prepared.scenario}, seed {prepared.seed}")
        selected = ", ".join(f'"{c.name}"' for c in COLUMNS if c.name not in columns)
        by_time = directory / "exchanges.parquet"
        with prepared.open(read_only=True) as source:
            source.con.execute(
                f"COPY (SELECT {selected} FROM exchanges ORDER BY \"timestamp\", exchange_id) TO '{_quoted(by_time)}' "
                f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {ROW_GROUP_ROWS})")
        with Store(directory / "store.duckdb") as store:
            (result,) = ingest_paths(store, [by_time])
        by_time.unlink()
        for name in ("labels.parquet", "relayed.parquet", "scenario.json"):
            if (prepared.directory / name).exists():
                shutil.copyfile(prepared.directory / name, directory / name)
        facts = {**prepared.facts, "withheld": list(columns), "stored_exchanges": result.rows_stored}
        (directory / _DONE).write_text(json.dumps(facts, indent=2) + "\n")
    facts = json.loads((directory / _DONE).read_text())
    return Prepared(scenario=prepared.scenario, scale=prepared.scale, seed=prepared.seed, directory=directory,
                    labels=prepared.labels, relayed=prepared.relayed, facts=facts)
