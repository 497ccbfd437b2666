"""Fuzz the JSON Lines reader (both lanes) with raw bytes: python fuzz/ingest_jsonl.py -runs=N"""

from harness import fuzz

if __name__ == "__main__":
    fuzz(".jsonl")
