"""Finding input files, telling their format, and opening them (decompressed, hashed)."""

from __future__ import annotations

import csv
import glob
import json
import gzip
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from distillguard.errors import IngestError

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv",
           ".parquet": "parquet", ".pq": "parquet"}
COMPRESSIONS = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}
_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd"}


@dataclass(frozen=True)
class IngestLimits:
    """What one input file may cost; whatever lies beyond a cap is quarantined with its reason.

    ``max_record_bytes``: one JSON Lines line, one record of a JSON document, one CSV line.
    Longer records are never held whole in memory (a 1 MB gzip of one endless line once took
    2.4 GB of RAM); only their first kilobyte is kept, in the quarantine. 64 MiB is far above
    any real request log record (a 1M-token context is about 4 MB of text).
    ``max_decompressed_bytes``: of one compressed file (gzip, zstd); reading stops at the last
    full line before it and the rest is one quarantined record. Plain files are not capped:
    their size is on disk for anyone to see.
    """

    max_record_bytes: int = 64 << 20
    max_decompressed_bytes: int = 64 << 30


@dataclass(frozen=True)
class Source:
    path: Path
    format: str
    compression: str | None
    size: int
    #: the log format named by the user (``--format``); None: told from the first record
    log_format: str | None = None


def discover(paths: list[str | Path]) -> list[Source]:
    """Expand directories (recursively, sorted) and tell each file's format.

    A path is taken literally whenever it exists, so a file named ``[ab].jsonl`` is that file,
    never ``a.jsonl`` and ``b.jsonl``. Only a path that does not exist and holds glob characters
    (``*``, ``?``, ``[``) is expanded as a pattern (``**`` for any depth, sorted). Inside a
    directory or a pattern's matches, files without a known extension are skipped; a file named
    explicitly is sniffed instead. A missing path, or a pattern that matches nothing, is an
    error before anything is read.
    """
    sources: list[Source] = []
    for raw in paths:
        path = Path(raw)
        if path.exists():
            sources += _expand(path, named=True)
            continue
        if not glob.has_magic(str(raw)):
            raise IngestError(f"{path}: no such file or directory")
        matches = sorted(glob.glob(str(raw), recursive=True))
        if not matches:
            raise IngestError(f"{path}: no such file or directory, and no file matches it as a glob pattern")
        for match in matches:
            sources += _expand(Path(match), named=False)
    return sources


def _expand(path: Path, named: bool) -> list[Source]:
    """The sources under one existing path; ``named``: the user wrote this very file's name."""
    if path.is_dir():
        sources = []
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            if any(part.startswith(".") for part in child.relative_to(path).parts):
                continue
            sources += _expand(child, named=False)
        return sources
    fmt, comp = _by_suffix(path)
    if fmt is None:
        if not named:
            return []
        fmt, comp = _sniff(path)
    return [Source(path, fmt, comp, path.stat().st_size)]


def _by_suffix(path: Path) -> tuple[str | None, str | None]:
    suffixes = [s.lower() for s in path.suffixes]
    comp = COMPRESSIONS.get(suffixes[-1]) if suffixes else None
    if comp:
        suffixes = suffixes[:-1]
    fmt = FORMATS.get(suffixes[-1]) if suffixes else None
    return fmt, comp


def _sniff(path: Path) -> tuple[str, str | None]:
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise IngestError(f"{path}: cannot read: {exc.strerror}") from None
    comp = next((c for magic, c in _MAGIC.items() if head.startswith(magic)), None)
    if head.startswith(b"PAR1"):
        return "parquet", None
    with open_binary(Source(path, "?", comp, 0))[0] as stream:
        start = stream.read(65536).lstrip()
    if start.startswith(b"["):
        return "json", comp
    if start.startswith(b"{"):
        first_line = start.split(b"\n", 1)[0].strip()
        return ("jsonl" if first_line.endswith(b"}") else "json"), comp
    raise IngestError(f"{path}: unreadable format: expected JSON Lines, JSON, CSV or Parquet "
                      "(name the file .jsonl, .json, .csv or .parquet, optionally .gz or .zst)")


class HashingReader(io.RawIOBase):
    """Wraps the raw file: every byte read is hashed and counted, for provenance and progress."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self.sha256 = hashlib.sha256()
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        n = self._fh.readinto(buffer)
        if n:
            self.sha256.update(memoryview(buffer)[:n])
            self.bytes_read += n
        return n

    def finish(self) -> str:
        """Hash whatever the reader did not consume, close the file, return the hex digest.

        Decompressors and text wrappers close their stream when they are done; closing this
        wrapper therefore leaves the file open, so the rest can still be hashed here.
        """
        while chunk := self._fh.read(1 << 20):
            self.sha256.update(chunk)
            self.bytes_read += len(chunk)
        self._fh.close()
        return self.sha256.hexdigest()


class CappedReader(io.RawIOBase):
    """A decompressed stream that ends at the last newline before ``limit`` bytes.

    ``exceeded`` tells whether anything was left unread. Cutting at a newline keeps a record
    from being stored cut short (a CSV row whose last field lost its tail would still parse).
    """

    def __init__(self, stream: BinaryIO, limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self.delivered = 0
        self.exceeded = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        if self.exceeded:
            return 0
        data = self._stream.read(len(buffer))
        if self.delivered + len(data) > self._limit:
            data = data[: self._limit - self.delivered]
            data = data[: data.rfind(b"\n") + 1]
            self.exceeded = True
        buffer[: len(data)] = data
        self.delivered += len(data)
        return len(data)

    def close(self) -> None:
        self._stream.close()
        super().close()


def open_binary(source: Source, limits: IngestLimits | None = None) -> tuple[BinaryIO, HashingReader]:
    """Decompressed byte stream of ``source`` and the hashing reader under it.

    With ``limits``, a compressed stream is a CappedReader at ``max_decompressed_bytes``.
    """
    try:
        fh = source.path.open("rb")
    except OSError as exc:
        raise IngestError(f"{source.path}: cannot read: {exc.strerror}") from None
    hashing = HashingReader(fh)
    raw = io.BufferedReader(hashing, buffer_size=1 << 20)
    if source.compression == "gzip":
        stream: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
    elif source.compression == "zstd":
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        stream = io.BufferedReader(reader, buffer_size=1 << 20)  # type: ignore[arg-type]
    else:
        return raw, hashing
    if limits is None:
        return stream, hashing
    return io.BufferedReader(CappedReader(stream, limits.max_decompressed_bytes), buffer_size=1 << 20), hashing


def first_record(source: Source) -> dict[str, Any] | None:
    """The first record of ``source`` as a dict of names to values (a CSV or Parquet file: its
    column names, values unknown), to tell its log format by; None when there is none to read."""
    if source.format == "parquet":
        import pyarrow.parquet as pq

        try:
            return {name: None for name in pq.ParquetFile(source.path).schema_arrow.names}
        except (OSError, ValueError):
            return None
    try:
        stream = open_binary(source)[0]
    except IngestError:
        return None
    with stream:
        try:
            head = stream.read(1 << 20).decode("utf-8", "replace")
        except (OSError, EOFError, ValueError, zstandard.ZstdError):  # the read itself reports it
            return None
    if source.format == "csv":
        try:
            header = next(csv.reader(io.StringIO(head.lstrip("\ufeff"))), [])
        except csv.Error:
            return None
        return {name.strip(): None for name in header}
    text = head.lstrip()
    if source.format == "json" and text.startswith("["):
        text = text[1:].lstrip()
    try:
        value, _ = json.JSONDecoder().raw_decode(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()
