"""The two pictures of a benchmark run, drawn from the results dictionary alone (so they can be
redrawn from ``results.json``): what each campaign obtained over time under each detector, and
recall and precision per scenario."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402

NO_DEFENCE = "no defence"


def leakage_plot(results: dict[str, Any], path: Path) -> Path | None:
    """Cumulative campaign exchanges obtained, as a share of everything the campaigns sent, over
    the replay; one panel per scenario with a campaign, one line per detector."""
    scenarios = [(name, s) for name, s in results["scenarios"].items() if s.get("undefended_curve")]
    if not scenarios:
        return None
    cols = min(len(scenarios), 2)
    rows = math.ceil(len(scenarios) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.2 * rows), squeeze=False)
    for ax, (name, outcome) in zip(axes.flat, scenarios):
        undefended = outcome["undefended_curve"]
        total = undefended[-1][1] or 1
        start = datetime.fromisoformat(undefended[0][0])

        def days(curve: list) -> list[float]:
            return [(datetime.fromisoformat(t) - start).total_seconds() / 86400 for t, _ in curve]

        ax.plot(days(undefended), [100 * v / total for _, v in undefended], "--", color="grey", label=NO_DEFENCE)
        for detector, result in outcome["detectors"].items():
            curve = result.get("replay", {}).get("curve")
            if curve:
                ax.plot(days(curve), [100 * v / total for _, v in curve], label=detector, linewidth=2)
        ax.set_title(f"{name}: campaign exchanges obtained")
        ax.set_xlabel(f"days since {start:%Y-%m-%d %H:%M} UTC (detection every "
                      f"{results['run']['replay_every_hours']:g} h)")
        ax.set_ylabel("% of the campaigns' exchanges")
        ax.set_ylim(0, 105)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(scenarios):]:
        ax.axis("off")
    fig.suptitle(f"Leakage before throttling (scale {results['run']['scale']:g})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def precision_recall_plot(results: dict[str, Any], path: Path) -> Path:
    """Recall and precision at throttle or stronger, per scenario, one bar per detector."""
    scenarios = list(results["scenarios"])
    detectors = results["run"]["detectors"]
    width = 0.8 / max(len(detectors), 1)
    fig, axes = plt.subplots(1, 2, figsize=(max(7.0, 2.2 * len(scenarios) * 2), 4.2), squeeze=False)
    for ax, metric in zip(axes.flat, ("recall", "precision")):
        for i, detector in enumerate(detectors):
            values = [results["scenarios"][s]["detectors"][detector]["accounts"]["throttle"][metric]
                      for s in scenarios]
            xs = [k + (i - (len(detectors) - 1) / 2) * width for k in range(len(scenarios))]
            bars = ax.bar(xs, [100 * (v or 0.0) for v in values], width, label=detector)
            for bar, v in zip(bars, values):
                ax.annotate("n/a" if v is None else f"{100 * v:.0f}", (bar.get_x() + bar.get_width() / 2,
                            bar.get_height()), ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(scenarios)), scenarios, rotation=15)
        ax.set_ylim(0, 110)
        ax.set_ylabel(f"{metric} (%), throttle or stronger")
        ax.set_title(metric)
        ax.grid(axis="y", alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"Account-level detection (scale {results['run']['scale']:g})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
