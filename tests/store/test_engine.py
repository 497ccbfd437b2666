"""The DuckDB engine: lookups are planned like the store's own tables, digests count texts."""

import ibis
import pyarrow as pa

from distillguard.store.engine import digest64, exchanges
from distillguard.store import Store


def test_lookups_are_temporary_tables_replaced_by_name(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    try:
        _, _, lookup = exchanges(store, "duckdb")
        first = lookup("dg_members", pa.table({"account_id": ["a", "b"]}))
        assert first.count().to_pyarrow().as_py() == 2
        # a second scan on the same connection (a replay step) replaces it: no pile-up
        second = lookup("dg_members", pa.table({"account_id": ["c"]}))
        assert second.count().to_pyarrow().as_py() == 1
        temp = store.con.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary "
                                 "AND table_name = 'dg_members'").fetchone()[0]
        assert temp == 1
    finally:
        store.close()


def test_digest_counts_distinct_texts_like_the_texts_themselves():
    texts = [f"prompt {i % 37} " + "x" * (i % 5) for i in range(500)] + ["", "é", "é "]
    t = ibis.memtable(pa.table({"p": texts}))
    counted = t.aggregate(by_digest=digest64(t.p).nunique(), by_text=t.p.nunique()).to_pyarrow()
    assert counted.column("by_digest")[0].as_py() == counted.column("by_text")[0].as_py() == len(set(texts))
