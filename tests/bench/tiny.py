"""The tiny scenarios that the benchmark tests share: their scale, and one simulation cache a
session, so that each is simulated once however many modules use it."""

from __future__ import annotations

from pathlib import Path

import pytest

#: the scale of the benchmark tests' scenarios: a few accounts of each kind, seconds to simulate
TINY = 0.002


def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The simulation cache that every benchmark test module shares."""
    return tmp_path_factory.getbasetemp() / "bench-cache"
