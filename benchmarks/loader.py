"""Loader benchmark: how long one round of the gateway's log loader takes as the store grows,
with the gateway's time-ordered exchange ids and with random ones (what it used before).

Why it matters: each round checks its new ids against every id in the store (a segment loaded
twice after a crash must store nothing twice). If that check read every stored id, a gateway
that has logged a month of traffic would spend seconds of CPU per round, every few seconds,
on the cores its requests need. With ids that grow with time DuckDB skips the old row groups
by their min/max statistics, so a round should cost about the same at any store size.

    python benchmarks/loader.py --rows 4000000 [--docs docs/benchmarks.md]

Builds the store with the ordinary ingest of JSONL segments shaped like the gateway's log
(``protocol.exchange_row``), merges small segments as the loader does, then times rounds of
a new 1,000-row segment at each size (median of ``--rounds``).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from distillguard.bench.report import write_docs
from distillguard.gateway.protocol import new_exchange_id
from distillguard.ingest.run import ingest_file
from distillguard.ingest.sources import Source
from distillguard.store import Store

START = datetime(2026, 5, 1, tzinfo=UTC)


def _row(exchange_id: str, ts: datetime, i: int) -> dict:
    return {"exchange_id": exchange_id, "timestamp": ts.isoformat(), "account_id": f"acct-{i % 5000:05d}",
            "api_key_id": f"key-{i % 5000:05d}", "organization_id": None, "client_ip": f"10.0.{i % 250}.{i % 200}",
            "client_asn": None, "user_agent": "OpenAI/Python 1.54.0", "payment_fingerprint": None,
            "account_created_at": None, "email_domain": None, "model": "m-large", "conversation_id": None,
            "turn_index": 0, "system_prompt": None, "prompt": f"write a function number {i % 997}",
            "input_tokens": 20 + i % 50, "output_tokens": 300 + i % 400, "max_tokens": 4096, "tool_count": 0,
            "status_code": 200, "latency_ms": 812.5}


def _segment(work: Path, ordered: bool, first: int, rows: int, at: datetime) -> Path:
    """A JSONL segment of ``rows`` exchanges starting at ``at``, one every 5 ms."""
    path = work / f"seg-{uuid.uuid4().hex}.jsonl"
    with path.open("wb") as out:
        for k in range(rows):
            ts = at + timedelta(milliseconds=5 * k)
            eid = new_exchange_id("gw-", ts) if ordered else "gw-" + uuid.uuid4().hex
            out.write(orjson.dumps(_row(eid, ts, first + k)) + b"\n")
    return path


def _ingest(store: Store, path: Path) -> None:
    result = ingest_file(store, Source(path, "jsonl", None, path.stat().st_size))
    assert result.balanced and result.rows_duplicate == 0, result
    path.unlink()


def run(rows: int, segment_rows: int, rounds: int, checkpoints: list[int]) -> list[dict]:
    results = []
    for ordered in (True, False):
        work = Path(tempfile.mkdtemp(prefix="dg-loader-bench-"))
        try:
            store = Store(work / "store.duckdb")
            store.con.execute("SET threads TO 1")  # as the gateway's loader process runs
            stored, at = 0, START
            for target in checkpoints:
                while stored < target:
                    n = min(segment_rows, target - stored)
                    _ingest(store, _segment(work, ordered, stored, n, at))
                    stored += n
                    at += timedelta(milliseconds=5 * n)
                    store.compact(48)
                times = []
                for _ in range(rounds):
                    seg = _segment(work, ordered, stored, 1000, at)
                    t0 = time.perf_counter()
                    _ingest(store, seg)
                    times.append(time.perf_counter() - t0)
                    stored += 1000
                    at += timedelta(milliseconds=5000)
                results.append({"ids": "time-ordered" if ordered else "random", "stored_rows": target,
                                "segments": len(store.segment_files()),
                                "round_ms_median": 1000 * statistics.median(times),
                                "round_ms_max": 1000 * max(times)})
                print(results[-1], flush=True)
            store.close()
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return results


def markdown(results: list[dict], command: str) -> str:
    rows = ["| ids | rows stored | segment files | round of 1,000 rows, median ms | max ms |", "|---|---|---|---|---|"]
    for r in results:
        rows.append(f"| {r['ids']} | {r['stored_rows']:,} | {r['segments']} | {r['round_ms_median']:.0f} | "
                    f"{r['round_ms_max']:.0f} |")
    return "\n".join([
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, with `{command}`: one loader round (ingest of a 1,000-row "
        "segment of the gateway's log, its ids checked against the whole store) at each store size, DuckDB "
        "on one thread as in the loader process.", "", *rows, ""])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=4_000_000, help="the largest store size")
    p.add_argument("--segment-rows", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--docs", default="", help="replace the loader block of this Markdown file")
    args = p.parse_args()
    checkpoints = sorted({max(args.rows // 4, 1), max(args.rows // 2, 1), args.rows})
    results = run(args.rows, args.segment_rows, args.rounds, checkpoints)
    text = markdown(results, "python benchmarks/loader.py " + " ".join(sys.argv[1:]))
    print(text)
    if args.docs:
        write_docs(text, args.docs, "loader")


if __name__ == "__main__":
    main()
