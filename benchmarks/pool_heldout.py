"""Pool held-out strategy results of one detector over independent draws.

Each tag draws its own held-out strategies; runs of the same detector code under two tags are two
independent samples of the strategy family, and their per-strategy rows (the ``### Strategies``
table of each run's ``results.md``) and per-persona counts pool into one distribution. The
figures are those ``distillguard bench-strategies`` reports for one run: median, 10th percentile
(numpy's linear interpolation) and worst per-strategy recall, recall pooled over accounts, and
per persona the organic accounts at throttle or stronger with a one-sided 95% Clopper-Pearson
upper bound.

usage: python3 benchmarks/pool_heldout.py RESULTS.md [RESULTS.md ...]
"""

from __future__ import annotations

import re
import sys

import numpy as np
from scipy import stats

STRATEGY_ROW = re.compile(r"\| ([a-z_/]+) \| (\d+) \| ([\d.]+)% \| [\d.]+% \| (\d+) of (\d+)")
PERSONA_ROW = re.compile(r"\| ([a-z_]+) \| ([\d,]+) \| (\d+) \|")


def read(path: str) -> tuple[list[tuple[str, int, float, int, int]], dict[str, tuple[int, int]]]:
    """(strategy rows: name, accounts, recall %, harvesters caught, harvesters; persona -> (accounts, flagged))."""
    text = open(path, encoding="utf-8").read()
    strategies = text.split("### Strategies", 1)[1].split("###", 1)[0]
    rows = [(m[1], int(m[2]), float(m[3]), int(m[4]), int(m[5]))
            for m in map(STRATEGY_ROW.match, strategies.splitlines()) if m]
    table = text.split("| persona |", 1)[1].split("\n\n", 1)[0]
    personas = {m[1]: (int(m[2].replace(",", "")), int(m[3]))
                for m in map(PERSONA_ROW.match, table.splitlines()) if m and m[1] != "all"}
    return rows, personas


def upper_bound(flagged: int, accounts: int) -> float:
    return 1.0 if flagged >= accounts else float(stats.beta.ppf(0.95, flagged + 1, accounts - flagged))


def main(paths: list[str]) -> None:
    rows: list[tuple[str, int, float, int, int]] = []
    personas: dict[str, tuple[int, int]] = {}
    for path in paths:
        r, p = read(path)
        rows += r
        for name, (accounts, flagged) in p.items():
            a, f = personas.get(name, (0, 0))
            personas[name] = (a + accounts, f + flagged)
    recall = np.array([r[2] for r in rows])
    harvest = np.array([100.0 * r[3] / r[4] for r in rows])
    caught = sum(round(r[1] * r[2] / 100) for r in rows)
    print(f"{len(rows)} strategies: median {np.median(recall):.1f}%, p10 {np.quantile(recall, 0.1):.1f}%, "
          f"worst {recall.min():.1f}% ({rows[int(recall.argmin())][0]}), pooled {100 * caught / sum(r[1] for r in rows):.1f}%")
    print(f"harvesting accounts alone: median {np.median(harvest):.1f}%, p10 {np.quantile(harvest, 0.1):.1f}%, "
          f"worst {harvest.min():.1f}% ({rows[int(harvest.argmin())][0]})")
    accounts, flagged = sum(a for a, _ in personas.values()), sum(f for _, f in personas.values())
    print(f"organic: {flagged} of {accounts:,} (95% upper bound {100 * upper_bound(flagged, accounts):.4f}%)")
    for name, (a, f) in sorted(personas.items()):
        print(f"  {name}: {f} of {a:,} (95% upper bound {100 * upper_bound(f, a):.4f}%)")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__.strip().splitlines()[-1])
    main(sys.argv[1:])
