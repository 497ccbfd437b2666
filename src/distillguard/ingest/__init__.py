"""Ingest: input files of every supported shape -> validated canonical rows in the store."""

from distillguard.ingest.run import FileResult, ingest_file, ingest_paths

__all__ = ["FileResult", "ingest_file", "ingest_paths"]
