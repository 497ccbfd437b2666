"""The gateway's exchange log: append-only JSONL segment files, loaded into the store in the
background.

Why files first and the store second: the store is a DuckDB file that one process writes at
a time (``scan`` and ``keys`` need it too), and an ingest costs tens of milliseconds, while a
request must not wait for either. Each exchange is one ``write`` of one JSON line to the open
segment, made before the response's last byte is sent: the kernel holds it from then on, so a
``kill -9`` of the gateway loses nothing whose response was sent. ``fsync`` follows in small
batches (every ``fsync_seconds``) for the machine's own crash.

Segments are named ``<time>-<pid>-<n>-<random>.jsonl.open`` while written and lose ``.open`` when
closed; the writer holds an exclusive ``flock`` on its open segment, so a gateway starting
up (or a second one on the same directory) closes the open segments of dead writers only.
The loader ingests closed segments with the ordinary ingest (``rows in = stored + duplicates
+ quarantined``, exchange ids deduplicated, so a segment loaded twice after a crash between
ingest and unlink stores nothing twice) and removes each one once its ingest has committed.
The writer hashes each line as it writes it and leaves ``<segment>.sha256`` beside a segment it
closes; the loader links both that hash and the hash of what it loaded into the store's hash
chain (store/chain.py), so a segment changed on disk in between is named.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import orjson

from distillguard.errors import IngestError, UserError
from distillguard.ingest.run import ingest_file
from distillguard.ingest.sources import Source
from distillguard.store import Store, chain

log = logging.getLogger("distillguard.gateway")

#: one DuckDB database is one instance per process, and two of its connections that redefine
#: the store's view at once conflict: every use of the store inside a gateway process (the
#: loader, the key table, overrides) takes this lock
STORE_LOCK = threading.Lock()

#: the names this module gives segments (``<time>-<pid>-<n>-<random>.jsonl``, ``.open`` while
#: written): the loader takes only these, never another file someone put in the directory
SEGMENT_NAME = re.compile(r"\d{8}T\d{6}-\d+-\d{6,}-[0-9a-f]{8}\.jsonl")


def segments(directory: Path, open_ones: bool = False) -> list[Path]:
    """The closed segments in ``directory`` (``open_ones``: the open ones), oldest first."""
    suffix = ".open" if open_ones else ""
    return sorted(p for p in Path(directory).glob("*.jsonl" + suffix)
                  if SEGMENT_NAME.fullmatch(p.name.removesuffix(suffix)))


def hashes_at_close(segment: Path) -> dict | None:
    """What the writer hashed of ``segment`` as it wrote it (``<segment>.sha256``), or None: a
    segment closed by recover() (its writer died) or after a torn line has none."""
    try:
        found = orjson.loads(segment.with_name(segment.name + ".sha256").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return found if isinstance(found, dict) and isinstance(found.get("sha256"), str) else None


def _write_hashes(lines: chain.JournalLines, closed: Path) -> None:
    target = closed.with_name(closed.name + ".sha256")
    staged = target.with_name(target.name + ".tmp")
    try:
        staged.write_bytes(orjson.dumps(lines.digest()))
        os.replace(staged, target)
    except OSError as exc:  # the loader then hashes the segment at load, and the chain says so
        log.error("exchange log: cannot write the hash of %s (%s)", closed.name, exc.strerror)


class JournalError(RuntimeError):
    """The log could not be written: the gateway fails closed or open, as configured."""


class Journal:
    """The open segment and its rotation. ``append`` runs on the request path: one syscall."""

    def __init__(self, directory: str | Path, fsync_seconds: float = 0.05) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{self.directory}: cannot create the exchange log directory ({exc.strerror})") from None
        self.fsync_seconds = fsync_seconds
        self._lock = threading.Lock()
        self._serial = 0
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0  # bytes of whole lines in the open segment: where a torn line is cut off
        self.rows = 0  # in the open segment
        self.opened_at = time.monotonic()
        self.appended = 0
        self.failures = 0
        self._dirty = False
        self._stop = threading.Event()
        self.recover()
        self._open()
        self._syncer = threading.Thread(target=self._sync_loop, name="journal-fsync", daemon=True)
        self._syncer.start()

    # --- the request path -------------------------------------------------------------------

    def append(self, record: dict[str, Any]) -> None:
        line = orjson.dumps(record) + b"\n"
        with self._lock:
            try:
                if self._fd is None:
                    self._open_locked()
                self._write_whole_locked(line)
            except OSError as exc:
                self.failures += 1
                raise JournalError(f"cannot write the exchange log {self._path}: {exc.strerror}") from None
            self.rows += 1
            self.appended += 1
            self._dirty = True

    def _write_whole_locked(self, line: bytes) -> None:
        """Write all of ``line`` or none of it. A full disk takes what fits and refuses the rest:
        the part written is cut off again, so that the segment holds whole lines only (a torn
        line would be quarantined at load) and the caller, told by the OSError, does not
        acknowledge the exchange."""
        done = 0
        try:
            while done < len(line):
                written = os.write(self._fd, line[done:])
                if written <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                done += written
        except OSError:
            if done:
                self._cut_torn_line_locked()
            raise
        self._size += done
        self._hashes.add(line)

    def _cut_torn_line_locked(self) -> None:
        try:
            os.ftruncate(self._fd, self._size)
        except OSError as exc:
            # the segment keeps a torn line (quarantined at load, its exchange never acknowledged):
            # it is closed here, and the next append opens a new one
            log.error("exchange log: cannot cut a torn line off %s (%s); closing it", self._path, exc.strerror)
            fd, path = self._fd, self._path
            self._fd = None
            os.rename(path, path.with_name(path.name.removesuffix(".open")))
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def writable(self, room: int = 64 * 1024) -> str | None:
        """None when an append is likely to succeed now: a segment is open (one is opened if
        none is) and its file system has ``room`` bytes free; else why not. A gateway that fails
        closed asks this before it serves again, rather than serving an answer it then cannot log."""
        with self._lock:
            try:
                if self._fd is None:
                    self._open_locked()
                stats = os.fstatvfs(self._fd)
            except OSError as exc:
                return f"cannot write the exchange log in {self.directory}: {exc.strerror}"
        if stats.f_bavail * stats.f_frsize < room:
            return f"the exchange log's file system ({self.directory}) has less than {room} bytes free"
        return None

    # --- segments ---------------------------------------------------------------------------

    def _open(self) -> None:
        with self._lock:
            self._open_locked()

    def _open_locked(self) -> None:
        self._serial += 1
        name = (f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}-{self._serial:06d}-"
                f"{uuid.uuid4().hex[:8]}.jsonl.open")
        path = self.directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._fd, self._path, self.rows, self._size, self.opened_at = fd, path, 0, 0, time.monotonic()
        # the hash of the lines as written, not of what is on disk by the time the loader reads it
        self._hashes = chain.JournalLines()

    def rotate(self, force: bool = False) -> Path | None:
        """Close the open segment (if it holds rows, or ``force``) and open a new one; returns
        the closed segment's path."""
        with self._lock:
            if self._fd is None or (self.rows == 0 and not force):
                return None
            fd, path = self._fd, self._path
            self._fd = None
            try:
                os.fsync(fd)
            except OSError as exc:
                log.error("exchange log: fsync of %s failed: %s", path, exc.strerror)
            closed = path.with_name(path.name.removesuffix(".open"))
            _write_hashes(self._hashes, closed)  # before the rename: a loader never sees the segment without it
            os.rename(path, closed)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            self._dirty = False
            try:
                self._open_locked()
            except OSError as exc:  # the next append reports it and tries again
                log.error("exchange log: cannot open a new segment in %s: %s", self.directory, exc.strerror)
            return closed

    def recover(self) -> list[Path]:
        """Close the open segments of writers that are gone (their flock is free)."""
        return recover(self.directory, self._path)

    def closed_segments(self) -> list[Path]:
        return segments(self.directory)

    def age_seconds(self) -> float:
        return time.monotonic() - self.opened_at

    def _sync_loop(self) -> None:
        while not self._stop.wait(self.fsync_seconds):
            with self._lock:
                fd, dirty = self._fd, self._dirty
                self._dirty = False
            if dirty and fd is not None:
                try:
                    os.fsync(fd)
                except OSError as exc:
                    log.error("exchange log: fsync failed: %s", exc.strerror)

    def close(self) -> Path | None:
        self._stop.set()
        closed = self.rotate()
        with self._lock:
            if self._fd is not None:  # the empty segment rotate opened (or left)
                path, fd = self._path, self._fd
                self._fd = None
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
                path.unlink(missing_ok=True)
        return closed


def recover(directory: Path, own: Path | None = None) -> list[Path]:
    """Close the open segments in ``directory`` of writers that are gone (their flock is
    free); ``own``: the caller's open segment, left alone."""
    closed = []
    for path in segments(directory, open_ones=True):
        if path == own:
            continue
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a live writer holds it
            os.close(fd)
            continue
        target = path.with_name(path.name.removesuffix(".open"))
        os.rename(path, target)
        os.close(fd)
        closed.append(target)
        log.info("exchange log: closed %s left open by a writer that is gone", target.name)
    return closed


class _Reader:
    """What the loader needs of a journal, in a process that does not write one."""

    rows = 0

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def rotate(self) -> None:
        return None

    def recover(self) -> list[Path]:
        return recover(self.directory)

    def closed_segments(self) -> list[Path]:
        return segments(self.directory)

    def age_seconds(self) -> float:
        return 0.0


#: how much lower than the gateway's the loader process's CPU priority is (see _loader_process)
LOADER_NICENESS = 10


def _die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGTERM this process when its parent dies (Linux; elsewhere the
    loader's own check of ``os.getppid()`` each second is what ends it)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    if os.getppid() != parent:  # the parent died before the request above took effect
        os._exit(0)


def _loader_main() -> None:
    """The loader process's entry point: ``python -c ... DIRECTORY DB EVERY_SECONDS PARENT_PID
    [OVERRIDES_DIR]``; after each round it writes ``loaded <rows>`` on its standard output."""
    directory, db, every, parent, overrides_dir = (sys.argv[1:] + [""])[:5]
    _loader_process(directory, db, float(every), int(parent), overrides_dir or None)


def _loader_process(directory: str, db: str, every_seconds: float, parent: int,
                    overrides_dir: str | None = None) -> None:
    """The loader's own process: ingest is CPU work in Python as much as in DuckDB, and in the
    gateway's process it would hold the interpreter's lock while requests wait.

    It stops on SIGTERM (from the gateway, from a signal to the whole process group, or from the
    kernel when the gateway dies) after the round in progress, and when its parent is gone.
    Nothing is shared with the gateway but a line per round on a pipe: a lock or an event shared across
    processes would leave the gateway waiting forever on one this process held when it died.
    (It is a plain subprocess, not a multiprocessing one, for the same reason: multiprocessing
    would add a resource-tracker process that outlives the loader.)"""
    _die_with_parent(parent)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the gateway decides when this stops
    # background work: it yields the CPU to the requests in flight (a round that runs late
    # costs nothing, the segments wait on disk), and one DuckDB thread leaves the other cores
    # to the gateway
    try:
        os.nice(LOADER_NICENESS)
    except OSError:  # pragma: no cover - not permitted here
        pass
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sync = None
    if overrides_dir is not None:
        from distillguard.gateway.overrides import CopyToStore

        sync = CopyToStore(overrides_dir)
    loader = Loader(_Reader(Path(directory)), db, every_seconds, in_process=True, sync=sync, duckdb_threads=1)
    due = time.monotonic() + every_seconds
    while not stopping and os.getppid() == parent:
        time.sleep(max(0.0, min(0.2, due - time.monotonic())))
        if time.monotonic() < due:
            continue
        due = time.monotonic() + every_seconds
        try:
            loader.round()
        except Exception:  # noqa: BLE001 - the loader must outlive any one bad round
            log.exception("exchange log: loader round failed; segments kept on disk, next round retries")
        try:
            print(f"loaded {loader.loaded_rows}", flush=True)
        except BrokenPipeError:  # the gateway is gone
            return


class Loader:
    """Moves closed segments into the store, in the background, every ``every_seconds``.

    The store is opened for each round and closed after it, so that ``scan`` and ``keys`` can
    open it in between; a round that finds it locked (or unwritable) leaves the segments on
    disk, says so in the log, and tries again next round: nothing is dropped. By default the
    rounds run in a process of their own (``in_process=False``) and this one only rotates
    segments; ``stop`` drains what is left here. ``sync``: a further step of each round that
    writes the store (the operators' overrides, overrides.CopyToStore), run when its
    ``pending()`` says so even if no segment is waiting.
    """

    def __init__(self, journal: Journal, db: str | Path, every_seconds: float = 5.0,
                 segment_seconds: float = 30.0, segment_rows: int = 50_000,
                 on_loaded: Callable[[int], None] | None = None, in_process: bool = False,
                 duckdb_threads: int | None = None, compact_segments: int = 48, sync: Any = None) -> None:
        self.in_process = in_process
        self.duckdb_threads = duckdb_threads
        self._child = None
        self._child_loaded = 0
        self.sync = sync
        self.journal = journal
        self.db = str(db)
        self.every_seconds = every_seconds
        self.segment_seconds = segment_seconds
        self.segment_rows = segment_rows
        # the store's small segments are merged once there are this many (Store.compact)
        self.compact_segments = compact_segments
        self.on_loaded = on_loaded
        self._loaded_here = 0
        self.quarantined_rows = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="journal-loader", daemon=True)

    @property
    def loaded_rows(self) -> int:
        """Rows this loader (and its process) stored."""
        return self._loaded_here + self._child_loaded

    def start(self) -> None:
        if not self.in_process:
            self._child = subprocess.Popen(
                [sys.executable, "-c", "from distillguard.gateway.journal import _loader_main; _loader_main()",
                 str(self.journal.directory), self.db, repr(self.every_seconds), str(os.getpid()),
                 str(getattr(self.sync, "directory", "") or "")],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
            threading.Thread(target=self._read_child, name="journal-loader-rows", daemon=True).start()
        self._thread.start()

    def _read_child(self) -> None:
        for line in self._child.stdout:
            kind, _, value = line.decode(errors="replace").partition(" ")
            if kind == "loaded" and value.strip().isdigit():
                self._child_loaded = int(value)

    def _loop(self) -> None:
        while not self._stop.wait(min(self.every_seconds, 1.0) if not self.in_process else self.every_seconds):
            try:
                if self.in_process:
                    self.round()
                else:  # rotation only: the child loads
                    j = self.journal
                    if j.rows >= self.segment_rows or (j.rows and j.age_seconds() >= self.segment_seconds):
                        j.rotate()
            except Exception:  # noqa: BLE001 - the loader must outlive any one bad round
                log.exception("exchange log: loader round failed; segments kept on disk, next round retries")

    def round(self, rotate: bool = False) -> int:
        """Rotate the open segment when it is old or full (or ``rotate``), then load every
        closed segment; returns the rows stored."""
        j = self.journal
        if rotate or j.rows >= self.segment_rows or (j.rows and j.age_seconds() >= self.segment_seconds):
            j.rotate()
        j.recover()
        segments = j.closed_segments()
        if not segments and not (self.sync is not None and self.sync.pending()):
            return 0
        with STORE_LOCK:
            return self._load(segments)

    def _load(self, segments: list[Path]) -> int:
        try:
            store = Store(self.db)
        except UserError as exc:
            self._failed(f"store not writable now, {len(segments)} segment(s) kept on disk: {exc}")
            return 0
        stored = 0
        try:
            if self.duckdb_threads:
                store.con.execute(f"SET threads TO {int(self.duckdb_threads)}")
            for path in segments:
                at_close = hashes_at_close(path)
                try:
                    result = ingest_file(store, Source(path, "jsonl", None, path.stat().st_size))
                    self._link(store, path, at_close, result.sha256)
                except (IngestError, duckdb.Error, OSError) as exc:
                    self._failed(f"cannot load {path.name} (kept on disk): {exc}")
                    break
                stored += result.rows_stored
                self._loaded_here += result.rows_stored
                self.quarantined_rows += result.rows_quarantined
                if result.rows_quarantined:
                    log.warning("exchange log: %s: %d row(s) quarantined (see the store's quarantine table)",
                                path.name, result.rows_quarantined)
                path.unlink()
                path.with_name(path.name + ".sha256").unlink(missing_ok=True)
            else:
                self.last_error = None
            if self.sync is not None and self.sync.pending():
                try:
                    self.sync(store.con)
                except (duckdb.Error, OSError) as exc:  # the file keeps them: next round
                    log.warning("overrides: cannot copy into the store now (%s); next round retries", exc)
            if stored:
                self._compact(store)
        finally:
            store.close()
        if stored and self.on_loaded:
            self.on_loaded(stored)
        return stored

    def _link(self, store: Store, path: Path, at_close: dict | None, file_sha256: str) -> None:
        """The segment's link in the store's hash chain; a segment changed between its close and its
        load is stored all the same (nothing the gateway served is dropped) and named, here and by
        ``distillguard verify``."""
        at_load = chain.journal_lines_digest(path)
        lines = chain.first_line_difference(at_close, at_load) if at_close else None
        if at_close is not None and at_close["sha256"] != at_load["sha256"]:
            log.error("exchange log: %s changed on disk after it was closed (%s); loaded, and the hash chain "
                      "records both hashes", path.name, lines or "its lines")
        chain.record_journal_segment(store.con, path.name, at_close, at_load, file_sha256, lines)

    def _compact(self, store: Store) -> None:
        """One segment per loaded file would pile up (a month: tens of thousands); merge them.
        A failed merge changes nothing (Store.compact) and is tried again after the next load."""
        try:
            merged = store.compact(self.compact_segments)
        except (duckdb.Error, OSError) as exc:
            log.warning("exchange log: cannot merge the store's small segments now (%s); next round retries", exc)
            return
        if merged:
            log.info("exchange log: merged %d small segments of the store into one", merged)

    def _failed(self, message: str) -> None:
        if message != self.last_error:
            log.error("exchange log: %s", message)
        self.last_error = message

    def stop(self, drain: bool = True) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._child is not None:
            if self._child.poll() is None:
                self._child.terminate()  # it finishes the round in progress, then exits
            try:
                self._child.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self._child.kill()
                self._child.wait()
        if drain:
            self.round(rotate=True)
