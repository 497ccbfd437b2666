"""The store: the canonical exchanges (a DuckDB file plus Parquet segments), where the pipeline
runs over them (engine), their summary statistics (stats) and the verdict table every detector
writes (verdicts).

``Store`` and the helpers callers use are re-exported here, so ``from distillguard.store import
Store`` names the store wherever it lives in the package.
"""

from distillguard.store.database import DEFAULT_DB, Store, has_table, sql_literal_path, stores_any_of

__all__ = ["DEFAULT_DB", "Store", "has_table", "sql_literal_path", "stores_any_of"]
