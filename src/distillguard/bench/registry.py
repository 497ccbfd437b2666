"""The detectors ``bench`` can run, by name. Adding one is one line in DETECTORS.

A factory takes no arguments and returns an unfitted object with the ``Detector`` protocol
(verdicts.py) whose ``name`` is its key here. A detector that can judge every step of a replay
in one pass may also offer ``replay(store, as_ofs)`` (bench.replay.Replayable).
"""

from __future__ import annotations

from typing import Callable

from distillguard.bench.baselines import IsolationForestBaseline, RateLimits
from distillguard.bench.detectors import DistillguardDetector
from distillguard.errors import UserError
from distillguard.store.verdicts import Detector

DETECTORS: dict[str, Callable[[], Detector]] = {
    "distillguard": DistillguardDetector,
    "rate_limits": RateLimits,
    "isolation_forest": IsolationForestBaseline,
}

#: what users would otherwise deploy; the detection floors ask every other detector to beat them
BASELINES: frozenset[str] = frozenset({"rate_limits", "isolation_forest"})


def build(names: list[str] | tuple[str, ...]) -> list[Detector]:
    """Fresh, unfitted detectors in the order given."""
    unknown = [n for n in names if n not in DETECTORS]
    if unknown:
        raise UserError(f"unknown detector {', '.join(map(repr, unknown))}; "
                        f"known: {', '.join(sorted(DETECTORS))}")
    detectors = [DETECTORS[n]() for n in names]
    for name, det in zip(names, detectors):
        if det.name != name:  # a registration bug, not a user error
            raise AssertionError(f"detector registered as {name!r} calls itself {det.name!r}")
    return detectors
