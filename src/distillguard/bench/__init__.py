"""The detection benchmark: detectors run over simulated scenarios, scored against the labels.

``run_bench`` (bench.run) is the ``distillguard bench`` command; ``bench.metrics`` holds the
scoring as pure functions over verdict and label tables; ``bench.registry`` lists the detectors.
This package may import both the simulator and the detectors; neither imports it.
"""

from distillguard.bench.registry import BASELINES, DETECTORS
from distillguard.bench.run import DEFAULT_SCALE, DEFAULT_SCENARIOS, DEFAULT_SEED, run_bench

__all__ = ["BASELINES", "DEFAULT_SCALE", "DEFAULT_SCENARIOS", "DEFAULT_SEED", "DETECTORS", "run_bench"]
