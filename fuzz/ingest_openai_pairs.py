"""Fuzz the OpenAI request/response pair reader: the fuzzer's bytes, as a JSON value, in every
place a pair carries one: python fuzz/ingest_openai_pairs.py -runs=N"""

import json

from harness import fuzz, json_value


def to_file(data: bytes) -> bytes:
    v = json_value(data)
    pairs = [
        {"request": {"messages": v, "model": "m"}, "response": v, "id": "p1", "account_id": "a",
         "timestamp": "2026-04-22T10:00:00Z"},
        {"request": {"messages": [{"role": "system", "content": v}, {"role": "user", "content": v}]},
         "response": {"id": "p2", "usage": v, "created": v}, "account_id": v},
        {"request": {"input": v, "instructions": v, "tools": v}, "response": {"id": v, "usage": {"input_tokens": v}}},
        {"request": {"prompt": v, "max_tokens": v}, "response": {"id": "p4"}, "account_id": "a", "timestamp": v},
    ]
    return "".join(json.dumps(p) + "\n" for p in pairs).encode()


if __name__ == "__main__":
    fuzz(".jsonl", to_file)
