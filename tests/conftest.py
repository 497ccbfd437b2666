from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Iterable

import pytest

from distillguard.store import Store


#: test files that make test runs on one pytest-xdist worker, one after the other, by group name: the
#: two Spark tests each start a JVM of gigabytes that takes both cores (a file not named here is a
#: group of its own)
WORKER_GROUPS = {
    "tests/store/test_engine_parity.py": "spark",
    "tests/store/test_spark_cluster.py": "spark",
}
#: groups that start first, the longest ones, so that the run does not end with one worker still on
#: them while the others idle (the Spark tests: about 6 minutes)
LONGEST_GROUPS_FIRST = ("spark",)


def _worker_group(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return WORKER_GROUPS.get(path, path)


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Under ``--dist loadfile`` (make test), each file's tests run on one worker, so that a
    module's fixtures (a Spark session, a LiteLLM proxy, a console) start once, and the files of
    one ``WORKER_GROUPS`` group run on the same worker. (xdist's own ``--dist loadgroup`` cannot
    be used: it renames each test's ``_nodeid``, which pytest 9.2 no longer reads.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FileGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _worker_group(nodeid)

    return FileGroupScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker, the tests of ``LONGEST_GROUPS_FIRST`` are moved to the front: workers
    take the groups in collection order (make test passes ``--no-loadscope-reorder``)."""
    if not hasattr(config, "workerinput"):
        return

    def rank(item: pytest.Item) -> int:
        group = _worker_group(item.nodeid)
        return LONGEST_GROUPS_FIRST.index(group) if group in LONGEST_GROUPS_FIRST else len(LONGEST_GROUPS_FIRST)

    items.sort(key=rank)  # stable: collection order within each rank


@pytest.fixture
def store() -> Iterable[Store]:
    s = Store(":memory:")
    yield s
    s.close()


@pytest.fixture(scope="session")
def alibaba_small(tmp_path_factory) -> Path:
    """Four per mille of alibaba-2026 (seed 11), simulated once for the session: the directory
    holding its exchanges.parquet and labels.parquet, which tests read and never write. The
    scan's and the report's end-to-end tests start from it."""
    from distillguard.simulate import simulate

    out = tmp_path_factory.mktemp("alibaba-small")
    simulate("alibaba-2026", scale=0.004, seed=11, out_dir=out)
    return out


# --- process hygiene: no process a test started outlives the test run ---------------------------

#: prctl option that makes this process adopt its orphaned descendants (Linux >= 3.4)
_PR_SET_CHILD_SUBREAPER = 36


def _adopt_orphans() -> bool:
    """Make the pytest process a child subreaper, so that a grandchild whose parent died (a
    gateway's loader after a kill -9, a LiteLLM worker) is re-parented here instead of to init,
    and is still found among our descendants at the end."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux: orphans go to init and only children are found
        return False


def _descendants() -> list[tuple[int, str]]:
    """(pid, command line) of the live (not zombie) descendants of this process."""
    try:
        import psutil
    except ImportError:
        return _descendants_from_proc()
    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                out.append((child.pid, " ".join(child.cmdline())[:300]))
        except psutil.NoSuchProcess:
            continue
    return out


def _descendants_from_proc() -> list[tuple[int, str]]:
    parents: dict[int, list[int]] = {}
    facts: dict[int, tuple[str, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after its last ")"
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        parents.setdefault(int(ppid), []).append(int(entry.name))
        facts[int(entry.name)] = (state, cmdline[:300])
    out, todo = [], list(parents.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        todo.extend(parents.get(pid, []))
        if facts[pid][0] != "Z":
            out.append((pid, facts[pid][1]))
    return out


@pytest.fixture(autouse=True)
def multiprocessing_resource_tracker_stopped_after() -> Iterable[None]:
    """Stops multiprocessing's resource tracker if the test started it (any spawn pool does,
    e.g. the benchmark replay's workers).

    The tracker is the interpreter's own helper: it serves every later pool and ends when this
    process does, so library code must not stop it (another pool or a shared memory block of
    the caller's may still be registered with it). Here the test is over; the pool's semaphores
    are collected first, so that none is left for the tracker to unlink and no finalizer starts
    a new one.
    """
    from multiprocessing import resource_tracker

    tracker = resource_tracker._resource_tracker
    was_running = tracker._fd is not None
    yield
    if was_running or tracker._fd is None or not hasattr(tracker, "_stop"):  # private; CPython 3.11 has it
        return
    import gc

    gc.collect()
    tracker._stop()


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_tests() -> Iterable[None]:
    """Every test stops what it starts: at the end of the run, a process started by any test
    (or by a process a test started) that is still running is an error of the session. The
    leftovers are listed, then killed, so that they do not outlive ``make test`` either."""
    _adopt_orphans()
    yield
    deadline = time.monotonic() + 10.0  # what a teardown just signalled may still be exiting
    left = _descendants()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = _descendants()
    if not left:
        return
    for pid, _ in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    listing = "\n".join(f"  pid {pid}: {cmd}" for pid, cmd in left)
    pytest.fail(f"{len(left)} process(es) started by the tests were still running after the last test "
                f"(killed now):\n{listing}", pytrace=False)
