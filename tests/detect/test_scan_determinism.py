"""A scan is a function of the store: the same verdicts whatever the engine's threads, the
process's hash seed or the order rows arrive in, and the same verdicts up to the mapping when
the accounts are renamed."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import ibis
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distillguard.detect import campaigns as camp
from distillguard.detect import scan as scanning
from distillguard.store.engine import exact_sum, exchanges
from distillguard.detect.policy import Policy
from distillguard.store import Store

VERDICT_COLUMNS = ["account_id", "action", "campaign_id", "score", "reasons"]


# --- the parts: exact sums and a canonical node order for Leiden --------------------------------

def test_an_exact_sum_is_the_same_to_the_last_bit_in_any_order_of_its_terms():
    rng = random.Random(3)
    values = [rng.random() * 10 ** rng.randint(-6, 3) for _ in range(2_000)]
    totals = set()
    for _ in range(5):
        rng.shuffle(values)
        table = ibis.memtable({"g": [1] * len(values), "x": values})
        totals.add(table.group_by("g").aggregate(s=exact_sum(table.x)).to_pyarrow().column("s")[0].as_py())
    assert len(totals) == 1
    assert abs(totals.pop() - sum(values)) < 1e-6


def _planted(seed: int, groups: int = 6, size: int = 12) -> list[tuple[str, str, float]]:
    """Communities of ``size`` accounts, linked inside only three times as often as across: a
    graph Leiden can partition in many nearly equally good ways (with the edges listed in name
    order, every one of 30 renamings changed its partition)."""
    rng = random.Random(seed)
    names = [f"acct-{i:03d}" for i in range(groups * size)]
    edges = {}
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            if rng.random() < (0.3 if i // size == j // size else 0.1):
                edges[(a, names[j])] = round(rng.uniform(1.0, 2.0), 6)
    return [(a, b, w) for (a, b), w in edges.items()]


def _edge_table(edges: list[tuple[str, str, float]]) -> pa.Table:
    rows = [(min(a, b), max(a, b), w) for a, b, w in edges]
    return pa.table({"a": [r[0] for r in rows], "b": [r[1] for r in rows], "weight": [r[2] for r in rows]})


def _partition(membership: dict[str, int]) -> set[frozenset[str]]:
    groups: dict[int, set[str]] = {}
    for account, c in membership.items():
        groups.setdefault(c, set()).add(account)
    return {frozenset(g) for g in groups.values()}


def test_leiden_partitions_the_same_graph_the_same_whatever_the_order_of_its_edges():
    edges = _planted(1)
    params = camp.CampaignParams()
    first = camp.cluster(_edge_table(edges), params)
    for seed in range(3):
        shuffled = edges[:]
        random.Random(seed).shuffle(shuffled)
        assert camp.cluster(_edge_table(shuffled), params) == first


def test_renaming_the_accounts_renames_the_leiden_partition():
    edges = _planted(2)
    params = camp.CampaignParams()
    names = sorted({a for a, _, _ in edges} | {b for _, b, _ in edges})
    before = _partition(camp.cluster(_edge_table(edges), params))
    for seed in range(5):
        renamed = names[:]
        random.Random(seed).shuffle(renamed)
        to = dict(zip(names, renamed))
        after = _partition(camp.cluster(_edge_table([(to[a], to[b], w) for a, b, w in edges]), params))
        assert after == {frozenset(to[a] for a in group) for group in before}


def test_names_order_only_accounts_the_graph_and_their_activity_cannot_tell_apart():
    # a star: the leaves are equivalent in the graph, so their activity digests order them
    a, b, w = ["hub"] * 3, ["x", "y", "z"], [1.0, 1.0, 1.0]
    assert camp.node_order(a, b, w, {})[:3] == ["x", "y", "z"]
    assert camp.node_order(a, b, w, {"x": "9", "y": "1", "z": "5"})[:3] == ["y", "z", "x"]
    # the hub has the highest degree and comes after its leaves, whatever its name
    assert camp.node_order(["a"] * 3, b, w, {})[-1] == "a"


# --- the scan end to end on a simulated store ---------------------------------------------------

def _cli(*args: str, hash_seed: str = "0") -> None:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run([sys.executable, "-m", "distillguard.cli", *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def _copy_store(source: Path, target: Path) -> Path:
    """A copy of a store: its DuckDB file and its Parquet segments."""
    target.mkdir(parents=True)
    shutil.copy(source, target / source.name)
    segments = source.with_name(source.stem + ".segments")
    shutil.copytree(segments, target / segments.name)
    return target / source.name


def _scan_in_process(db: Path, threads: int) -> scanning.ScanResult:
    with Store(db) as store:
        store.con.execute(f"SET threads TO {threads}")
        _, table, lookup = exchanges(store)
        return scanning.scan(table, None, Policy(), lookup=lookup)


def _verdicts(table: pa.Table) -> list[dict]:
    return table.select(VERDICT_COLUMNS).sort_by("account_id").to_pylist()


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> Path:
    """The mixed scenario at a small scale: every kind of campaign and customer, ~550 accounts."""
    out = tmp_path_factory.mktemp("simulated")
    _cli("simulate", "--scenario", "mixed", "--scale", "0.002", "--seed", "1", "--out", str(out))
    return out / "exchanges.parquet"


@pytest.fixture(scope="module")
def ingested(simulated: Path, tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("store") / "store.duckdb"
    _cli("ingest", str(simulated), "--db", str(db))
    return db


@pytest.mark.slow
def test_copies_of_one_store_scanned_with_one_or_two_threads_give_identical_verdicts(ingested: Path, tmp_path):
    one = _scan_in_process(_copy_store(ingested, tmp_path / "one"), threads=1)
    two = _scan_in_process(_copy_store(ingested, tmp_path / "two"), threads=2)
    assert _verdicts(one.verdicts) == _verdicts(two.verdicts)
    assert [c.campaign_id for c in one.campaigns] == [c.campaign_id for c in two.campaigns]
    assert one.campaigns == two.campaigns
    # the graph itself, to the last bit of every weight, and the signal values behind the reasons
    assert one.edges.equals(two.edges)
    assert one.signals.sort_by([("account_id", "ascending"), ("signal", "ascending")]).equals(
        two.signals.sort_by([("account_id", "ascending"), ("signal", "ascending")]))
    assert one.features.equals(two.features)


@pytest.mark.slow
def test_copies_of_one_store_scanned_by_processes_with_other_hash_seeds_write_identical_files(ingested: Path,
                                                                                               tmp_path):
    outs = []
    for seed in ("1", "4242"):
        db = _copy_store(ingested, tmp_path / f"store-{seed}")
        out = tmp_path / f"out-{seed}"
        _cli("scan", "--db", str(db), "--out", str(out), "--json", hash_seed=seed)
        outs.append(out)
    for name in ("verdicts.csv", "campaigns.json", "indicators.parquet"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    assert _verdicts(pq.read_table(outs[0] / "verdicts.parquet")) == _verdicts(pq.read_table(outs[1] / "verdicts.parquet"))


def _renamed(verdicts: list[dict], back: dict[str, str]) -> dict[str, tuple]:
    """Verdicts keyed by the original account ids, each campaign named by its members' original
    ids (campaign ids are a digest of the member ids, so a renaming renames them too)."""
    members: dict[str, list[str]] = {}
    for v in verdicts:
        if v["campaign_id"]:
            members.setdefault(v["campaign_id"], []).append(back[v["account_id"]])
    names = {c: scanning._campaign_id(m) for c, m in members.items()}
    out = {}
    for v in verdicts:
        reasons = v["reasons"] or []
        for c, name in names.items():
            reasons = [r.replace(c, name) for r in reasons]
        out[back[v["account_id"]]] = (v["action"], names.get(v["campaign_id"]), v["score"], reasons)
    return out


@pytest.mark.slow
def test_renaming_the_accounts_gives_the_same_verdicts_up_to_the_renaming(simulated: Path, ingested: Path,
                                                                          tmp_path):
    exchanges_table = pq.read_table(simulated)
    ids = sorted(set(exchanges_table.column("account_id").to_pylist()))
    renamed = ids[:]
    random.Random(5).shuffle(renamed)  # a permutation of the same names: every sort order changes
    to = dict(zip(ids, renamed))
    column = exchanges_table.schema.get_field_index("account_id")
    permuted = exchanges_table.set_column(column, "account_id", pa.array(
        [to[a] for a in exchanges_table.column("account_id").to_pylist()], pa.string()))
    pq.write_table(permuted, tmp_path / "renamed.parquet")
    db = tmp_path / "renamed" / "store.duckdb"
    db.parent.mkdir()
    _cli("ingest", str(tmp_path / "renamed.parquet"), "--db", str(db))

    original = _verdicts(_scan_in_process(_copy_store(ingested, tmp_path / "original"), threads=2).verdicts)
    after = _verdicts(_scan_in_process(db, threads=2).verdicts)
    assert _renamed(after, {v: k for k, v in to.items()}) == _renamed(original, {a: a for a in ids})
