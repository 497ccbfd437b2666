"""Lookups computed outside the engine: IP labels and prompt-text fingerprints.

The vectorised paths (numpy for IPs, SQL for prompts) must equal the one-by-one
specifications in enrich.py on any input, since attackers choose their prompts and headers.
"""

from __future__ import annotations

import ipaddress
import os

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distillguard.ingest import enrich

EXAMPLES = int(os.environ.get("DG_HYPOTHESIS_EXAMPLES", "60"))

prompt_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=400) | st.lists(
    st.sampled_from(["Think", "step", "by", "step.", "code", "python", "tests", "12", "3.5", "grade", "the",
                     "answer", "\n", "K", "\u212a", "İ", "straße", "a_b", "x1y2"]), max_size=80).map(" ".join)


@pytest.mark.slow  # generated texts, each fingerprinted in SQL: about 6 s
@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(prompt_text, min_size=1, max_size=12))
def test_sql_fingerprints_equal_the_python_specification(texts):
    sample = pa.table({"account_id": [f"acct-{i}" for i in range(len(texts))], "prompt": texts})
    per_account, keys = enrich.prompt_fingerprints(sample, min_uses=1, min_share=0.0)
    got = set(zip(keys.column("account_id").to_pylist(), keys.column("key").to_pylist()))
    want = {(f"acct-{i}", k) for i, text in enumerate(texts) for k in enrich.scaffold_keys(text)}
    assert got == want
    rows = {r["account_id"]: r for r in per_account.to_pylist()}
    for i, text in enumerate(texts):
        areas = enrich.capabilities(text)
        for area in enrich.CAPABILITIES:
            assert rows[f"acct-{i}"][f"{area}_share"] == (1.0 if area in areas else 0.0), (area, text)


def test_a_framing_is_habitual_only_when_the_account_keeps_using_it():
    framing = "Think step by step and show your full reasoning."
    habitual = [f"Question {i}: how do tides work on planet {i}? {framing}" for i in range(10)]
    once = [f"Question {i}: how do tides work on planet {i}?" for i in range(9)] + [f"Tell me a joke. {framing}"]
    sample = pa.table({"account_id": ["habit"] * 10 + ["once"] * 10, "prompt": habitual + once})
    _, keys = enrich.prompt_fingerprints(sample, min_uses=3, min_share=0.1)
    held = {(a, k) for a, k in zip(keys.column("account_id").to_pylist(), keys.column("key").to_pylist())}
    assert ("habit", "show your full reasoning") in held
    assert not any(a == "once" and "reasoning" in k for a, k in held)


def test_capability_shares_count_prompts_with_two_keywords_of_the_area():
    sample = pa.table({"account_id": ["a"] * 4, "prompt": [
        "Write a python function", "fix this bug in my sql", "what is the capital of France", "code"]})
    per_account, _ = enrich.prompt_fingerprints(sample, 3, 0.1)
    row = per_account.to_pylist()[0]
    assert row["software_engineering_share"] == 0.5
    assert row["sampled"] == 4


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(st.integers(0, 2**32 - 1), max_size=50),
       st.lists(st.sampled_from(["", "bad", "::1", "2001:db8::5", "10.0.0.256", "01.2.3.4", "3.5.140.2"]),
                max_size=5))
def test_vectorised_ip_labels_equal_the_one_by_one_lookup(ints, odd):
    ips = [str(ipaddress.IPv4Address(i)) for i in ints] + odd
    table = enrich.ip_table(ips)
    assert table.column("ip").to_pylist() == sorted(set(ips))
    ranges = enrich._ranges()
    for ip, subnet, category, provider in zip(*(table.column(c).to_pylist() for c in table.column_names)):
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            assert subnet is None and category is None
            continue
        expected = str(ipaddress.ip_network(f"{addr}/{24 if addr.version == 4 else 48}", strict=False))
        assert (subnet, category, provider) == (expected, *ranges.lookup(addr.version, int(addr)))


def test_a_published_cloud_address_is_labelled_hosted():
    table = enrich.ip_table(["3.5.140.2", "81.2.69.142"])
    labels = dict(zip(table.column("ip").to_pylist(), table.column("infra_category").to_pylist()))
    assert labels["3.5.140.2"] in enrich.HOSTED
    assert labels["81.2.69.142"] is None


def test_fingerprints_in_batches_of_whole_accounts_equal_one_pass(monkeypatch):
    texts = [f"Think step by step about item {i}. Show your full reasoning." for i in range(50)]
    sample = pa.table({"account_id": [f"a{i % 7}" for i in range(50)], "prompt": texts})
    whole = enrich.prompt_fingerprints(sample, 3, 0.1)
    monkeypatch.setattr(enrich, "FINGERPRINT_BATCH", 9)
    batched = enrich.prompt_fingerprints(sample, 3, 0.1)
    assert whole[1].num_rows > 0
    assert whole[0].equals(batched[0]) and whole[1].equals(batched[1])
