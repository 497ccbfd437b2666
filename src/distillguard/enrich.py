"""Lookup tables computed once per distinct value: IP addresses and prompt texts.

Both engines need the same subnet keys, infrastructure labels and text fingerprints, and
engines disagree on hashing and string functions (``hash()`` is 64-bit on DuckDB and 32-bit on
Spark). So these are deterministic pure Python functions applied to the *distinct* values
collected from the engine, and joined back as small tables: identical on every engine, and
cheap because NATs, proxies and templates repeat the same values many times.
"""

from __future__ import annotations

import bisect
import hashlib
import ipaddress
import re
from functools import lru_cache

import pyarrow as pa

from distillguard.data import load_infra_ranges

#: infrastructure categories that mean "not a person's own connection"
HOSTED = ("cloud", "datacenter", "vpn", "privacy_relay", "crawler", "monitoring", "platform", "cdn")


class _Ranges:
    """Disjoint sorted intervals per (IP version, category), for bisect lookups."""

    def __init__(self) -> None:
        by_key: dict[tuple[int, str], list[tuple[int, int, str]]] = {}
        for r in load_infra_ranges():
            by_key.setdefault((r.version, r.category), []).append((r.first, r.last, r.provider))
        self.index: dict[tuple[int, str], tuple[list[int], list[int], list[str]]] = {}
        for key, ranges in by_key.items():
            ranges.sort()
            starts, ends, providers = [], [], []
            for first, last, provider in ranges:
                if starts and first <= ends[-1] + 1:
                    ends[-1] = max(ends[-1], last)
                else:
                    starts.append(first)
                    ends.append(last)
                    providers.append(provider)
            self.index[key] = (starts, ends, providers)

    def lookup(self, version: int, value: int) -> tuple[str | None, str | None]:
        for category in HOSTED:
            entry = self.index.get((version, category))
            if entry is None:
                continue
            starts, ends, providers = entry
            i = bisect.bisect_right(starts, value) - 1
            if i >= 0 and value <= ends[i]:
                return category, providers[i]
        return None, None


@lru_cache(maxsize=1)
def _ranges() -> _Ranges:
    return _Ranges()


def subnet_of(ip: str) -> str | None:
    """/24 for IPv4, /48 for IPv6: the unit a NAT, an office or a proxy pool usually occupies."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    prefix = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


def ip_table(ips: list[str]) -> pa.Table:
    """ip -> subnet, infra_category (null = not in any public hosting list), provider."""
    ranges = _ranges()
    subnets, categories, providers = [], [], []
    for ip in ips:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            subnets.append(None)
            categories.append(None)
            providers.append(None)
            continue
        prefix = 24 if addr.version == 4 else 48
        subnets.append(str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False)))
        category, provider = ranges.lookup(addr.version, int(addr))
        categories.append(category)
        providers.append(provider)
    return pa.table({"ip": pa.array(ips, pa.string()), "subnet": pa.array(subnets, pa.string()),
                     "infra_category": pa.array(categories, pa.string()),
                     "provider": pa.array(providers, pa.string())})


# --- prompts -----------------------------------------------------------------------------

_WORD = re.compile(r"[a-z]+|[0-9]+")

#: Capability taxonomy: keyword families a distillation campaign sweeps. Matching is on whole
#: lower-case words; each prompt can fall in several areas. (Anthropic's and OpenAI's reports on
#: distillation name coding, agentic tool use, reasoning and chain-of-thought extraction.)
CAPABILITIES: dict[str, tuple[str, ...]] = {
    "software_engineering": ("function", "code", "python", "javascript", "java", "rust", "sql", "bug", "refactor",
                             "class", "api", "compile", "implement", "algorithm", "typescript", "c", "cpp",
                             "program", "script", "debug", "test", "tests", "unit", "regex", "database"),
    "agentic_tool_use": ("tool", "tools", "agent", "plan", "steps", "execute", "browser", "search", "call",
                         "calls", "json", "schema", "workflow", "shell", "command", "toolformer", "api"),
    "math_reasoning": ("calculate", "solve", "how", "many", "much", "total", "equation", "prove", "probability",
                       "number", "sum", "percent", "math", "logic", "puzzle"),
    "cot_elicitation": ("step", "reasoning", "think", "thinking", "explain", "rationale", "justify",
                        "chain", "thought", "derivation", "work"),
    "rubric_grading": ("grade", "score", "rubric", "evaluate", "rate", "judge", "critique", "assess",
                       "compare", "better", "response"),
}
_CAP_SETS = {name: frozenset(words) for name, words in CAPABILITIES.items()}
#: a prompt counts toward an area when it has at least this many of its words
_MIN_HITS = {"software_engineering": 2, "agentic_tool_use": 2, "math_reasoning": 2, "cot_elicitation": 2,
             "rubric_grading": 2}


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def skeleton(text: str) -> str:
    """Template skeleton: lower case, numbers as '0', words kept, whitespace and punctuation gone.

    Two prompts from one template with different numbers or spacing share a skeleton.
    """
    return _skeleton_of(words(text))


def _skeleton_of(tokens: list[str]) -> str:
    return " ".join("0" if w[0].isdigit() else w for w in tokens)


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def scaffold_keys(text: str, n: int = 4, edge_words: int = 10) -> list[str]:
    """Fingerprints of a prompt's framing: word n-grams of its first and last ``edge_words`` words.

    Harvest scripts wrap varied payloads in reusable framing ("... Think step by step and show
    your full reasoning."). Paraphrasing the framing per account changes some n-grams but
    rarely all; the payload in the middle is left out so that topic words do not link strangers.
    The n-grams are kept as text (normalised words), so they are readable as evidence.
    """
    return _scaffold_of(words(text), n, edge_words)


def _scaffold_of(tokens: list[str], n: int = 4, edge_words: int = 10) -> list[str]:
    if len(tokens) < n:
        return []
    tokens = ["0" if w[0].isdigit() else w for w in tokens]
    head, tail = tokens[:edge_words], tokens[-edge_words:]
    return sorted({" ".join(part[i:i + n]) for part in (head, tail) for i in range(len(part) - n + 1)})


def prompt_table(prompts: list[str]) -> pa.Table:
    """prompt -> prompt_id (its position), skeleton digest, scaffold keys and capability flags.

    One row per distinct prompt; later joins use the integer prompt_id so that long texts are
    not copied once per scaffold key.
    """
    skeletons, scaffolds = [], []
    flags: dict[str, list[bool]] = {name: [] for name in CAPABILITIES}
    for text in prompts:
        tokens = _WORD.findall(text.lower())
        skeletons.append(_digest(_skeleton_of(tokens)))
        scaffolds.append(_scaffold_of(tokens))
        token_set = set(tokens)
        for name, vocab in _CAP_SETS.items():
            flags[name].append(len(token_set & vocab) >= _MIN_HITS[name])
    columns = {"prompt": pa.array(prompts, pa.string()),
               "prompt_id": pa.array(range(len(prompts)), pa.int64()),
               "skeleton": pa.array(skeletons, pa.string()),
               "scaffold_keys": pa.array(scaffolds, pa.list_(pa.string()))}
    columns.update({f"cap_{name}": pa.array(v, pa.bool_()) for name, v in flags.items()})
    return pa.table(columns)
