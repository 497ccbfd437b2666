"""Public corpora and infrastructure lists shipped with distillguard, and their loaders.

Everything here is third-party data whose licence allows redistribution in an Apache-2.0
product; README.md lists each file with its source repository, commit and licence. The loaders
are deliberately neutral (plain records, no policy), because both the traffic simulator and the
detector read them: the simulator to draw cloud and proxy addresses, the detector to classify
client IPs as datacenter, VPN or privacy relay.
"""

from __future__ import annotations

import gzip
import ipaddress
import json
from functools import lru_cache
from importlib import resources
from typing import Literal, NamedTuple

PromptKind = Literal["organic", "distillation"]
PROMPT_KINDS: tuple[PromptKind, ...] = ("organic", "distillation")


class IpRange(NamedTuple):
    """One published address range: ``first``..``last`` inclusive, as integers."""

    first: int
    last: int
    version: int  # 4 or 6
    category: str  # e.g. "datacenter", "cloud", "vpn", "privacy_relay", "crawler", "monitoring"
    provider: str  # e.g. "amazon", "Hetzner Online AG"
    source: str  # shipped file it came from, e.g. "ipranges_amazon_ipv4"


class AsnEntry(NamedTuple):
    """One autonomous system listed as hosting/datacenter."""

    asn: int
    category: str
    entity: str
    source: str


def _read_jsonl_gz(folder: str, name: str) -> list[dict]:
    path = resources.files(__name__).joinpath(folder, name)
    with path.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as text:
        return [json.loads(line) for line in text if line.strip()]


def _files(folder: str) -> list[str]:
    directory = resources.files(__name__).joinpath(folder)
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".jsonl.gz"))


def prompt_sources(kind: PromptKind) -> list[str]:
    """Names of the shipped prompt corpora of one kind, e.g. ``["gsm8k_test", "humaneval", ...]``."""
    if kind not in PROMPT_KINDS:
        raise ValueError(f"unknown prompt kind {kind!r}; expected one of {PROMPT_KINDS}")
    return [name.removesuffix(".jsonl.gz") for name in _files(kind)]


def load_prompts(kind: PromptKind, sources: list[str] | None = None) -> list[dict]:
    """Prompts of one kind ("organic" = human-written, "distillation" = harvest sets and benchmarks).

    Each record has ``prompt``, ``source`` and ``subtype``; some also have ``category`` (a topic
    label) and ``turns`` (every user turn of a multi-turn conversation, ``turns[0] == prompt``).
    ``sources`` restricts the result to the named corpora (see :func:`prompt_sources`).
    """
    names = prompt_sources(kind)
    if sources is not None:
        unknown = sorted(set(sources) - set(names))
        if unknown:
            raise ValueError(f"unknown {kind} prompt source(s) {unknown}; shipped: {names}")
        names = [n for n in names if n in set(sources)]
    records: list[dict] = []
    for name in names:
        records.extend(_read_jsonl_gz(kind, f"{name}.jsonl.gz"))
    return records


def _as_range(record: dict) -> IpRange | None:
    if "cidr" in record:
        net = ipaddress.ip_network(record["cidr"], strict=False)
        first, last, version = int(net.network_address), int(net.broadcast_address), net.version
    elif "start" in record and "end" in record:
        start, end = ipaddress.ip_address(record["start"]), ipaddress.ip_address(record["end"])
        first, last, version = int(start), int(end), start.version
    else:
        return None
    provider = record.get("provider") or record.get("entity") or ""
    return IpRange(first, last, version, record.get("category", ""), provider, record["source"])


@lru_cache(maxsize=1)
def _all_ranges() -> tuple[IpRange, ...]:
    ranges: list[IpRange] = []
    for name in _files("infra"):
        for record in _read_jsonl_gz("infra", name):
            parsed = _as_range(record)
            if parsed is not None:
                ranges.append(parsed)
    return tuple(ranges)


def load_infra_ranges(
    version: int | None = None, categories: tuple[str, ...] | None = None
) -> list[IpRange]:
    """Published address ranges of clouds, datacenters, VPNs, relays, crawlers and monitors.

    ``version`` keeps only IPv4 (4) or IPv6 (6) ranges; ``categories`` keeps only the named
    categories (see :func:`infra_categories`). Ranges from different lists may overlap.
    """
    return [
        r
        for r in _all_ranges()
        if (version is None or r.version == version)
        and (categories is None or r.category in categories)
    ]


def infra_categories() -> list[str]:
    """The distinct ``category`` values of :func:`load_infra_ranges`."""
    return sorted({r.category for r in _all_ranges()})


@lru_cache(maxsize=1)
def load_asns() -> tuple[AsnEntry, ...]:
    """Autonomous systems listed as hosting or datacenter networks."""
    entries: list[AsnEntry] = []
    for name in _files("infra"):
        for record in _read_jsonl_gz("infra", name):
            if "asn" in record:
                entries.append(
                    AsnEntry(int(record["asn"]), record.get("category", ""),
                             record.get("entity", ""), record["source"])
                )
    return tuple(entries)
