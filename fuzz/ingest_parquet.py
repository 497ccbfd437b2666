"""Fuzz the Parquet readers (the canonical fast lane and the general one): the fuzzer's bytes
pick each column's name, type and values, written as a real Parquet file; a few inputs go in as
raw bytes: python fuzz/ingest_parquet.py -runs=N"""

import io

import atheris
import pyarrow as pa
import pyarrow.parquet as pq

from harness import fuzz

from distillguard.schema import ARROW_SCHEMA

NAMES = ARROW_SCHEMA.names + ["model", "user", "gen_ai.request.model", "usage", "other"]
TYPES = [pa.string(), pa.int64(), pa.float64(), pa.bool_(), pa.timestamp("us", tz="UTC"), pa.list_(pa.string())]


def _value(fdp: atheris.FuzzedDataProvider, typ: pa.DataType):
    if fdp.ConsumeIntInRange(0, 5) == 0:
        return None
    if typ == pa.string():
        return fdp.ConsumeUnicodeNoSurrogates(12)
    if typ == pa.int64():
        return fdp.ConsumeIntInRange(-(2**63), 2**63 - 1)
    if typ == pa.float64():
        return fdp.ConsumeFloat()
    if typ == pa.bool_():
        return fdp.ConsumeBool()
    if pa.types.is_timestamp(typ):
        return fdp.ConsumeIntInRange(-(2**62), 2**62)
    return [fdp.ConsumeUnicodeNoSurrogates(4)]


def to_file(data: bytes) -> bytes:
    if data[:1] == b"P":
        return data  # raw bytes: the reader must refuse them as a whole
    fdp = atheris.FuzzedDataProvider(data)
    rows = fdp.ConsumeIntInRange(1, 8)
    columns = {}
    for _ in range(fdp.ConsumeIntInRange(1, 8)):
        name = NAMES[fdp.ConsumeIntInRange(0, len(NAMES) - 1)]
        typ = ARROW_SCHEMA.field(name).type if name in ARROW_SCHEMA.names and fdp.ConsumeBool() \
            else TYPES[fdp.ConsumeIntInRange(0, len(TYPES) - 1)]
        columns[name] = pa.array([_value(fdp, typ) for _ in range(rows)], typ)
    out = io.BytesIO()
    pq.write_table(pa.table(columns), out)
    return out.getvalue()


if __name__ == "__main__":
    fuzz(".parquet", to_file)
