"""Shipped corpora and address pools: licences, loaders, and addresses that look like what they claim."""

from __future__ import annotations

import bisect
import ipaddress
import re
from importlib import resources

import numpy as np
import pytest

from distillguard import data
from distillguard.simulate import network
from distillguard.simulate.keys import mix

DATA = resources.files("distillguard.data")
NOT_SHIPPABLE = ("alpaca_eval", "instructionwild", "code_alpaca", "wizardlm", "mbpp", "sharegpt", "x4bnet")


def shipped_files() -> list[str]:
    return sorted(f"{folder}/{p.name}" for folder in ("organic", "distillation", "infra")
                  for p in DATA.joinpath(folder).iterdir() if p.name.endswith(".jsonl.gz"))


def test_every_shipped_file_is_listed_in_the_readme_with_an_existing_licence_text():
    readme = DATA.joinpath("README.md").read_text()
    for name in shipped_files():
        rows = [line for line in readme.splitlines() if line.startswith(f"| {name} |")]
        assert len(rows) == 1, name
        licence = rows[0].rstrip(" |").split("| ")[-1]
        assert DATA.joinpath(licence).is_file(), licence
        assert re.search(r"\| (Apache-2\.0|MIT|CC0-1\.0) \|", rows[0]), rows[0]


def test_no_source_with_non_commercial_or_unclear_terms_is_shipped():
    for name in shipped_files():
        assert not any(bad in name for bad in NOT_SHIPPABLE), name


def test_prompt_loaders_return_prompt_source_and_subtype():
    organic = data.load_prompts("organic")
    distillation = data.load_prompts("distillation", ["humaneval", "gsm8k_test"])
    assert len(organic) > 500 and len(distillation) > 200
    assert all(r["prompt"] and r["source"] and r["subtype"] for r in organic + distillation)
    assert {r["source"] for r in distillation} == {"humaneval", "gsm8k_test"}
    assert any(len(r.get("turns", [])) > 1 for r in organic)
    with pytest.raises(ValueError, match="unknown distillation prompt source"):
        data.load_prompts("distillation", ["mbpp_test"])


def test_infra_loader_returns_ranges_of_both_versions_and_asns():
    ranges = data.load_infra_ranges()
    assert {r.version for r in ranges} == {4, 6}
    assert all(r.first <= r.last for r in ranges)
    assert {"cloud", "datacenter", "vpn", "privacy_relay"} <= set(data.infra_categories())
    assert len(data.load_infra_ranges(categories=("vpn",))) > 100
    assert len(data.load_asns()) > 500


def _listed(version: int) -> tuple[list[int], list[int]]:
    merged = network._merge([(r.first, r.last) for r in data.load_infra_ranges(version=version)])
    return [a for a, _ in merged], [b for _, b in merged]


def _is_listed(address: int, starts: list[int], ends: list[int]) -> bool:
    i = bisect.bisect_right(starts, address) - 1
    return i >= 0 and address <= ends[i]


def test_home_mobile_campus_and_unlisted_hosting_addresses_are_in_no_shipped_list():
    pools = network.build_pools()
    starts, ends = _listed(4)
    unlisted = [*pools.home_v4.values(), *pools.mobile_v4.values(), *pools.campus_v4, pools.hosting_unlisted_v4]
    keys = mix(99, np.arange(200))
    for pool in unlisted:
        for address in pool.pick(keys):
            assert not _is_listed(int(address), starts, ends), (pool.name, str(ipaddress.IPv4Address(int(address))))


def test_cloud_and_vpn_addresses_come_from_the_shipped_lists():
    pools = network.build_pools()
    starts, ends = _listed(4)
    keys = mix(7, np.arange(200))
    for kind in ("cloud", "hosting", "vpn", "privacy_relay"):
        for address in pools.listed_v4[kind].pick(keys):
            assert _is_listed(int(address), starts, ends), kind


def test_addresses_are_written_in_canonical_text():
    version = np.array([4, 6, 4], dtype=np.int8)
    high = np.array([0, 0x20010DB800000000, 0], dtype=np.uint64)
    low = np.array([int(ipaddress.IPv4Address("73.12.0.9")), 1, int(ipaddress.IPv4Address("73.12.0.9"))],
                   dtype=np.uint64)
    text, index = network.format_addresses(version, high, low)
    assert [text[i].as_py() for i in index] == ["73.12.0.9", "2001:db8::1", "73.12.0.9"]
