"""Parquet: read in record batches with the file's own types (no text round trip)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from distillguard.errors import IngestError
from distillguard.ingest.normalize import RECORD
from distillguard.ingest.records import Batch, Expander, Numbering, parsed_batch
from distillguard.schema import ALIASES, REQUIRED

BATCH_ROWS = 500_000


def read(path: Path, mapper: Expander | None = None) -> Iterator[Batch]:
    """Batches of a Parquet file's rows; with ``mapper`` (a named format's), rows as dicts through it."""
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise IngestError(f"{path}: unreadable Parquet file: {exc}") from None
    if mapper is not None:
        yield from _mapped(pf, path, mapper)
        return
    names = _leaf_names(pf.schema_arrow)
    mapped = {ALIASES.get(n) for n in names}
    missing = [r for r in REQUIRED if r not in mapped]
    if missing:
        raise IngestError(
            f"{path}: unknown column set: columns {names[:12]}; missing required "
            f"{', '.join(missing)} (or an alias of it, see docs/schema.md)")
    wanted = [f.name for f in pf.schema_arrow if any(n == f.name or n.startswith(f.name + ".") for n in names
                                                     if ALIASES.get(n))]
    start = 1
    size = path.stat().st_size
    total = max(pf.metadata.num_rows, 1)
    for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=wanted):
        table = pa.Table.from_batches([batch])
        n = table.num_rows
        table = table.append_column(RECORD, pa.array(range(start, start + n), pa.int64()))
        start += n

        def raw(i: int, _t=table) -> str:
            row = _t.slice(i, 1).drop_columns([RECORD]).to_pylist()[0]
            return json.dumps(row, default=str, ensure_ascii=False)

        yield Batch(table, [], raw, int(size * (start - 1) / total))


def _leaf_names(schema: pa.Schema) -> list[str]:
    out = []
    for field in schema:
        if pa.types.is_struct(field.type) and field.name not in ALIASES:
            out += [f"{field.name}.{n}" for n in _leaf_names(pa.schema(list(field.type)))]
        else:
            out.append(field.name)
    return out


def _mapped(pf: pq.ParquetFile, path: Path, mapper: Expander) -> Iterator[Batch]:
    numbering = Numbering()
    size, total, done = path.stat().st_size, max(pf.metadata.num_rows, 1), 0
    for batch in pf.iter_batches(batch_size=20_000):
        rows = batch.to_pylist()
        done += len(rows)
        items = [(row, None, json.dumps(row, default=str, ensure_ascii=False)) for row in rows]
        yield parsed_batch(items, numbering, int(size * done / total), None, mapper)
