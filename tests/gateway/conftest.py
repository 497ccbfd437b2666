"""Fixtures of the gateway tests: the mock upstream LLM, a small disk, and gateways stopped
whatever the test did."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.gateway.procs import Gateway, mock_upstream, start_gateway


@pytest.fixture(scope="module")
def upstream(request: pytest.FixtureRequest) -> Iterator[int]:
    """The port of a mock upstream LLM shared by the tests of a module. A module paces the
    upstream's streams with ``UPSTREAM_CHUNK_DELAY_MS`` (milliseconds between chunks; 5 if it
    does not say), e.g. slower to keep a stream in flight while the test acts."""
    with mock_upstream(chunk_delay_ms=getattr(request.module, "UPSTREAM_CHUNK_DELAY_MS", 5.0)) as port:
        yield port


@pytest.fixture
def own_upstream() -> Iterator[int]:
    """The port of a mock upstream LLM of the test's own (20 ms between chunks), for a test that
    may leave it busy or broken: killed gateways with hundreds of streams in flight."""
    with mock_upstream(chunk_delay_ms=20) as port:
        yield port


@pytest.fixture
def gateways() -> Iterator[Callable[..., Gateway]]:
    """``start_gateway``, each gateway it started killed at the end of the test whatever happened."""
    started: list[Gateway] = []

    def start(*args, **kwargs) -> Gateway:
        started.append(start_gateway(*args, **kwargs))
        return started[-1]

    yield start
    for gw in started:
        gw.stop(signal.SIGKILL)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, to fill the exchange log's disk (root only; skipped where mount is refused)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for a disk-full test: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)
