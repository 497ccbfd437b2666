"""Pool held-out strategy results of one detector over independent draws.

Each tag draws its own held-out strategies; runs of the same detector code under two tags are two
independent samples of the strategy family, and their per-strategy rows (the ``### Strategies``
table of each run's ``results.md``) and per-persona counts pool into one distribution. The
figures are those ``distillguard bench-strategies`` reports for one run: median, 10th percentile
(numpy's linear interpolation) and worst per-strategy recall, recall pooled over accounts, and
per persona the organic accounts at throttle or stronger with a one-sided 95% Clopper-Pearson
upper bound.

usage: .venv/bin/python benchmarks/pool_heldout.py RESULTS.md [RESULTS.md ...]
"""

from __future__ import annotations

import re
import sys

from distillguard.bench.strategies import clopper_pearson_upper, recall_distribution

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


def _line(label: str, recalls: dict[str, float]) -> str:
    """The run report's figures for per-strategy recalls keyed ``draw: strategy``."""
    d = recall_distribution(recalls)
    return (f"{label}: median {100 * d['median']:.1f}%, p10 {100 * d['p10']:.1f}%, worst {100 * d['worst']:.1f}% "
            f"({d['worst_strategy'].split(': ', 1)[1]})")


def main(paths: list[str]) -> None:
    rows: dict[str, tuple[int, float, int, int]] = {}
    personas: dict[str, tuple[int, int]] = {}
    for draw, path in enumerate(paths):
        r, p = read(path)
        rows.update({f"{draw}: {name}": rest for name, *rest in r})
        for name, (accounts, flagged) in p.items():
            a, f = personas.get(name, (0, 0))
            personas[name] = (a + accounts, f + flagged)
    caught = sum(round(accounts * recall / 100) for accounts, recall, _, _ in rows.values())
    total = sum(accounts for accounts, _, _, _ in rows.values())
    print(f"{_line(f'{len(rows)} strategies', {k: r[1] / 100 for k, r in rows.items()})}, "
          f"pooled {100 * caught / total:.1f}%")
    print(_line("harvesting accounts alone", {k: r[2] / r[3] for k, r in rows.items()}))
    accounts, flagged = sum(a for a, _ in personas.values()), sum(f for _, f in personas.values())
    print(f"organic: {flagged} of {accounts:,} (95% upper bound {100 * clopper_pearson_upper(flagged, accounts):.4f}%)")
    for name, (a, f) in sorted(personas.items()):
        print(f"  {name}: {f} of {a:,} (95% upper bound {100 * clopper_pearson_upper(f, a):.4f}%)")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__.strip().splitlines()[-1])
    main(sys.argv[1:])
