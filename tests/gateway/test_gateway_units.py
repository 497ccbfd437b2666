"""The gateway's pure parts: wire parsing (fed by untrusted clients, so property-tested), the
key file, the sliding windows and the log's segments."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distillguard.errors import UserError
from distillguard.gateway import keys
from distillguard.gateway.headers import downstream_response
from distillguard.gateway.journal import Journal
from distillguard.gateway.limits import MemoryCounters
from distillguard.gateway.metrics import BUCKETS, Metrics
from distillguard.gateway.protocol import ROUTES, StreamUsage, new_exchange_id, request_facts, usage
from tests.gateway.procs import wait_until

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20)
request_like = st.fixed_dictionaries({}, optional={
    "model": json_values, "messages": st.lists(st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "developer", 3])}, optional={"content": json_values}),
        max_size=4),
    "prompt": json_values, "input": json_values, "system": json_values, "instructions": json_values,
    "tools": json_values, "max_tokens": json_values, "stream": json_values})


@pytest.mark.slow  # 300 generated bodies
@given(api=st.sampled_from(sorted(set(ROUTES.values()))), body=json_values | request_like)
@settings(max_examples=300, deadline=None)
def test_request_facts_never_raise_on_any_body(api, body):
    facts = request_facts(api, body, "acct")
    assert facts.prompt is None or isinstance(facts.prompt, str)
    assert facts.tool_count >= 0 and facts.turn_index >= 0
    assert facts.max_tokens is None or facts.max_tokens >= 0


def test_the_last_user_message_is_the_prompt_and_earlier_ones_set_the_turn():
    body = {"model": "m", "tools": [{}, {}], "max_completion_tokens": 9000, "messages": [
        {"role": "system", "content": "sys"}, {"role": "user", "content": "first"},
        {"role": "assistant", "content": "a"}, {"role": "user", "content": [{"type": "text", "text": "second"},
                                                                               {"type": "image_url"}]}]}
    facts = request_facts("chat", body, "acct")
    assert (facts.prompt, facts.system_prompt, facts.turn_index, facts.tool_count, facts.max_tokens) == \
        ("second", "sys", 1, 2, 9000)
    # the same thread one turn later is the same conversation
    later = body | {"messages": [*body["messages"], {"role": "assistant", "content": "b"},
                                 {"role": "user", "content": "third"}]}
    assert request_facts("chat", later, "acct").conversation_id == facts.conversation_id
    assert request_facts("chat", later, "other").conversation_id != facts.conversation_id


def test_anthropic_system_and_responses_instructions_are_system_prompts():
    assert request_facts("messages", {"system": "be terse", "messages": [{"role": "user", "content": "q"}]},
                         "a").system_prompt == "be terse"
    facts = request_facts("responses", {"instructions": "inst", "input": [{"role": "user", "content": "q"}],
                                        "previous_response_id": "resp_1"}, "a")
    assert (facts.system_prompt, facts.prompt, facts.conversation_id) == ("inst", "q", "resp_1")


@pytest.mark.parametrize("body, expected", [
    ({"usage": {"prompt_tokens": 3, "completion_tokens": 4}}, (3, 4)),
    ({"usage": {"input_tokens": 5, "output_tokens": 6}}, (5, 6)),
    ({"type": "response.completed", "response": {"usage": {"input_tokens": 7, "output_tokens": 8}}}, (7, 8)),
    ({"usage": {"prompt_tokens": -1, "completion_tokens": True}}, (None, None)),
    ({"choices": []}, (None, None)),
])
def test_usage_of_every_response_shape(body, expected):
    assert usage(body) == expected


stream = (b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":11,'
          b'"output_tokens":1}}}\n\n' + b'data: {"delta":"x"}\n\n' * 3 +
          b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":42}}\n\n')


@given(cuts=st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=12))
def test_stream_usage_does_not_depend_on_how_the_stream_is_cut(cuts):
    meter = StreamUsage()
    bounds = [0, *sorted(cuts), len(stream)]
    for a, b in zip(bounds, bounds[1:]):
        meter.feed(stream[a:b])
    assert (meter.input_tokens, meter.output_tokens) == (11, 42)


@given(st.binary(max_size=2000))
def test_stream_usage_survives_garbage(data):
    StreamUsage().feed(data)


@given(start=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)),
       later_ms=st.integers(min_value=1, max_value=10**12))
def test_exchange_ids_sort_by_the_time_their_request_started(start, later_ms):
    # the store's duplicate check skips old row groups only because ids grow with time
    earlier = new_exchange_id("gw-", start)
    later = new_exchange_id("gw-", start + timedelta(milliseconds=later_ms))
    assert earlier < later
    assert len(earlier) == len(later) == 3 + 12 + 20


def test_exchange_ids_of_the_same_millisecond_do_not_repeat():
    now = datetime.now(UTC)
    ids = {new_exchange_id("gw-", now) for _ in range(20_000)}
    assert len(ids) == 20_000
    assert len({i[:15] for i in ids}) == 1


def test_a_key_file_error_names_the_file_line_and_field(tmp_path):
    path = tmp_path / "keys.csv"
    path.write_text("api_key,account_id\nsk-1,a\nsk-2,\n")
    with pytest.raises(UserError, match=r"keys.csv: line 3: field account_id: missing"):
        keys.load_file(path)
    path = tmp_path / "keys.yaml"
    path.write_text("keys:\n  - {api_key: sk-1, account_id: a, account_created_at: yesterday}\n")
    with pytest.raises(UserError, match=r"keys.yaml: entry 1: field account_created_at"):
        keys.load_file(path)


def test_a_keys_yaml_that_does_not_parse_or_is_not_a_list_is_named(tmp_path):
    broken = tmp_path / "keys.yaml"
    broken.write_text("keys: [api_key: sk-1\n")
    with pytest.raises(UserError, match=r"keys\.yaml: not valid YAML"):
        keys.load_file(broken)
    broken.write_text("keys: sk-1\n")
    with pytest.raises(UserError, match=r"keys\.yaml: expected a list of keys"):
        keys.load_file(broken)


def test_keys_are_kept_as_digests_only(tmp_path):
    path = tmp_path / "keys.yaml"
    path.write_text(f"- {{api_key_sha256: {keys.hash_key('sk-secret')}, account_id: a}}\n- {{api_key: sk-2, "
                    "account_id: b}\n")
    table = keys.KeyTable(keys.load_file(path))
    assert table.lookup("sk-secret").account_id == "a"
    assert table.lookup("sk-2").account_id == "b"
    assert table.lookup("sk-3") is None
    assert all("sk-" not in r.key_sha256 for r in table.by_digest.values())


def test_request_metrics_read_as_prometheus_client_counters_and_histogram_would():
    """Metrics.request counts in plain numbers; scraped, they are the families prometheus_client's
    own Counter and Histogram make of the same requests (a bound counted in its own bucket)."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    registry = CollectorRegistry()
    requests = Counter("distillguard_requests", "Requests answered, by route and status.", ["route", "status"],
                       registry=registry)
    actions = Counter("distillguard_actions", "Requests by the enforcement action applied.", ["action"],
                      registry=registry)
    latency = Histogram("distillguard_request_duration_seconds", "Time from request to last byte sent.", ["route"],
                        buckets=BUCKETS, registry=registry)
    metrics = Metrics()
    seen = [("/v1/chat/completions", 200, "allow", 0.0123), ("/v1/chat/completions", 200, "allow", 0.001),
            ("/v1/chat/completions", 429, "throttle", 0.0), ("/v1/messages", 401, "none", 60.0),
            ("/v1/messages", 200, "fallback", 75.5), ("/v1/chat/completions", 200, "allow", 2.5)]
    for route, status, action, seconds in seen:
        metrics.request(route, status, action, seconds)
        requests.labels(route, str(status)).inc()
        actions.labels(action).inc()
        latency.labels(route).observe(seconds)

    def families(text: str) -> dict:
        return {f.name: (f.type, sorted((s.name, tuple(sorted(s.labels.items())), s.value) for s in f.samples
                                        if not s.name.endswith("_created")))
                for f in text_string_to_metric_families(text) if not f.name.endswith("_created")}

    assert families(metrics.render()) == families(generate_latest(registry).decode())


def test_the_headers_a_client_gets_do_not_change_once_their_names_are_known():
    upstream = [("Content-Type", "application/json"), ("Set-Cookie", "a=b"), ("x-ratelimit-remaining-requests", "9"),
                ("openai-organization", "org"), ("Content-Encoding", "gzip"), ("X-Request-Id", "req-1")]
    expected = {"Content-Type": "application/json", "x-ratelimit-remaining-requests": "9", "X-Request-Id": "req-1"}
    assert downstream_response(upstream) == expected
    assert downstream_response(upstream) == expected
    # Content-Encoding goes by its value: a coding the gateway did not decode is passed on, labelled
    assert downstream_response([("Content-Encoding", "compress")]) == {"Content-Encoding": "compress"}
    assert downstream_response([("Content-Encoding", "GZIP")]) == {}


def test_a_sliding_window_counts_only_its_window():
    c = MemoryCounters()
    counts = [asyncio.run(c.hit("account", "a", 60, t)) for t in (0, 1, 2, 30)]
    assert counts == [1, 2, 3, 4]
    assert asyncio.run(c.hit("account", "a", 60, 61)) == 2  # the 0-2 s bucket has left the window
    assert asyncio.run(c.hit("account", "b", 60, 61)) == 1
    assert asyncio.run(c.hit("account", "a", 60, 1000)) == 1


def test_a_segment_left_open_by_a_dead_writer_is_closed_at_start_up(tmp_path):
    first = Journal(tmp_path)
    first.append({"exchange_id": "e1"})
    # simulate the writer's death: its flock goes with its file descriptor
    os.close(first._fd)
    first._fd = None
    second = Journal(tmp_path)
    closed = second.closed_segments()
    assert len(closed) == 1 and orjson.loads(closed[0].read_bytes()) == {"exchange_id": "e1"}
    second.close()


def test_a_live_writers_open_segment_is_left_alone(tmp_path):
    first = Journal(tmp_path)
    first.append({"exchange_id": "e1"})
    second = Journal(tmp_path)
    assert second.closed_segments() == []
    assert first.rotate() is not None and len(second.closed_segments()) == 1
    first.close()
    second.close()


@pytest.mark.slow  # starts the CLI as a process
def test_serve_without_an_upstream_is_a_clear_error(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "distillguard.cli", "serve", "--db", str(tmp_path / "x.duckdb")],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert "needs --upstream" in done.stderr and "Traceback" not in done.stderr
    bad = tmp_path / "gw.yaml"
    bad.write_text("upstream: ftp://nowhere\n")
    done = subprocess.run([sys.executable, "-m", "distillguard.cli", "serve", "--config", str(bad)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "gateway setting upstream" in done.stderr


@pytest.mark.slow  # starts the loader process
def test_the_loader_process_yields_the_cpu_to_requests(tmp_path):
    from distillguard.gateway.journal import LOADER_NICENESS, Loader

    journal = Journal(tmp_path / "log")
    journal.append({"exchange_id": "e1", "timestamp": "2026-04-22T10:00:00Z", "account_id": "a", "prompt": "p"})
    loader = Loader(journal, tmp_path / "dg.duckdb", every_seconds=0.2, segment_seconds=0.1)
    loader.start()
    try:
        # it loads (and lowered its priority first)
        wait_until(lambda: loader.loaded_rows >= 1, timeout=60, what="the loader's first round")
        assert loader.loaded_rows == 1
        expected = min(19, os.getpriority(os.PRIO_PROCESS, 0) + LOADER_NICENESS)
        assert os.getpriority(os.PRIO_PROCESS, loader._child.pid) == expected
    finally:
        loader.stop()
        journal.close()


def test_the_loader_merges_the_small_segments_it_leaves_in_the_store(tmp_path):
    """One segment per loaded log file would pile up over a month; the loader merges them
    (Store.compact) and every exchange is stored once."""
    from distillguard.gateway.journal import Loader
    from distillguard.store import Store

    journal = Journal(tmp_path / "log")
    loader = Loader(journal, tmp_path / "dg.duckdb", in_process=True, compact_segments=3)
    try:
        for r in range(7):  # seven rounds, one log file each
            for i in range(4):
                journal.append({"exchange_id": f"e{r}-{i}", "timestamp": "2026-04-22T10:00:00Z",
                                "account_id": "a", "prompt": "p"})
            assert loader.round(rotate=True) == 4
            with Store(tmp_path / "dg.duckdb", read_only=True) as store:
                assert len({p.parent for p in store.segment_files()}) < 3
    finally:
        journal.close()
    with Store(tmp_path / "dg.duckdb", read_only=True) as store:
        assert store.con.execute("SELECT count(*), count(DISTINCT exchange_id) FROM exchanges").fetchone() == (28, 28)
        assert store.con.execute("SELECT count(*), sum(rows_stored) FROM ingests").fetchone() == (7, 28)
