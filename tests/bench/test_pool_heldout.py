"""benchmarks/pool_heldout.py: held-out runs of one detector pooled over independent draws."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks/pool_heldout.py"
RUNS = [ROOT / f"benchmarks/results/strategies-heldout-detector-2026-12-06{tag}.md" for tag in "jl"]


def pooled(*paths: Path) -> str:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, paths)], check=True, capture_output=True,
                          text=True).stdout


def headline(path: Path) -> tuple[str, str, str, str]:
    """(median, p10, worst, organic count) as the run's own report gives them."""
    text = path.read_text()
    row = text.split("| median | p10 | worst |", 1)[1].splitlines()[2].split("|")
    organic = re.search(r"all personas pooled: (\d+) of ([\d,]+)", text)
    return row[1].strip(), row[2].strip(), row[3].strip(), f"{organic[1]} of {organic[2]}"


def test_one_run_pooled_alone_reproduces_its_own_report():
    for path in RUNS:
        median, p10, worst, organic = headline(path)
        out = pooled(path)
        assert f"median {median}, p10 {p10}, worst {worst}" in out
        assert f"organic: {organic} " in out


def test_two_draws_pool_their_strategies_and_organic_accounts():
    out = pooled(*RUNS)
    assert out.startswith("24 strategies: ")
    counts = [re.search(r"all personas pooled: (\d+) of ([\d,]+)", p.read_text()) for p in RUNS]
    flagged = sum(int(c[1]) for c in counts)
    accounts = sum(int(c[2].replace(",", "")) for c in counts)
    assert f"organic: {flagged} of {accounts:,} " in out
    worst = min(float(headline(p)[2].rstrip("%")) for p in RUNS)
    assert f"worst {worst:.1f}%" in out


def test_without_a_file_it_prints_its_usage_and_fails():
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode != 0 and "usage" in done.stderr
