"""Baselines the benchmark compares every detector with: what a provider would otherwise deploy.

Each implements the ``Detector`` protocol (verdicts.py) and fits its thresholds on organic
reference traffic so that it respects the same false-positive ceiling as any other detector.
They read only the canonical exchanges; they never import the simulator.
"""

from distillguard.bench.baselines.isolation_forest import IsolationForestBaseline
from distillguard.bench.baselines.rate_limits import RateLimits

__all__ = ["IsolationForestBaseline", "RateLimits"]
