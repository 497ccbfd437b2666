"""Lookup tables computed once per distinct value: IP addresses and prompt texts.

Both engines need the same subnet keys, infrastructure labels and text fingerprints, and
engines disagree on hashing and string functions (``hash()`` is 64-bit on DuckDB and 32-bit on
Spark). So these are deterministic pure Python functions applied to the *distinct* values
collected from the engine, and joined back as small tables: identical on every engine, and
cheap because NATs, proxies and templates repeat the same values many times.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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

    def lookup_many(self, version: int, values: np.ndarray) -> tuple[list[str | None], list[str | None]]:
        """:meth:`lookup` for an array of addresses (IPv4 only: they fit in int64)."""
        categories = np.full(len(values), None, dtype=object)
        providers = np.full(len(values), None, dtype=object)
        for category in reversed(HOSTED):  # earlier categories win, as in lookup
            entry = self.index.get((version, category))
            if entry is None:
                continue
            starts, ends, names = (np.asarray(x, dtype=object if x is entry[2] else np.int64) for x in entry)
            i = np.searchsorted(starts, values, side="right") - 1
            hit = (i >= 0) & (values <= ends[np.maximum(i, 0)])
            categories[hit] = category
            providers[hit] = names[i[hit]]
        return categories.tolist(), providers.tolist()

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


_DOTTED_QUAD = r"^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$"


def ip_table(ips: pa.Array | pa.ChunkedArray | list[str]) -> pa.Table:
    """ip -> subnet, infra_category (null = not in any public hosting list), provider.

    One row per distinct address, sorted. Dotted-quad IPv4 (what ingest normalises IPv4 to)
    is parsed and looked up vectorised, since a proxy-rotating campaign brings millions of
    distinct addresses; anything else goes through :mod:`ipaddress` one by one.
    """
    values = pa.chunked_array([pa.array(ips, pa.string())]) if isinstance(ips, list) else ips
    values = pc.unique(pa.chunked_array([values]) if isinstance(values, pa.Array) else values)
    values = pc.drop_null(values.cast(pa.string()))
    values = pc.take(values, pc.array_sort_indices(values))
    v4 = pc.match_substring_regex(values, _DOTTED_QUAD).to_numpy(zero_copy_only=False)
    quads = values.filter(pa.array(v4))
    octets = pc.list_flatten(pc.split_pattern(quads, ".")).cast(pa.int64()).to_numpy().reshape(-1, 4)
    as_int = (octets[:, 0] << 24) | (octets[:, 1] << 16) | (octets[:, 2] << 8) | octets[:, 3]
    prefix = pc.binary_join_element_wise(*(pa.array(octets[:, i].astype(str)) for i in range(3)), ".")
    v4_subnets = pc.binary_join_element_wise(prefix, pa.scalar(".0/24"), "")
    v4_categories, v4_providers = _ranges().lookup_many(4, as_int)
    subnets = [None] * len(values)
    categories: list[str | None] = [None] * len(values)
    providers: list[str | None] = [None] * len(values)
    positions = np.flatnonzero(v4)
    for i, subnet, category, provider in zip(positions.tolist(), v4_subnets.to_pylist(), v4_categories,
                                            v4_providers):
        subnets[i], categories[i], providers[i] = subnet, category, provider
    for i in np.flatnonzero(~v4).tolist():
        try:
            addr = ipaddress.ip_address(values[i].as_py())
        except ValueError:
            continue
        prefix_len = 24 if addr.version == 4 else 48
        subnets[i] = str(ipaddress.ip_network(f"{addr}/{prefix_len}", strict=False))
        categories[i], providers[i] = _ranges().lookup(addr.version, int(addr))
    return pa.table({"ip": values, "subnet": pa.array(subnets, pa.string()),
                     "infra_category": pa.array(categories, pa.string()),
                     "provider": pa.array(providers, pa.string())})


# --- prompts -----------------------------------------------------------------------------

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


#: prompts per account read for text fingerprints (a deterministic sample, see prompt_sample)
SAMPLE_PROMPTS = 48
#: scaffold n-grams: word n-grams of the first and last EDGE_WORDS words, read from the first
#: and last EDGE_CHARS characters (framing sits at the edges; the payload need not be tokenised)
NGRAM = 4
EDGE_WORDS = 10
EDGE_CHARS = 200
_TOKEN = "[a-z]+|0"  # after every run of digits became '0'
_AREA_PATTERNS = {name: r"\b(" + "|".join(sorted(vocab)) + r")\b" for name, vocab in _CAP_SETS.items()}


def words(text: str) -> list[str]:
    """Lower-case words and numbers (numbers as '0'): the tokens of the framing fingerprints."""
    return re.findall(_TOKEN, re.sub("[0-9]+", "0", text.lower()))


def scaffold_keys(text: str) -> list[str]:
    """Fingerprints of a prompt's framing: word n-grams of its first and last EDGE_WORDS words.

    Harvest scripts wrap varied payloads in reusable framing ("... Think step by step and show
    your full reasoning."). Paraphrasing the framing per account changes some n-grams but
    rarely all; the payload in the middle is left out so that topic words do not link strangers.
    The n-grams are kept as text (normalised words), so they read as evidence.

    This is the specification; :func:`prompt_fingerprints` computes the same keys in SQL.
    """
    head = words(text[:EDGE_CHARS])[:EDGE_WORDS]
    tail = words(text[-EDGE_CHARS:])[-EDGE_WORDS:] if text else []
    return sorted({" ".join(part[i:i + NGRAM]) for part in (head, tail) for i in range(len(part) - NGRAM + 1)})


def capabilities(text: str) -> set[str]:
    """Capability areas a prompt falls in: at least two distinct whole keywords of the area."""
    low = text.lower()
    return {name for name, pattern in _AREA_PATTERNS.items()
            if len(set(re.findall(pattern, low, re.ASCII))) >= _MIN_HITS[name]}


#: sampled prompts fingerprinted per batch (whole accounts per batch): bounds the memory
FINGERPRINT_BATCH = 1_500_000


def prompt_fingerprints(sample: pa.Table, min_uses: int, min_share: float) -> tuple[pa.Table, pa.Table]:
    """:func:`_fingerprints` in batches of whole accounts, so memory stays bounded at any scale."""
    if sample.num_rows <= FINGERPRINT_BATCH:
        return _fingerprints(sample, min_uses, min_share)
    sample = sample.sort_by("account_id")
    accounts = sample.column("account_id")
    per_account, keys, start = [], [], 0
    while start < sample.num_rows:
        end = min(start + FINGERPRINT_BATCH, sample.num_rows)
        last = accounts[end - 1].as_py()
        while end < sample.num_rows and accounts[end].as_py() == last:  # keep the account whole
            end += 1
        a, k = _fingerprints(sample.slice(start, end - start), min_uses, min_share)
        per_account.append(a)
        keys.append(k)
        start = end
    return pa.concat_tables(per_account), pa.concat_tables(keys)


def area_sql(low: str) -> dict[str, str]:
    """DuckDB SQL for :func:`capabilities` of a lower-cased text column: area -> boolean test.

    The reports print these in the queries that reproduce a campaign's capability mix.
    """
    return {name: f"len(list_distinct(regexp_extract_all({low}, '{pattern}', 1))) >= {_MIN_HITS[name]}"
            for name, pattern in _AREA_PATTERNS.items()}


def _tokens_sql(text: str) -> str:
    """SQL for :func:`words` of a lower-cased text column."""
    return f"regexp_extract_all(regexp_replace({text}, '[0-9]+', '0', 'g'), '{_TOKEN}')"


def _grams_sql(part: str) -> str:
    """SQL list items for the NGRAM-word n-grams of a token list (NULL past its end), as fixed
    slices: DuckDB lambdas cost more."""
    return ", ".join(f"CASE WHEN len({part}) >= {i + NGRAM - 1} THEN array_to_string({part}[{i}:{i + NGRAM - 1}], ' ') END"
                     for i in range(1, EDGE_WORDS - NGRAM + 2))


def _fingerprints(sample: pa.Table, min_uses: int, min_share: float) -> tuple[pa.Table, pa.Table]:
    """Text fingerprints of each account's sampled prompts (``sample``: account_id, prompt).

    Returns (per account: sampled, <area>_share, targeted_share and prompt_repeat_share, of
    the sample;
    habitual scaffold keys: account_id, key). A scaffold n-gram is habitual when the account
    uses it in at least ``min_uses`` and ``min_share`` of its distinct sampled prompts: a
    harvest script's wrapper, not a phrase typed once.

    Runs on the collected sample in an in-process DuckDB whichever engine scanned the
    exchanges, so the values are the same on every engine (and equal to :func:`capabilities`
    and :func:`scaffold_keys`, which tests check); it reads at most
    SAMPLE_PROMPTS prompts per account, which bounds the cost by accounts, not by exchanges.
    """
    from distillguard.store import Store

    # a throwaway store: it spills into its own temporary directory beyond the memory limit
    store = Store(":memory:", memory_limit="4GB")
    con = store.con
    try:
        con.execute("SET threads TO 2")
        con.register("sample", sample)
        areas = area_sql("low")
        flags = ",\n".join(f"{test} AS {name}" for name, test in areas.items())
        shares = ",\n".join(f"avg({name}::DOUBLE) AS {name}_share" for name in areas)
        con.execute("""
            CREATE TEMP VIEW low AS
            SELECT account_id, prompt, lower(prompt) AS low FROM sample""")
        per_account = con.execute(f"""
            SELECT account_id, count(*) AS sampled,
                   {shares},
                   avg((software_engineering OR agentic_tool_use)::DOUBLE) AS targeted_share,
                   1.0 - count(DISTINCT prompt) / count(*) AS prompt_repeat_share
            FROM (SELECT account_id, prompt, {flags} FROM low)
            GROUP BY account_id ORDER BY account_id""").to_arrow_table()
        keys = con.execute(f"""
            WITH edges AS (
                SELECT account_id, hash(low) AS h, length(low) AS chars,
                       left(low, {EDGE_CHARS}) AS head, right(low, {EDGE_CHARS}) AS tail
                FROM low),
            -- distinct prompts per account, by a 64-bit hash of the text: no long strings to compare
            distinct_prompts AS (
                SELECT account_id, any_value(chars) AS chars, any_value(head) AS head, any_value(tail) AS tail
                FROM edges GROUP BY account_id, h),
            n AS (SELECT account_id, count(*) AS n_prompts FROM distinct_prompts GROUP BY account_id),
            -- a prompt no longer than EDGE_CHARS is its own head and tail: tokenised once
            tokenised AS (
                SELECT account_id, chars, {_tokens_sql("head")} AS head_tokens, tail
                FROM distinct_prompts),
            parts AS (
                SELECT account_id, head_tokens[1:{EDGE_WORDS}] AS head_part,
                       (CASE WHEN chars <= {EDGE_CHARS} THEN head_tokens
                             ELSE {_tokens_sql("tail")} END)[-{EDGE_WORDS}:] AS tail_part
                FROM tokenised),
            -- each n-gram once per prompt (head and tail overlap in short prompts)
            grams AS (
                SELECT account_id,
                       unnest(list_distinct(list_filter([{_grams_sql("head_part")}, {_grams_sql("tail_part")}],
                                                        g -> g IS NOT NULL))) AS key
                FROM parts),
            uses AS (SELECT account_id, key, count(*) AS uses FROM grams GROUP BY account_id, key)
            SELECT uses.account_id, key FROM uses JOIN n USING (account_id)
            WHERE uses >= {int(min_uses)} AND uses >= {float(min_share)} * n_prompts
            ORDER BY account_id, key""").to_arrow_table()
    finally:
        store.close()
    return per_account, keys
