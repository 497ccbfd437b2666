"""Ingest a live PostgreSQL table: LiteLLM proxy's ``"LiteLLM_SpendLogs"``.

``distillguard ingest postgresql://USER@HOST:PORT/DB --source litellm`` reads the rows the
proxy logged since the last run and stores them as exchanges, with the same accounting as a
file (rows in = stored + duplicates + quarantined, one ``ingests`` row, one commit).

- Constant memory: a server-side (named) cursor hands over ``batch_rows`` rows at a time, in
  one read-only REPEATABLE READ transaction (one snapshot: rows committed meanwhile wait for the
  next run); only the columns the mapping reads are fetched (never ``response``).
- Incremental: rows are read in ``("startTime", request_id)`` order after the source's
  watermark in the store, which moves to the last row read in the same commit as the rows.
  Ordering by time alone would skip or repeat rows that share the boundary's time; the id
  breaks the tie, and LiteLLM indexes exactly that pair. ``since`` reads from a time instead
  (rows already stored count as duplicates).
- Rows are mapped by the ``litellm-spendlogs`` format (formats.py, ``litellm.spendlogs_record``),
  exactly as the table's CSV and JSON Lines exports are, with the same warnings; then validated
  and stored by the file ingest's code (run.py).

Caveat of any watermark on the row's own time: a row the proxy writes late with a
``"startTime"`` before the watermark is not read by the next run (LiteLLM queues spend logs
and writes them in batches, seconds apart); ``since`` a little before the last run reads it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import urlsplit

import orjson

from distillguard.errors import IngestError
from distillguard.ingest import formats
from distillguard.ingest.fieldmap import FieldMap
from distillguard.ingest.normalize import canonicalize_columns
from distillguard.ingest.records import Batch, Numbering, Rejected, to_table
from distillguard.ingest.run import FileResult, _merge, _stage_rejected, _write_batch, commit_ingest
from distillguard.store.database import Store

SCHEMES = ("postgresql", "postgres")
TABLE = "LiteLLM_SpendLogs"

#: the columns the mapping reads (ingest/litellm.py); those an older LiteLLM lacks are
#: left out of the query
WANTED = ("request_id", "startTime", "endTime", "api_key", "user", "end_user", "team_id", "organization_id",
          "requester_ip_address", "model", "model_group", "session_id", "prompt_tokens", "completion_tokens",
          "request_duration_ms", "status", "metadata", "messages", "proxy_server_request")
#: without these a table is not one LiteLLM wrote
KEY = ("request_id", "startTime")

#: sources a database URL can be read as (``--source``); one today
SOURCES = ("litellm",)


def is_database_url(text: str) -> bool:
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


def redacted(url: str, *, user: bool = True) -> str:
    """``url`` without its password (and query; without ``user``, without the user name either),
    for messages, provenance and the watermark's key."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # unparseable (a bad port, an unclosed [ of an IPv6 address): drop the credentials
        scheme, _, rest = url.partition("://")
        return f"{scheme}://{rest.rpartition('@')[2]}"
    who = f"{parts.username}@" if parts.username and user else ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{who}{host}{port}{parts.path}"


@dataclass
class TableResult:
    """What one read of a table did: the file-like accounting, and the source's watermark after it."""

    result: FileResult
    watermark: tuple[datetime, str] | None

    @property
    def warnings(self) -> list[str]:
        return self.result.warnings


def ingest_spendlogs(store: Store, url: str, *, since: datetime | None = None, batch_rows: int = 5000,
                     field_map: FieldMap | None = None,
                     progress: Callable[[int], None] | None = None) -> TableResult:
    """Read the new rows of LiteLLM's SpendLogs table at ``url`` into ``store``.

    ``since`` (UTC): read every row from that time on, whatever the watermark says.
    ``field_map`` (``--map``): as for files; the row's every column is then fetched.
    ``progress`` is called with the number of rows read so far after each batch.
    """
    import psycopg
    import psycopg.types.json

    shown = redacted(url)
    try:
        urlsplit(url).port
    except ValueError as exc:
        raise IngestError(f"{shown}: not a usable PostgreSQL URL: {exc}") from None
    # the watermark belongs to the table, whoever reads it: the key leaves the user name out
    source = f"litellm:{redacted(url, user=False)}#{TABLE}"
    try:
        con = psycopg.connect(url, connect_timeout=10, autocommit=False)
    except psycopg.ProgrammingError as exc:  # libpq refused the URL itself (an option, an escape)
        raise IngestError(f"{shown}: not a usable PostgreSQL URL: {_reason(exc, url)}") from None
    except psycopg.Error as exc:
        raise IngestError(f"{shown}: cannot connect: {_reason(exc, url)}") from None
    # JSON columns are most of a row's bytes; orjson decodes them several times faster than json
    psycopg.types.json.set_json_loads(orjson.loads, con)
    try:
        with con:
            con.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            columns = _columns(con, shown, every=field_map is not None)
            mark = None if since is not None else store.watermark(source)
            mapper = formats.named("litellm-spendlogs").mapper(field_map)
            return _read(store, con, shown, source, columns, since, mark, mapper, batch_rows, progress)
    except psycopg.Error as exc:
        raise IngestError(f"{shown}: reading {TABLE} failed: {_reason(exc, url)}") from None
    finally:
        con.close()


def _reason(exc: BaseException, url: str) -> str:
    """The first line of a driver error, without the password: libpq quotes a URL it cannot
    parse whole, so the URL is replaced by its redacted form, and any other echo of the
    password blanked."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0].replace(url, redacted(url))
    password = urlsplit(url).password  # the URL parsed before the driver saw it
    return text.replace(password, "***") if password else text


def _columns(con: Any, shown: str, every: bool) -> list[str]:
    """The columns to fetch: those the mapping reads, or (``every``) all of the table's."""
    found = [name for (name,) in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
        "AND table_schema = ANY(current_schemas(false)) ORDER BY ordinal_position", [TABLE]).fetchall()]
    if not found:
        raise IngestError(f'{shown}: no table "{TABLE}" (is this the database of a LiteLLM proxy? '
                          "it creates the table on its first start)")
    missing = [c for c in KEY if c not in found]
    if missing:
        raise IngestError(f'{shown}: table "{TABLE}" has no column {", ".join(missing)}: not LiteLLM\'s table')
    return found if every else [c for c in WANTED if c in found]


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _read(store: Store, con: Any, shown: str, source: str, columns: list[str], since: datetime | None,
          mark: tuple[datetime, str] | None, mapper: formats.RecordMapper, batch_rows: int,
          progress: Callable[[int], None] | None) -> TableResult:
    from psycopg.rows import dict_row

    query = f"SELECT {', '.join(map(_quoted, columns))} FROM {_quoted(TABLE)}"
    params: list[Any] = []
    if since is not None:
        query += ' WHERE "startTime" >= %s::timestamp'
        params = [_naive_utc(since)]
    elif mark is not None:
        query += ' WHERE ("startTime", request_id) > (%s::timestamp, %s)'
        params = list(mark)
    query += ' ORDER BY "startTime", request_id'
    started = datetime.now(timezone.utc)
    ingest_id = uuid.uuid4().hex
    pending = store.pending_dir(ingest_id)
    db = store.con
    db.execute("CREATE OR REPLACE TEMP TABLE _qstage (line_number BIGINT, record_number BIGINT, "
               "exchange_id VARCHAR, reason_code VARCHAR, reason VARCHAR, raw VARCHAR)")
    digest = hashlib.sha256(source.encode())
    rows_in = 0
    last: tuple[datetime, str] | None = None
    try:
        with con.cursor(name=f"distillguard_{ingest_id}", row_factory=dict_row) as cursor:
            cursor.itersize = batch_rows
            cursor.execute(query, params)
            numbering = Numbering()
            part = 0
            while rows := cursor.fetchmany(batch_rows):
                rows_in += len(rows)
                for row in rows:
                    digest.update(f"{row['startTime']}\x00{row['request_id']}\x00".encode())
                last = (rows[-1]["startTime"], rows[-1]["request_id"])
                batch = _batch(rows, mapper, numbering, rows_in)
                if batch.rejected:
                    _stage_rejected(db, batch.rejected)
                if batch.table is not None:
                    _write_batch(db, canonicalize_columns(batch.table), batch, pending / f"part-{part:05d}.parquet")
                    part += 1
                if progress:
                    progress(rows_in)
        stored, duplicates = _merge(db, pending)
        quarantined = db.execute("SELECT count(*) FROM _qstage").fetchone()[0]
        result = FileResult(f"{shown}#{TABLE}", "postgresql", 0, digest.hexdigest(), rows_in, stored,
                            duplicates, quarantined, log_format="litellm-spendlogs")
        if not result.balanced:  # an invariant, so a bug if it fails: keep the traceback
            raise AssertionError(f"row accounting broken for {shown}: {result}")
        commit_ingest(store, pending, ingest_id, result, started,
                      before_commit=(lambda: store.set_watermark(source, *last)) if last is not None else None)
    finally:
        shutil.rmtree(pending, ignore_errors=True)
        db.execute("DROP TABLE IF EXISTS _qstage")
        db.execute("DROP TABLE IF EXISTS _batch")
    store.refresh_view()
    result.warnings.extend(mapper.warnings(rows_in))
    return TableResult(result, store.watermark(source))


def _batch(rows: list[dict], mapper: formats.RecordMapper, numbering: Numbering, position: int) -> Batch:
    """The rows of one fetch, mapped as the table's exports are (a row the mapping refuses is
    rejected with its reason); ``raw(i)`` is row i of the table as JSON, for the quarantine."""
    records: list[tuple[dict[str, Any], int, int | None]] = []
    raws: list[dict] = []
    rejected: list[Rejected] = []
    for row in rows:
        for record in mapper(row):
            number = numbering.take()
            if isinstance(record, dict):
                records.append((record, number, None))
                raws.append(row)
            else:
                reason = record if isinstance(record, str) else record[0]
                rejected.append(Rejected(number, None, reason, _raw(row), str(row.get("request_id"))))
    return Batch(to_table(records) if records else None, rejected, lambda i: _raw(raws[i]), position)


def _raw(row: dict) -> str:
    """A row as JSON text, for the quarantine."""
    return json.dumps(row, ensure_ascii=False, default=str)


def _naive_utc(moment: datetime) -> datetime:
    """LiteLLM (through Prisma) stores UTC in ``timestamp without time zone`` columns."""
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment
