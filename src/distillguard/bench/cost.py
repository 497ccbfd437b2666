"""Wall time and peak memory of one detector call.

Memory is the process's resident set (RSS), because DuckDB and scikit-learn allocate outside
Python's heap where tracemalloc cannot see. Linux lets a process reset its RSS high-water mark
(``/proc/self/clear_refs``), so the peak is the peak of this call, not of the whole process;
where that is not possible the peak is reported as None rather than guessed.
"""

from __future__ import annotations

import gc
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass
class Cost:
    """``peak_rss_mb``: highest RSS during the call; ``rss_increase_mb``: that peak minus the
    RSS when it started (memory the call needed beyond what the process already held)."""

    seconds: float = 0.0
    peak_rss_mb: float | None = None
    rss_increase_mb: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@contextmanager
def measured() -> Iterator[Cost]:
    """Measure the body: ``with measured() as cost: ...`` then read ``cost``."""
    cost = Cost()
    gc.collect()
    resettable = _reset_peak()
    before = _status_kib("VmRSS")
    started = time.perf_counter()
    try:
        yield cost
    finally:
        cost.seconds = time.perf_counter() - started
        peak = _status_kib("VmHWM") if resettable else None
        if peak is not None and before is not None:
            cost.peak_rss_mb = peak / 1024
            cost.rss_increase_mb = max(peak - before, 0) / 1024


def process_peak_mb() -> float | None:
    """This process's RSS high-water mark in MiB (None where the system does not say)."""
    peak = _status_kib("VmHWM")
    return None if peak is None else peak / 1024


def _reset_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None
