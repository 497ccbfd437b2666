"""Fuzz the OpenTelemetry readers (OTLP/JSON exports, SDK span JSON): the fuzzer's bytes, as a
JSON value, in every place an export carries one: python fuzz/ingest_otel.py -runs=N"""

import json

from harness import fuzz, json_value


def to_file(data: bytes) -> bytes:
    v = json_value(data)
    attribute = {"key": "gen_ai.request.model", "value": v}
    records = [
        {"resourceSpans": v},
        {"resourceSpans": [{"resource": v, "scopeSpans": v}]},
        {"resourceSpans": [{"resource": {"attributes": [attribute]},
                            "scopeSpans": [{"spans": [{"attributes": [attribute, {"key": v, "value": v}],
                                                       "spanId": v, "traceId": "t", "startTimeUnixNano": v,
                                                       "endTimeUnixNano": v, "events": v}]}]}]},
        {"attributes": {"gen_ai.system": "x", "gen_ai.prompt": v, "user.id": v}, "context": v,
         "start_time": v, "end_time": v, "resource": v, "events": v},
    ]
    return "".join(json.dumps(r) + "\n" for r in records).encode()


if __name__ == "__main__":
    fuzz(".jsonl", to_file)
