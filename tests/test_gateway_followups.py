"""Gateway defects found by the fault-injection and property suites, each pinned by the test
that failed before its fix: the exchange log on a full disk, and what aiohttp does on its own
with clients that send broken or unfinished requests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import orjson
import pytest

from distillguard.gateway.journal import Journal, JournalError, Loader
from distillguard.store import Store


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs (root only; skipped where mount is refused)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _exchange(i: int) -> dict:
    # 3,000-byte lines: a 4 KiB page boundary falls inside most of them, so the disk fills mid-line
    return {"exchange_id": f"gw-full-{i}", "timestamp": "2026-01-01T00:00:00+00:00", "account_id": "alice",
            "prompt": f"line {i} " + "x" * 2900, "status_code": 200}


def test_a_journal_that_fills_its_disk_mid_line_keeps_whole_lines_only_and_says_the_line_was_not_logged(
        tmp_path, small_disk):
    journal = Journal(small_disk / "log")
    refused = 0
    for i in range(200):  # 600 KB into 256 KiB
        try:
            journal.append(_exchange(i))
        except JournalError:
            refused += 1
    assert refused > 0 and journal.appended + refused == 200
    lines = Path(journal._path).read_bytes().split(b"\n")
    assert lines[-1] == b"", "the segment ends with a torn line"
    assert [orjson.loads(line)["exchange_id"] for line in lines[:-1]] == [f"gw-full-{i}" for i in range(journal.appended)]
    loader = Loader(journal, tmp_path / "store.duckdb", in_process=True)
    assert loader.round(rotate=True) == journal.appended and loader.quarantined_rows == 0
    with Store(tmp_path / "store.duckdb", read_only=True) as store:
        assert store.con.execute("SELECT count(*) FROM exchanges").fetchone()[0] == journal.appended
    journal.close()


def test_a_journal_on_a_full_disk_says_it_cannot_write_until_the_disk_has_room_again(small_disk):
    journal = Journal(small_disk / "log")
    filler = small_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:  # ENOSPC: full
        pass
    finally:
        os.close(fd)
    assert journal.writable() is not None
    with pytest.raises(JournalError):
        journal.append(_exchange(0))
    filler.unlink()
    assert journal.writable() is None
    journal.append(_exchange(1))
    assert journal.appended == 1
    journal.close()
