"""What tamper evidence costs: ingest with and without the store's hash chain, a report with and
without a signed manifest (and redacted, where the manifest re-runs every query), ``verify``, and
the gateway journal's per-line hashing.

    python benchmarks/evidence_cost.py --scale 0.015 [--runs 3] [--work DIR]

Simulates alibaba-2026 at ``--scale`` (0.015: about a million exchanges), ingests its Parquet into
fresh stores, alternating runs with the chain and with its two steps (segment digest, link)
replaced by no-ops, scans once, then times the reports. Prints a Markdown block for
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import tempfile
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import ibis

from distillguard.detect import scan
from distillguard.detect.policy import Policy
from distillguard.gateway import journal as journal_module
from distillguard.ingest import ingest_paths
from distillguard.report import Redactor, document, manifest, write_report
from distillguard.report.redact import NONE
from distillguard.simulate import simulate
from distillguard.store import Store, chain


@contextmanager
def _no_chain():
    with mock.patch.object(chain, "segment_digest", lambda d: None), \
            mock.patch.object(chain, "record_ingest", lambda *a, **k: None):
        yield


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _ingest(parquet: Path, db: Path) -> None:
    shutil.rmtree(db.parent, ignore_errors=True)
    db.parent.mkdir(parents=True)
    with Store(db) as store:
        ingest_paths(store, [parquet])


def _journal_appends(directory: Path, rows: int, hashed: bool) -> float:
    record = {"exchange_id": "x", "timestamp": "2026-05-01T00:00:00Z", "account_id": "acct",
              "prompt": "p" * 1500, "response": "r" * 1500}
    patch = mock.patch.object(chain.JournalLines, "add", lambda self, line: None) if not hashed \
        else mock.patch.object(journal_module, "log", journal_module.log)
    with patch:
        j = journal_module.Journal(directory / ("h" if hashed else "n"))
        start = time.perf_counter()
        for i in range(rows):
            j.append(record)
        elapsed = time.perf_counter() - start
        j.close()
    return elapsed / rows * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.015)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="evidence-cost-"))
    sim = work / "sim"
    if not (sim / "exchanges.parquet").exists():
        simulate("alibaba-2026", scale=args.scale, seed=11, out_dir=sim)
    parquet = sim / "exchanges.parquet"
    times: dict[str, list[float]] = {"ingest, no chain": [], "ingest, chain": []}
    for _ in range(args.runs):
        with _no_chain():
            times["ingest, no chain"].append(_timed(lambda: _ingest(parquet, work / "plain" / "s.duckdb")))
        times["ingest, chain"].append(_timed(lambda: _ingest(parquet, work / "chained" / "s.duckdb")))
    db = work / "chained" / "s.duckdb"
    with Store(db) as store:
        rows = store.con.execute("SELECT count(*) FROM exchanges").fetchone()[0]
        segment_bytes = sum(p.stat().st_size for p in store.segment_files())
        result = scan.scan(ibis.duckdb.from_connection(store.con).table("exchanges"), None, Policy(lookback_days=365))
        scan.store_result(store, result)
    private, public, _ = manifest.keygen(work / f"keys-{time.time_ns()}")
    redact = Redactor(enabled=True, salt="bench")
    cases = {"report (html, all campaigns), unsigned": {}, "report, signed": {"signing_key": private},
             "report, redacted, unsigned": {"redactor": redact},
             "report, redacted, signed": {"redactor": redact, "signing_key": private}}
    for name in cases:
        times[name] = []
    times["verify"] = []
    for _ in range(args.runs):
        for name, kwargs in cases.items():
            out = work / "reports" / name.replace(" ", "_").replace(",", "")
            shutil.rmtree(out, ignore_errors=True)
            with Store(db, read_only=True) as store:
                times[name].append(_timed(lambda: write_report(store, out, "html", **kwargs)))
        signed = work / "reports" / "report_signed"
        times["verify"].append(_timed(lambda: manifest.verify(signed, db, public)))
    found, _ = manifest.verify(work / "reports" / "report_signed", db, public)
    assert found is None, str(found)
    # the parts alone, free of the noise of the whole runs on a shared machine
    with Store(db, read_only=True) as store:
        segment = store.segment_files()[0].parent
        times["alone: segment digest (every part, 1 MiB blocks)"] = [
            _timed(lambda: chain.segment_digest(segment)) for _ in range(args.runs)]
        key = manifest.load_private_key(private)
        for name, redactor in (("alone: manifest, written and signed", NONE),
                               ("alone: manifest of a redacted report (queries re-run)", redact)):
            doc = document.build(store.con, None, None, redactor, store_name=str(db))
            page = work / "reports" / "report_signed" / "index.html"
            times[name] = [_timed(lambda: manifest.write(store, doc, [page], key)) for _ in range(args.runs)]
    appends = {hashed: statistics.median(_journal_appends(work / "journal", 100_000, hashed) for _ in range(3))
               for hashed in (False, True)}
    print(f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, Python "
          f"{platform.python_version()}: alibaba-2026 at scale {args.scale} (seed 11), {rows:,} exchanges, "
          f"{segment_bytes / 2**20:,.0f} MiB of Parquet; median of {args.runs} runs.\n")
    print("| step | median s | runs (s) |\n|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} | {', '.join(f'{v:.2f}' for v in values)} |")
    print(f"\nJournal append of a 3 KB exchange: {appends[False]:.1f} µs unhashed, {appends[True]:.1f} µs hashed "
          "(median of 3 × 100,000).")


if __name__ == "__main__":
    main()
