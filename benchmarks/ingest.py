"""Ingest throughput benchmark: a generated 10M-row Parquet file and a 2M-row JSONL file.

Run with ``make bench`` (or ``python benchmarks/ingest.py --out bench-out``). Each file is
ingested into a fresh store by a separate ``distillguard ingest`` process, ``--repeat`` times;
the median wall time gives rows/s and the child's peak RSS (from wait4) gives memory. The
Markdown result replaces the ingest section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distillguard.schema import ARROW_SCHEMA
from distillguard.store import Store

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- ingest:begin -->", "<!-- ingest:end -->"

_TOPICS = ["a REST API", "a binary search tree", "the CAP theorem", "a React hook", "SQL window functions",
           "a Kubernetes operator", "gradient descent", "a Rust borrow error", "OAuth 2.0 flows", "a CSV parser"]
_ASKS = ["Write a Python function for {}.", "Explain {} to a new engineer, step by step.",
         "Review this design for {} and list the risks.", "Give me three test cases for {}.",
         "Compare two approaches to {} and recommend one."]


def _prompt_pool(n: int, rng: np.random.Generator) -> pa.Array:
    out = []
    for i in range(n):
        ask = _ASKS[i % len(_ASKS)].format(_TOPICS[(i // len(_ASKS)) % len(_TOPICS)])
        out.append(f"{ask} Context #{i}: " + " ".join(rng.choice(["data", "user", "latency", "cache", "retry",
                                                                     "index", "queue", "token"], 25)))
    return pa.array(out, pa.string())


class Pools:
    """Value pools shared by all chunks, so the generated data look like one log."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.accounts = pa.array([f"acct-{i:06d}" for i in range(50_000)])
        self.ips = pa.array([f"{rng.integers(1, 224)}.{rng.integers(0, 256)}.{rng.integers(0, 256)}."
                             f"{rng.integers(1, 255)}" for _ in range(100_000)])
        self.prompts = _prompt_pool(5000, rng)
        self.payments = pa.array([f"pay-{i:05d}" for i in range(40_000)])


def generate(rows: int, seed: int = 1, chunk: int = 1_000_000):
    """Yield tables of ``chunk`` rows in the canonical schema, in time order."""
    rng = np.random.default_rng(seed)
    pools = Pools(rng)
    start = np.datetime64("2026-04-22T00:00:00", "us").astype(np.int64)
    per_row = 45 * 86400 * 1_000_000 // rows
    for first in range(0, rows, chunk):
        n = min(chunk, rows - first)
        yield _chunk(rng, pools, first, n, start + first * per_row, per_row)


def _chunk(rng, pools, first: int, rows: int, t0: int, per_row: int) -> pa.Table:
    ts = t0 + np.arange(rows) * per_row + rng.integers(0, per_row, rows)
    start = t0
    accounts = rng.integers(0, 50_000, rows)
    account_names, ips, prompts = pools.accounts, pools.ips, pools.prompts
    ids = pc.binary_join_element_wise("ex-", pc.cast(pa.array(np.arange(first, first + rows)), pa.string()), "")
    cols = {
        "exchange_id": ids,
        "timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "account_id": pc.take(account_names, pa.array(accounts)),
        "api_key_id": pc.take(account_names, pa.array(accounts)),
        "organization_id": pa.nulls(rows, pa.string()),
        "client_ip": pc.take(ips, pa.array(rng.integers(0, 100_000, rows))),
        "user_agent": pc.take(pa.array(["OpenAI/Python 1.52.0", "Mozilla/5.0", "python-httpx/0.27.0"]),
                              pa.array(rng.integers(0, 3, rows))),
        "payment_fingerprint": pc.take(pools.payments, pa.array(accounts % 40_000)),
        "account_created_at": pa.array(start - (accounts.astype(np.int64) * 1_000_000_000), pa.timestamp("us", tz="UTC")),
        "email_domain": pc.take(pa.array(["gmail.com", "outlook.com", "example.edu", "corp.example"]),
                                pa.array(accounts % 4)),
        "model": pc.take(pa.array(["model-large", "model-small"]), pa.array(rng.integers(0, 2, rows))),
        "conversation_id": pc.binary_join_element_wise("c-", pc.cast(pa.array(np.arange(first, first + rows) // 3),
                                                                     pa.string()), ""),
        "turn_index": pa.array(np.arange(rows) % 3, pa.int64()),
        "system_prompt": pa.nulls(rows, pa.string()),
        "prompt": pc.take(prompts, pa.array(rng.integers(0, len(prompts), rows))),
        "input_tokens": pa.array(rng.integers(10, 2000, rows), pa.int64()),
        "output_tokens": pa.array(rng.integers(10, 4000, rows), pa.int64()),
        "max_tokens": pa.array(rng.choice([1024, 4096, 8192], rows), pa.int64()),
        "tool_count": pa.array(rng.integers(0, 4, rows), pa.int64()),
        "status_code": pa.array(np.full(rows, 200), pa.int64()),
        "latency_ms": pa.array(rng.uniform(200, 20000, rows), pa.float64()),
    }
    # columns the generator does not fill (declared after it was written) are null, as a log without them
    cols |= {f.name: pa.nulls(rows, f.type) for f in ARROW_SCHEMA if f.name not in cols}
    return pa.table(cols, schema=ARROW_SCHEMA)


def make_inputs(out: Path, parquet_rows: int, jsonl_rows: int) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    parquet_path = out / f"bench_{parquet_rows}.parquet"
    jsonl_path = out / f"bench_{jsonl_rows}.jsonl"
    if not parquet_path.exists():
        with pq.ParquetWriter(parquet_path, ARROW_SCHEMA) as writer:
            for table in generate(parquet_rows):
                writer.write_table(table, row_group_size=1_000_000)
    if not jsonl_path.exists():
        con = duckdb.connect()
        con.execute("SET TimeZone='UTC'")
        con.execute(f"COPY (SELECT * REPLACE (strftime(timestamp, '%Y-%m-%dT%H:%M:%S.%fZ') AS timestamp, "
                    f"strftime(account_created_at, '%Y-%m-%dT%H:%M:%SZ') AS account_created_at) "
                    f"FROM read_parquet('{parquet_path}') LIMIT {jsonl_rows}) TO '{jsonl_path}' (FORMAT json)")
    return parquet_path, jsonl_path


def _clean(db: Path) -> None:
    for p in (db, Path(str(db) + ".wal")):
        p.unlink(missing_ok=True)
    shutil.rmtree(db.with_name(db.stem + ".segments"), ignore_errors=True)


def measure(path: Path, db: Path, repeat: int) -> dict:
    walls, peaks = [], []
    for _ in range(repeat):
        _clean(db)
        t0 = time.perf_counter()
        pid = os.spawnv(os.P_NOWAIT, sys.executable, [sys.executable, "-m", "distillguard.cli", "ingest", str(path),
                                                       "--db", str(db), "--json"])
        _, status, usage = os.wait4(pid, 0)
        walls.append(time.perf_counter() - t0)
        if status != 0:
            raise SystemExit(f"ingest of {path} failed with status {status}")
        peaks.append(usage.ru_maxrss * 1024)
    with Store(db, read_only=True) as store:
        stored = store.con.execute("SELECT count(*) FROM exchanges").fetchone()[0]
    _clean(db)
    wall = statistics.median(walls)
    return {"file": path.name, "bytes": path.stat().st_size, "rows": stored, "repeat": repeat,
            "wall_s_median": round(wall, 2), "wall_s_all": [round(w, 2) for w in walls],
            "rows_per_s": int(stored / wall), "peak_rss_mib": round(max(peaks) / 2**20)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out")
    parser.add_argument("--parquet-rows", type=int, default=10_000_000)
    parser.add_argument("--jsonl-rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    parquet_path, jsonl_path = make_inputs(args.out, args.parquet_rows, args.jsonl_rows)
    results = [measure(parquet_path, args.out / "bench.duckdb", args.repeat),
               measure(jsonl_path, args.out / "bench.duckdb", args.repeat)]
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "machine": _machine(),
            "command": "make bench  (python benchmarks/ingest.py --out bench-out)"}
    (args.out / "ingest.json").write_text(json.dumps({**meta, "results": results}, indent=2))
    table = _markdown(meta, results)
    print(table)
    if not args.no_doc:
        _update_doc(table)


def _machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.machine()}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, Python {platform.python_version()}"


def _markdown(meta: dict, results: list[dict]) -> str:
    lines = [BEGIN, "## Ingest throughput", "",
             f"Command: `{meta['command']}`. Machine: {meta['machine']}. Date: {meta['date']}.",
             "Each file is ingested into a fresh DuckDB store by a separate `distillguard ingest` process; "
             "median of the runs, peak RSS of the ingest process.", "",
             "| input | size | rows stored | runs (s) | median (s) | rows/s | peak memory | floor |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        floor = "1,000,000 rows/s" if r["file"].endswith(".parquet") else "200,000 rows/s"
        lines.append(f"| {r['file']} | {r['bytes'] / 2**20:,.0f} MiB | {r['rows']:,} | "
                     f"{', '.join(str(w) for w in r['wall_s_all'])} | {r['wall_s_median']} | "
                     f"{r['rows_per_s']:,} | {r['peak_rss_mib']:,} MiB | {floor}, < 4 GiB |")
    lines.append(END)
    return "\n".join(lines)


def _update_doc(section: str) -> None:
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n\n"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    DOC.write_text(text)


if __name__ == "__main__":
    main()
