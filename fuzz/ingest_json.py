"""Fuzz the JSON document reader (arrays, objects one after another) with raw bytes:
python fuzz/ingest_json.py -runs=N"""

from harness import fuzz

if __name__ == "__main__":
    fuzz(".json")
