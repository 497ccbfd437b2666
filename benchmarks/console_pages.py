"""The console's campaigns page at 1,000 campaigns and 25,000 accounts: wall time of GET
/campaigns (first page by score, a member search, the last page sorted by size) and of one
campaign's page, against a running ``distillguard console`` process.

The store is a real scan (alibaba-2026 at scale 0.001, seed 11, as the tests use) whose
``campaigns`` and ``verdicts`` rows are then repeated with rewritten campaign and account ids
until the latest scan has ``--campaigns`` campaigns and ``--accounts`` accounts in them; the
exchanges stay the real scan's. Prints the median of ``--repeat`` requests per page.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import ibis
import requests

from distillguard.console.auth import Analysts
from distillguard.detect import scan
from distillguard.detect.policy import Policy
from distillguard.gateway.ports import free_port, wait_port
from distillguard.ingest import ingest_paths
from distillguard.simulate import simulate
from distillguard.store import Store


def build(root: Path, campaigns: int, accounts: int) -> Path:
    simulate("alibaba-2026", scale=0.001, seed=11, out_dir=root / "sim")
    db = root / "store.duckdb"
    with Store(db) as store:
        ingest_paths(store, [root / "sim" / "exchanges.parquet"])
        result = scan.scan(ibis.duckdb.from_connection(store.con).table("exchanges"), None, Policy(lookback_days=365))
        scan.store_result(store, result)
    per = accounts // campaigns
    with duckdb.connect(str(db)) as con:
        (scan_id,) = con.execute("SELECT scan_id FROM scans ORDER BY as_of DESC LIMIT 1").fetchone()
        template = con.execute("SELECT campaign_id FROM campaigns WHERE scan_id = ? ORDER BY members DESC LIMIT 1",
                               [scan_id]).fetchone()[0]
        con.execute("""INSERT INTO campaigns SELECT scan_id, 'campaign-b' || lpad(CAST(i AS VARCHAR), 8, '0'),
  ?, exchanges + i, score * (0.5 + (i % 97) / 194.0), action, detail, first_scan, last_scan, ?, 0, merged_from, split_from
FROM campaigns, range(?) t(i) WHERE scan_id = ? AND campaign_id = ?""",
                    [per, per, campaigns - con.execute("SELECT count(*) FROM campaigns WHERE scan_id = ?",
                                                       [scan_id]).fetchone()[0], scan_id, template])
        con.execute("""INSERT INTO verdicts SELECT 'acct_b' || lpad(CAST(c.i * ? + j AS VARCHAR), 9, '0'), v.action,
  v.score, 'campaign-b' || lpad(CAST(c.i AS VARCHAR), 8, '0'), v.reasons, v.as_of, v.scan_id
FROM (SELECT * FROM verdicts WHERE scan_id = ? AND campaign_id = ? LIMIT 1) v, range(?) c(i), range(?) r(j)""",
                    [per, scan_id, template, campaigns - 2, per])
        print("campaigns", con.execute("SELECT count(*) FROM campaigns WHERE scan_id = ?", [scan_id]).fetchone()[0],
              "accounts in campaigns", con.execute("SELECT count(*) FROM verdicts WHERE scan_id = ? AND campaign_id "
                                                   "IS NOT NULL", [scan_id]).fetchone()[0], file=sys.stderr)
    return db


def timed(session: requests.Session, url: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = session.get(url)
        times.append(time.perf_counter() - t0)
        assert r.status_code == 200, (url, r.status_code)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--campaigns", type=int, default=1000)
    ap.add_argument("--accounts", type=int, default=25000)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dg-console-bench-") as tmp:
        db = build(Path(tmp), args.campaigns, args.accounts)
        token = Analysts(Path(tmp) / "store.gateway-state").add("bench", "viewer")
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "distillguard.cli", "console", "--db", str(db), "--port",
                                 str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port, proc)
            base = f"http://127.0.0.1:{port}"
            s = requests.Session()
            s.post(base + "/login", data={"token": token})
            last = re.search(r"page 1 of (\d+)", s.get(base + "/campaigns").text).group(1)
            for name, path in [("campaigns, first page by score", "/campaigns"),
                               ("campaigns, member search", "/campaigns?q=acct_b000012"),
                               ("campaigns, last page by size", f"/campaigns?sort=members&dir=asc&page={last}"),
                               ("one campaign (25 members)", "/campaigns/campaign-b00000007")]:
                print(f"| {name} | {timed(s, base + path, args.repeat) * 1000:.0f} ms |")
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
