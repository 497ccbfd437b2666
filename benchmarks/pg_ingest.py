"""Live PostgreSQL ingest benchmark: LiteLLM's SpendLogs table at several sizes.

``python benchmarks/pg_ingest.py --rows 100000 1000000``: for each size, a throwaway server
(tests/ingest/conftest.py's ``running_postgres``) gets a database made by LiteLLM's own
migrations, filled server-side (generate_series) with rows shaped as LiteLLM writes them, prompts
stored; then one ``distillguard ingest postgresql://... --source litellm`` process reads it into a
fresh store. Wall time gives rows/s, the child's peak RSS (wait4) gives memory: constant memory
means the peak does not grow with the table. Prints a Markdown block for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.ingest.conftest import create_litellm_database, running_postgres  # noqa: E402

# 2,000 accounts, 50 sessions each, a prompt of a few hundred bytes with its system message, one
# row every 10 ms from 2026-11-01: the shape of get_logging_payload's rows with prompts stored
FILL = """
INSERT INTO "LiteLLM_SpendLogs" ("request_id", "call_type", "api_key", "spend", "total_tokens", "prompt_tokens",
  "completion_tokens", "startTime", "endTime", "model", "model_group", "custom_llm_provider", "user", "metadata",
  "team_id", "end_user", "requester_ip_address", "messages", "response", "proxy_server_request", "session_id",
  "status", "organization_id")
SELECT 'chatcmpl-' || lpad(g::text, 9, '0'), 'acompletion', md5('key' || (g % 500)::text), 0.0004, 130, 30, 100,
  ts, ts + interval '850 milliseconds', 'gpt-4o-2024-08-06', 'gpt-4o', 'openai', 'owner-' || (g % 50),
  jsonb_build_object('user_agent', 'OpenAI/Python 1.54.0', 'requester_ip_address', ip),
  'team-' || (g % 20), 'customer-' || (g % 2000), ip, msgs, '{}'::jsonb,
  jsonb_build_object('body', jsonb_build_object('model', 'gpt-4o', 'max_tokens', 512, 'messages', msgs)),
  'sess-' || (g % 100000), 'success', 'org-' || (g % 5)
FROM generate_series(1, {rows}) AS g,
  LATERAL (SELECT timestamp '2026-11-01' + g * interval '10 milliseconds' AS ts,
                  '198.51.100.' || (g % 250 + 1) AS ip,
                  jsonb_build_array(jsonb_build_object('role', 'system', 'content', 'You are a careful assistant.'),
                                    jsonb_build_object('role', 'user', 'content',
                                      'Explain, step by step and with an example, topic number ' || (g % 9973)
                                      || ' of the course; then list three common mistakes and how to avoid them.'))
                  AS msgs) AS x
"""


def measure(url: str, workdir: Path) -> tuple[float, int, str]:
    """(seconds, peak RSS bytes, stdout) of one ingest process into a fresh store."""
    db = workdir / "bench.duckdb"
    shutil.rmtree(workdir / "bench.segments", ignore_errors=True)
    db.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "distillguard.cli", "ingest", url, "--source", "litellm", "--db", str(db), "--json"]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    out = proc.stdout.read().decode() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"ingest failed: {out}")
    return elapsed, usage.ru_maxrss * 1024, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    lines = []
    with running_postgres() as server, tempfile.TemporaryDirectory(prefix="pg-bench-") as tmp:
        for rows in args.rows:
            url = create_litellm_database(server, f"bench_{rows}")
            with psycopg.connect(url, autocommit=True) as con:
                con.execute(FILL.replace("{rows}", str(int(rows))))
                con.execute('VACUUM ANALYZE "LiteLLM_SpendLogs"')
                size = con.execute("SELECT pg_total_relation_size('\"LiteLLM_SpendLogs\"')").fetchone()[0]
            elapsed, peak, _ = measure(url, Path(tmp))
            lines.append(f"| {rows:,} | {size / 2**20:,.0f} MiB | {elapsed:.1f} | {rows / elapsed:,.0f} | "
                         f"{peak / 2**20:,.0f} MiB |")
            print(lines[-1], flush=True)
    cores = os.cpu_count()
    print(f"\nCommand: `python benchmarks/pg_ingest.py --rows {' '.join(map(str, args.rows))}`. Machine: "
          f"{platform.machine()}, {cores} cores, Python {platform.python_version()}, PostgreSQL on the same "
          f"machine. Date: {datetime.now(timezone.utc):%Y-%m-%d}.\n")
    print("| SpendLogs rows | table on disk | ingest (s) | rows/s | peak memory |\n|---|---|---|---|---|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
