"""Each coverage-guided fuzz target in fuzz/ runs for a few seconds and finds nothing.

A short run in CI catches a parser change that crashes on the fuzzer's first mutations; the
long runs that find deeper faults are documented in fuzz/README.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a fuzzing run

pytest.importorskip("atheris", reason="atheris (the [test] extra) is not installed: it ships wheels for "
                    "Linux and macOS on CPython 3.8-3.12 only, and building it needs clang with libFuzzer")

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
TARGETS = sorted(p.name for p in FUZZ.glob("ingest_*.py"))
SECONDS = int(os.environ.get("DG_FUZZ_SECONDS", "4"))


def test_there_is_a_fuzz_target_per_ingest_format():
    assert TARGETS == ["ingest_csv.py", "ingest_json.py", "ingest_jsonl.py", "ingest_openai_pairs.py",
                       "ingest_otel.py", "ingest_parquet.py"]


@pytest.mark.parametrize("target", TARGETS)
def test_a_short_fuzz_run_finds_no_crash_and_no_unbalanced_ingest(target, tmp_path):
    done = subprocess.run([sys.executable, str(FUZZ / target), f"-max_total_time={SECONDS}",
                           f"-artifact_prefix={tmp_path}/", "-rss_limit_mb=3072"],
                          capture_output=True, text=True, timeout=SECONDS + 120, cwd=tmp_path)
    found = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "leak-", "oom-", "timeout-")))
    assert done.returncode == 0 and not found, (found, done.stderr[-3000:])
    assert "Done" in done.stderr
