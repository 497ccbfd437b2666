"""Tell-strength sweeps: where detection of an adaptive campaign breaks, and which tell carries it.

An adaptive campaign keeps every per-account feature inside the organic range; what
it cannot hide are collective tells, each with a strength knob under the campaign's ``tells``
(simulate/scenario.py, Tells). A sweep turns one knob at a time from full strength down to zero,
the others left at the scenario's defaults, simulates the scenario again at each step and
measures the detector: the share of campaign accounts throttled or stronger, and of organic
accounts. A tell whose removal drops recall carries detection; one whose removal changes
nothing is not used, or is covered by the others.

Each step is an ordinary scenario file (``base:`` the swept scenario, one tell overridden),
prepared through the benchmark's cache like any other scenario.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from distillguard.bench.metrics import account_metrics, judge
from distillguard.bench.prepare import prepare
from distillguard.bench.report import pct
from distillguard.bench.detectors import DistillguardDetector
from distillguard.errors import UserError
from distillguard.simulate.scenario import load_scenario

#: the knobs a sweep turns, as paths under a campaign's ``tells``; model_pivot is its share of
#: requests on the new model (0: the fleet never moves)
TELLS: dict[str, tuple[str, ...]] = {
    "coverage_complementarity": ("coverage_complementarity",),
    "controller_synchrony": ("controller_synchrony",),
    "shared_scaffolding": ("shared_scaffolding",),
    "creation_burst": ("creation_burst",),
    "model_pivot": ("model_pivot", "share"),
}
STRENGTHS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class Point:
    tell: str
    strength: float
    recall: float | None  # campaign accounts throttled or stronger
    organic_fpr: float | None
    monitor_recall: float | None


def variant(scenario: str, tell: str, strength: float, directory: Path) -> Path:
    """A scenario file: ``scenario`` with ``tell`` set to ``strength`` in every campaign."""
    base = load_scenario(scenario)
    path = TELLS[tell]
    override: dict[str, Any] = {}
    for name in base.campaigns:
        node: dict[str, Any] = override.setdefault(name, {}).setdefault("tells", {})
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = strength
    directory.mkdir(parents=True, exist_ok=True)
    file = directory / f"{base.name}-{tell}-{strength:g}.yaml"
    file.write_text(yaml.safe_dump({"name": file.stem, "base": scenario,
                                    "description": f"{base.name} with {tell} = {strength:g}",
                                    "campaigns": override}, sort_keys=True))
    return file


def default_strength(scenario: str, tell: str) -> float:
    """The scenario's own strength of ``tell`` (its first campaign's; a sweep sets every
    campaign's, see :func:`variant`).

    Raises:
        UserError: the scenario has no campaign to sweep.
    """
    campaigns = load_scenario(scenario).campaigns
    if not campaigns:
        raise UserError(f"scenario {scenario!r} has no campaign: nothing to sweep")
    node: Any = next(iter(campaigns.values())).tells
    for key in TELLS[tell]:
        node = getattr(node, key)
    return float(node)


def sweep(scenario: str, scale: float, seed: int, cache: Path, work: Path,
          tells: Sequence[str] = tuple(TELLS), strengths: Sequence[float] = STRENGTHS,
          detector: DistillguardDetector | None = None,
          progress: Callable[[str], None] | None = None) -> list[Point]:
    """One Point per (tell, strength): the detector's final verdicts on that variant."""
    detector = detector or DistillguardDetector()
    points = []
    for tell in tells:
        for strength in strengths:
            file = variant(scenario, tell, strength, work)
            if progress:
                progress(f"{tell} = {strength:g}")
            prepared = prepare(str(file), scale, seed, cache, progress)
            with prepared.open(read_only=True) as store:
                verdicts = detector.detect(store)
            judged = judge(verdicts, prepared.labels)
            throttled, monitored = account_metrics(judged, "throttle"), account_metrics(judged, "monitor")
            points.append(Point(tell, strength, throttled["recall"], throttled["organic_fpr"],
                                monitored["recall"]))
    return points


def plot(points: Sequence[Point], defaults: dict[str, float], path: Path, title: str) -> Path:
    """Recall (throttle or stronger) against each tell's strength, one line per tell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for tell in dict.fromkeys(p.tell for p in points):
        mine = sorted((p for p in points if p.tell == tell), key=lambda p: p.strength)
        # an unmeasured recall (no campaign account at that scale) is a gap, not a zero
        line, = ax.plot([p.strength for p in mine], [float("nan") if p.recall is None else 100 * p.recall
                                                     for p in mine], marker="o", label=tell)
        if tell in defaults:
            ax.axvline(defaults[tell], color=line.get_color(), alpha=0.25, linestyle=":")
    ax.axhline(80, color="grey", linestyle="--", linewidth=1, label="floor (80%)")
    ax.set_xlabel("tell strength (0 = absent; dotted: the scenario's default)")
    ax.set_ylabel("campaign accounts throttled or stronger (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown(points: Sequence[Point], defaults: dict[str, float], scenario: str, scale: float, seed: int,
             command: str, image: str | None) -> str:
    """The docs section: the command, a table of recall per tell and strength, the plot."""
    strengths = sorted({p.strength for p in points})
    by = {(p.tell, p.strength): p for p in points}
    lines = [f"## Tell-strength sweep: {scenario}", "",
             f"`{command}`  ",
             f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · scale {scale:g}, seed {seed}; one tell turned at a time, "
             "the others at the scenario's defaults (each tell's default in brackets).", "",
             "Campaign accounts throttled or stronger (organic accounts throttled or stronger in brackets when any):",
             "", "| tell (default) | " + " | ".join(f"{s:g}" for s in strengths) + " |",
             "|---|" + "---:|" * len(strengths)]
    for tell in dict.fromkeys(p.tell for p in points):
        cells = []
        for s in strengths:
            p = by.get((tell, s))
            cells.append("" if p is None else pct(p.recall) + (f" ({pct(p.organic_fpr, 3)})" if p.organic_fpr else ""))
        lines.append(f"| {tell} ({defaults.get(tell, float('nan')):g}) | " + " | ".join(cells) + " |")
    if image:
        lines += ["", f"![recall against tell strength]({image})"]
    return "\n".join(lines) + "\n"
