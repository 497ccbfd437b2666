"""Labelled API traffic for testing distillation detectors: organic customers and campaigns.

``simulate(scenario, scale, seed, ...)`` writes exchanges in the canonical schema together with
the ground truth. Scenarios are YAML files (``scenarios/`` ships a library). This package must
never import the detector: it is the detector's independent examiner.
"""

from distillguard.simulate.run import SimulationSummary, simulate
from distillguard.simulate.scenario import Scenario, ScenarioError, load_scenario, shipped_scenarios

__all__ = ["Scenario", "ScenarioError", "SimulationSummary", "load_scenario", "shipped_scenarios", "simulate"]
