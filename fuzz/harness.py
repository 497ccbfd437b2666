"""What every ingest fuzz target shares: one store, one input file, the ingest invariant.

Each target turns the fuzzer's bytes into a file of its format and hands it here. The only
acceptable outcomes are a clear IngestError for the whole file, or a result whose rows balance
(rows in = stored + duplicates + quarantined) with no bad row stored. Anything else (another
exception, a crash, a mismatch) is a finding: libFuzzer stops and writes the input to disk.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import atheris

with atheris.instrument_imports(include=["distillguard"]):
    from distillguard.errors import IngestError
    from distillguard.ingest import ingest_paths
    from distillguard.store import Store

#: a fresh store now and then: every ingest adds a segment that each later one lists
RUNS_PER_STORE = 200


def _flag(name: str) -> float | None:
    for arg in sys.argv[1:]:
        if arg.startswith(f"-{name}="):
            return float(arg.split("=", 1)[1])
    return None


class _Target:
    """The callback libFuzzer runs per input.

    It ends the run itself when ``-runs`` or ``-max_total_time`` is reached, after closing the
    store: libFuzzer's own exit runs C++ destructors under a live interpreter, and DuckDB's
    then corrupt the heap (``malloc(): unsorted double linked list corrupted``), which would
    read as a finding.
    """

    def __init__(self, suffix: str, to_file: Callable[[bytes], bytes]) -> None:
        self._max_runs = _flag("runs")
        self._deadline = None if _flag("max_total_time") is None else time.monotonic() + _flag("max_total_time")
        self._dir = tempfile.TemporaryDirectory(prefix="dg-fuzz-")
        self._path = Path(self._dir.name) / f"input{suffix}"
        self._to_file = to_file
        self._store: Store | None = None
        self._runs = 0

    def _finish(self) -> None:
        if self._store is not None:
            self._store.close()
        self._dir.cleanup()
        print(f"Done {self._runs} runs (distillguard harness)", file=sys.stderr, flush=True)
        os._exit(0)

    def __call__(self, data: bytes) -> None:
        if (self._max_runs is not None and self._runs >= self._max_runs) or \
                (self._deadline is not None and time.monotonic() > self._deadline):
            self._finish()
        if self._store is None or self._runs % RUNS_PER_STORE == 0:
            if self._store is not None:
                self._store.close()
            self._store = Store(":memory:", memory_limit="1GB")
        self._runs += 1
        self._path.write_bytes(self._to_file(data))
        try:
            [result] = ingest_paths(self._store, [self._path])
        except IngestError:
            return
        if not result.balanced:
            raise AssertionError(f"rows do not balance: {result}")
        stored = self._store.con.execute(
            "SELECT count(*) FILTER (WHERE exchange_id IS NULL OR account_id IS NULL OR prompt IS NULL "
            "OR timestamp IS NULL), count(*) - count(DISTINCT exchange_id) FROM exchanges").fetchone()
        if stored != (0, 0):
            raise AssertionError(f"a bad or repeated row was stored: {stored}")


def fuzz(suffix: str, to_file: Callable[[bytes], bytes] = lambda data: data) -> None:
    """Run libFuzzer on the ingest of files of ``suffix`` built by ``to_file`` (argv: its flags)."""
    atheris.Setup(sys.argv, _Target(suffix, to_file))
    atheris.Fuzz()


def json_value(data: bytes) -> object:
    """The fuzzer's bytes as a JSON value when they parse as one, else as text."""
    import json

    text = data.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except ValueError:
        return text
