"""The generator shared by personas and campaigns: accounts in, exchange rows out.

Traffic is built top-down for a block of accounts at once, with numpy and no per-exchange
Python: each account gets conversations, each conversation turns, conversations are grouped
into sessions, and sessions start at times drawn from the account's daily rhythm. What is
*asked* (prompt pieces, system prompt, tools) comes from a content function supplied by the
persona or campaign; everything else (tokens, latency, timestamps, model, status, network,
client, keys) is decided here from the scenario's behaviour sections.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Protocol

import numpy as np

from distillguard.simulate import network
from distillguard.simulate.corpora import TextTable
from distillguard.simulate.keys import mix, unit
from distillguard.simulate.scenario import Activity, Network, Requests
from distillguard.simulate.timing import Calendar

NEVER = np.iinfo(np.int64).max
SECOND_US = 1_000_000
MAX_OUTPUT_TOKENS = 32_000
CHARS_PER_TOKEN = 3.8
TOKENS_PER_TOOL = 160
ROW_RANK_BITS = 28  # rows (and conversations) per account stay below 2**28
RELAY_RANK_OFFSET = 1 << 27  # relayed rows of a hydra account rank after its own


# --- small vectorised helpers -----------------------------------------------------------------

def segment_starts(counts: np.ndarray) -> np.ndarray:
    return np.cumsum(counts) - counts


def rank_within(counts: np.ndarray) -> np.ndarray:
    """0, 1, ... inside each segment of the given lengths, concatenated."""
    total = int(counts.sum())
    return np.arange(total, dtype=np.int64) - np.repeat(segment_starts(counts), counts)


def exclusive_segment_cumsum(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Sum of the earlier values inside each segment (0 for a segment's first element)."""
    running = np.cumsum(values) - values
    if len(running) == 0:
        return running
    starts = np.minimum(segment_starts(counts), len(running) - 1)
    return running - np.repeat(running[starts], counts)


def lognormal(rng: np.random.Generator, median: float, sigma: float, n: int) -> np.ndarray:
    if sigma == 0:
        return np.full(n, float(median))
    return median * np.exp(sigma * rng.standard_normal(n))


def mean_lognormal(rng: np.random.Generator, mean: float, sigma: float, n: int) -> np.ndarray:
    """Log-normal values with the given mean (not median)."""
    return lognormal(rng, mean * np.exp(-0.5 * sigma * sigma), sigma, n)


def stochastic_round(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    return np.floor(x + rng.random(len(x))).astype(np.int64)


def weighted_choice(rng: np.random.Generator, weights: dict[str, float], n: int) -> tuple[list[str], np.ndarray]:
    names = list(weights)
    p = np.array([weights[k] for k in names], dtype=np.float64)
    return names, rng.choice(len(names), size=n, p=p / p.sum())


def weighted_by_key(keys: np.ndarray, weights: dict[str, float]) -> tuple[list[str], np.ndarray]:
    """Like weighted_choice, but a pure function of the keys (stable per entity)."""
    names = list(weights)
    cumulative = np.cumsum([weights[k] for k in names], dtype=np.float64)
    cumulative /= cumulative[-1]
    return names, np.minimum(np.searchsorted(cumulative, unit(keys), side="right"), len(names) - 1)


# --- accounts ---------------------------------------------------------------------------------

@dataclass
class Accounts:
    """Per-account attributes of one population, as parallel numpy columns."""

    ordinal: np.ndarray  # int64, unique in the run
    key: np.ndarray  # uint64 hash key
    group: np.ndarray  # int64 group ordinal in the run (-1: none)
    group_key: np.ndarray  # uint64 (the account's own key when ungrouped)
    home_key: np.ndarray  # uint64 whose home line the account uses (a household's, or its own)
    site: np.ndarray  # int32 campus index (-1: none)
    region: np.ndarray  # int32 index into network.REGIONS
    utc_offset: np.ndarray  # int32 minutes
    nat_addresses: np.ndarray  # int32 egress addresses of the group's network
    via_cloud: np.ndarray  # bool: the group's office network egresses through a cloud proxy
    active_start: np.ndarray  # int64 us
    active_end: np.ndarray  # int64 us
    created_at: np.ndarray  # int64 us
    exchanges: np.ndarray  # int64 target exchange count
    user_agent: np.ndarray  # int32 index into the run's user agents
    user_agent_alt: np.ndarray  # int32
    email_domain: np.ndarray  # int32 index into the run's domains
    payment: np.ndarray  # uint64 (0: none)
    organization: np.ndarray  # uint64
    api_keys: np.ndarray  # int32
    ipv6: np.ndarray  # bool
    lease_days: np.ndarray  # float64
    primary_model: np.ndarray  # int32 index into the run's models
    adopt_at: np.ndarray  # int64 (accounts x releases), NEVER if not adopting
    adopt_share: np.ndarray  # float64 (accounts x releases)
    max_tokens: np.ndarray  # int64 (-1: not set)
    system_prompt: np.ndarray  # int32 index into the run's system prompts (-1: none)
    tool_count: np.ndarray  # int32 size of the account's fixed tool set
    flavour: np.ndarray  # int32 a fixed per-account choice the content function uses
    local_rank: np.ndarray  # int64 position inside the population
    queue_offset: np.ndarray  # int64 first position in the population's shared work queue
    #: int64 end users the account relays and names per request (a reseller); None: it names none
    end_users: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ordinal)

    def slice(self, start: int, stop: int) -> Accounts:
        return Accounts(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[start:stop]
                           for f in fields(self)})


# --- rows -------------------------------------------------------------------------------------

@dataclass
class Rows:
    """Exchanges of one block, before they become Arrow columns."""

    account: np.ndarray  # int64 index into the block's accounts
    timestamp: np.ndarray  # int64 us
    conversation: np.ndarray  # int64 conversation rank inside the account
    row_rank: np.ndarray  # int64 exchange rank inside the account
    turn: np.ndarray  # int64
    pieces: np.ndarray  # int32 (rows x PIECES)
    system_prompt: np.ndarray  # int32 (-1: none)
    model: np.ndarray  # int32
    input_tokens: np.ndarray  # int64
    output_tokens: np.ndarray  # int64
    max_tokens: np.ndarray  # int64 (-1: none)
    tool_count: np.ndarray  # int64
    status: np.ndarray  # int64
    latency_ms: np.ndarray  # float64
    ip_version: np.ndarray  # int8
    ip_high: np.ndarray  # uint64
    ip_low: np.ndarray  # uint64
    user_agent: np.ndarray  # int32
    api_key: np.ndarray  # int64 key number inside the account
    relayed: np.ndarray  # bool: a genuine customer's request relayed by a hydra account

    def __len__(self) -> int:
        return len(self.timestamp)

    def take(self, index: np.ndarray) -> Rows:
        return Rows(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def concat(parts: list[Rows]) -> Rows:
        return Rows(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Rows)})


@dataclass
class Plan:
    """The structure of a block's traffic, handed to the content function."""

    accounts: Accounts
    conv_account: np.ndarray  # per conversation: account index in block
    conv_rank: np.ndarray  # per conversation: rank inside its account
    conv_turns: np.ndarray  # per conversation: number of turns
    conv_session: np.ndarray  # per conversation: session index in block
    conv_rank_in_session: np.ndarray
    row_conv: np.ndarray  # per row: conversation index in block
    row_turn: np.ndarray  # per row: turn index


@dataclass
class Content:
    """What a block's rows ask, as returned by a content function."""

    pieces: np.ndarray  # int32 (rows x PIECES) indexes into the text table
    conv_system_prompt: np.ndarray  # int32 per conversation (-1: none)
    conv_tools: np.ndarray  # int64 per conversation
    output_factor: np.ndarray  # float64 per row, multiplies the sampled response length
    conv_context_tokens: np.ndarray  # int64 per conversation, extra input


class ContentFn(Protocol):
    def __call__(self, plan: Plan, rng: np.random.Generator) -> Content: ...


@dataclass(frozen=True)
class Behaviour:
    """The scenario sections that drive the generic part of row generation."""

    activity: Activity
    network: Network
    requests: Requests
    window_end_us: int
    client_alt_share: float


@dataclass
class RunContext:
    """Run-wide tables every population reads."""

    calendar: Calendar
    pools: network.Pools
    text: TextTable
    system_prompt_lengths: np.ndarray  # bytes per run-level system prompt
    model_index: dict[str, int]
    releases: list[tuple[int, int]]  # (model index, release time us)
    salt: int


# --- generation -------------------------------------------------------------------------------

def _conversations(acc: Accounts, activity: Activity, rng: np.random.Generator):
    n_conv = np.maximum(1, stochastic_round(rng, acc.exchanges / activity.turns_per_conversation))
    conv_account = np.repeat(np.arange(len(acc), dtype=np.int64), n_conv)
    conv_rank = rank_within(n_conv)
    if activity.turns_per_conversation > 1:
        turns = rng.geometric(1.0 / activity.turns_per_conversation, size=len(conv_account))
        turns = np.minimum(turns, activity.max_turns).astype(np.int64)
    else:
        turns = np.ones(len(conv_account), dtype=np.int64)
    # sessions: consecutive conversations of an account, about conversations_per_session each
    per_session = activity.conversations_per_session * rng.uniform(0.5, 1.5, len(acc))
    n_sess = np.maximum(1, np.ceil(n_conv / per_session)).astype(np.int64)
    n_sess = np.minimum(n_sess, n_conv)
    local = (conv_rank * np.repeat(n_sess, n_conv)) // np.repeat(n_conv, n_conv)
    conv_session = np.repeat(segment_starts(n_sess), n_conv) + local
    return n_conv, conv_account, conv_rank, turns, n_sess, conv_session


def generate_rows(acc: Accounts, behaviour: Behaviour, content_fn: ContentFn, ctx: RunContext,
                  rng: np.random.Generator, relayed: bool = False) -> Rows:
    """All exchanges of a block of accounts (see module docstring)."""
    activity, requests = behaviour.activity, behaviour.requests
    n_conv, conv_account, conv_rank, conv_turns, n_sess, conv_session = _conversations(acc, activity, rng)
    n_convs_total = len(conv_account)
    row_conv = np.repeat(np.arange(n_convs_total, dtype=np.int64), conv_turns)
    row_turn = rank_within(conv_turns)
    row_account = conv_account[row_conv]
    n_rows = len(row_conv)
    sess_counts = np.bincount(conv_session, minlength=int(n_sess.sum()))
    conv_rank_in_session = rank_within(sess_counts)

    plan = Plan(acc, conv_account, conv_rank, conv_turns, conv_session, conv_rank_in_session,
                row_conv, row_turn)
    content = content_fn(plan, rng)

    # --- tokens, status and latency -----------------------------------------------------------
    prompt_bytes = ctx.text.lengths[content.pieces].sum(axis=1)
    prompt_tokens = np.maximum(1, np.ceil(prompt_bytes / CHARS_PER_TOKEN * rng.uniform(0.9, 1.1, n_rows)))
    system = content.conv_system_prompt[row_conv]
    system_tokens = np.where(system >= 0, ctx.system_prompt_lengths[np.maximum(system, 0)] // 4, 0)
    tools = content.conv_tools[row_conv]
    max_tokens = acc.max_tokens[row_account]
    wanted = lognormal(rng, requests.output_tokens.median, requests.output_tokens.sigma, n_rows)
    wanted *= content.output_factor
    cap = np.where(max_tokens > 0, max_tokens, MAX_OUTPUT_TOKENS)
    output_tokens = np.clip(np.round(wanted), 1, cap).astype(np.int64)

    errors = requests.errors
    u = rng.random(n_rows)
    status = np.full(n_rows, 200, dtype=np.int64)
    status[u < errors.rate_limited + errors.client_error + errors.server_error] = 500
    status[(status == 500) & (rng.random(n_rows) < 0.5)] = 529
    status[u < errors.rate_limited + errors.client_error] = 400
    status[u < errors.rate_limited] = 429
    failed = status != 200
    output_tokens[failed] = 0

    history = exclusive_segment_cumsum((prompt_tokens + output_tokens).astype(np.int64), conv_turns)
    input_tokens = (prompt_tokens + system_tokens + tools * TOKENS_PER_TOOL
                    + content.conv_context_tokens[row_conv] + history).astype(np.int64)

    first_token_ms = lognormal(rng, 420.0, 0.35, n_rows) + input_tokens * 0.012
    speed = requests.tokens_per_second * lognormal(rng, 1.0, 0.15, n_rows)
    latency_ms = first_token_ms + output_tokens / speed * 1000.0
    latency_ms = np.where(status == 429, rng.uniform(4, 60, n_rows), latency_ms)
    latency_ms = np.where(status == 400, rng.uniform(15, 150, n_rows), latency_ms)
    latency_ms = np.where(status >= 500, lognormal(rng, 1800.0, 0.8, n_rows), latency_ms)
    latency_ms = np.round(latency_ms, 1)

    # --- time ---------------------------------------------------------------------------------
    timestamp = _timestamps(acc, behaviour, ctx, rng, plan, n_sess, sess_counts, latency_ms)
    index = np.flatnonzero(timestamp < behaviour.window_end_us)

    rows = Rows(
        account=row_account, timestamp=timestamp,
        conversation=conv_rank[row_conv] + (RELAY_RANK_OFFSET if relayed else 0),
        row_rank=rank_within(np.bincount(row_account, minlength=len(acc))) + (RELAY_RANK_OFFSET if relayed else 0),
        turn=row_turn, pieces=content.pieces, system_prompt=system, model=np.zeros(n_rows, np.int32),
        input_tokens=input_tokens, output_tokens=output_tokens, max_tokens=max_tokens,
        tool_count=tools.astype(np.int64), status=status, latency_ms=latency_ms,
        ip_version=np.zeros(n_rows, np.int8), ip_high=np.zeros(n_rows, np.uint64),
        ip_low=np.zeros(n_rows, np.uint64), user_agent=np.zeros(n_rows, np.int32),
        api_key=np.zeros(n_rows, np.int64), relayed=np.full(n_rows, relayed),
    ).take(index)
    session = conv_session[row_conv][index]
    session_key = mix(ctx.salt, 7, acc.key[rows.account], session)
    row_key = mix(ctx.salt, 8, acc.key[rows.account], rows.row_rank)

    rows.model = _models(acc, requests, ctx, rows, row_key)
    _clients(acc, behaviour, rows, session_key)
    _addresses(acc, behaviour.network, ctx, rows, session_key, row_key)
    return rows


def _timestamps(acc: Accounts, behaviour: Behaviour, ctx: RunContext, rng: np.random.Generator,
                plan: Plan, n_sess: np.ndarray, sess_counts: np.ndarray, latency_ms: np.ndarray) -> np.ndarray:
    activity = behaviour.activity
    sess_account = np.repeat(np.arange(len(acc), dtype=np.int64), n_sess)
    n_sessions = len(sess_account)
    start = ctx.calendar.sample(
        activity.rhythm.profile, activity.rhythm.weekend_factor, acc.utc_offset[sess_account],
        acc.active_start[sess_account], acc.active_end[sess_account], rng.random(n_sessions))

    # think time after each row: a turn gap inside a conversation, a conversation gap after its last turn
    row_conv, row_turn = plan.row_conv, plan.row_turn
    last_turn = row_turn == plan.conv_turns[row_conv] - 1
    n_rows = len(row_conv)
    turn_gap = lognormal(rng, activity.turn_gap_seconds.median, activity.turn_gap_seconds.sigma, n_rows)
    conv_gap = lognormal(rng, activity.conversation_gap_seconds.median,
                         activity.conversation_gap_seconds.sigma, n_rows)
    step_s = np.where(last_turn, (latency_ms / 1000.0 + conv_gap) / activity.concurrency,
                      latency_ms / 1000.0 + turn_gap)
    rows_per_session = np.bincount(plan.conv_session[row_conv], minlength=n_sessions)
    offset_s = exclusive_segment_cumsum(step_s, rows_per_session)

    sync = activity.synchrony
    if sync.share > 0:
        # sessions on the group controller's clock: shared tick, shared cadence, tiny jitter
        group_key = acc.group_key[sess_account]
        aligned = unit(mix(ctx.salt, 21, acc.key[sess_account], np.arange(n_sessions))) < sync.share
        tick_us = int(sync.tick_minutes * 60 * SECOND_US)
        phase = (unit(mix(ctx.salt, 22, group_key)) * tick_us).astype(np.int64)
        snapped = (start - phase) // tick_us * tick_us + phase
        snapped = np.where(snapped < acc.active_start[sess_account], snapped + tick_us, snapped)
        start = np.where(aligned, snapped, start)
        cadence_s = activity.conversation_gap_seconds.median * (0.6 + 0.8 * unit(mix(ctx.salt, 23, group_key)))
        row_session = plan.conv_session[row_conv]
        # the controller starts conversations on its cadence; follow-ups still wait for answers
        within_conv = exclusive_segment_cumsum(np.where(last_turn, 0.0, step_s), plan.conv_turns)
        conv_slot = plan.conv_rank_in_session[row_conv] * cadence_s[row_session]
        jitter = rng.normal(0, sync.jitter_ms / 1000.0, len(plan.conv_turns))[row_conv]
        lockstep = np.maximum(conv_slot + jitter, 0.0) + within_conv
        offset_s = np.where(aligned[row_session], lockstep, offset_s)

    row_session = plan.conv_session[row_conv]
    return start[row_session] + (offset_s * SECOND_US).astype(np.int64)


def _models(acc: Accounts, requests: Requests, ctx: RunContext, rows: Rows, row_key: np.ndarray) -> np.ndarray:
    names, _ = zip(*requests.models.items())
    mix_index = np.array([ctx.model_index[n] for n in names], dtype=np.int32)
    _, drawn = weighted_by_key(mix(row_key, 31), requests.models)
    model = np.where(unit(mix(row_key, 32)) < 0.85, acc.primary_model[rows.account], mix_index[drawn])
    for r, (model_id, _released) in enumerate(ctx.releases):
        adopted = rows.timestamp >= acc.adopt_at[rows.account, r]
        moved = adopted & (unit(mix(row_key, 33, r)) < acc.adopt_share[rows.account, r])
        model = np.where(moved, model_id, model)
    return model.astype(np.int32)


def _clients(acc: Accounts, behaviour: Behaviour, rows: Rows, session_key: np.ndarray) -> None:
    other = unit(mix(session_key, 41)) < behaviour.client_alt_share
    rows.user_agent = np.where(other, acc.user_agent_alt[rows.account], acc.user_agent[rows.account])
    n_keys = acc.api_keys[rows.account].astype(np.float64)
    rows.api_key = np.minimum((n_keys * unit(mix(session_key, 42)) ** 2).astype(np.int64), n_keys.astype(np.int64) - 1)


def _addresses(acc: Accounts, spec: Network, ctx: RunContext, rows: Rows, session_key: np.ndarray,
               row_key: np.ndarray) -> None:
    names, mode = weighted_by_key(mix(session_key, 51), spec.modes)
    who = rows.account
    request = network.AddressRequest(
        account_key=acc.key[who], home_key=acc.home_key[who], group_key=acc.group_key[who], region=acc.region[who],
        site=acc.site[who], ipv6=acc.ipv6[who], lease_days=acc.lease_days[who],
        nat_addresses=acc.nat_addresses[who], via_cloud=acc.via_cloud[who], timestamp=rows.timestamp,
        session_key=session_key, row_key=row_key, salt=ctx.salt)
    for m, name in enumerate(names):
        selected = np.flatnonzero(mode == m)
        if len(selected):
            version, high, low = network.ADDRESS_MODES[name](request.take(selected), spec, ctx.pools)
            rows.ip_version[selected], rows.ip_high[selected], rows.ip_low[selected] = version, high, low


# --- account attributes shared by personas and campaigns --------------------------------------

class Catalog:
    """Distinct strings of one kind in the run (domains, system prompts, ...), by first use."""

    def __init__(self, items: tuple[str, ...] | list[str] = ()) -> None:
        self.items: list[str] = []
        self._index: dict[str, int] = {}
        for item in items:
            self.add(item)

    def add(self, item: str) -> int:
        found = self._index.get(item)
        if found is None:
            found = self._index[item] = len(self.items)
            self.items.append(item)
        return found

    def add_many(self, items: list[str]) -> np.ndarray:
        return np.fromiter((self.add(s) for s in items), dtype=np.int32, count=len(items))


@dataclass
class Catalogs:
    """The run's string catalogs; rows and accounts hold indexes into them."""

    domains: Catalog
    system_prompts: Catalog
    user_agents: Catalog
    models: Catalog
    ua_family_start: np.ndarray
    ua_family_size: np.ndarray
    ua_family_names: tuple[str, ...]


def email_domains(keys: np.ndarray, region: np.ndarray, group_domain: list[str | None],
                  weights: dict[str, float], catalogs: Catalogs) -> np.ndarray:
    """Index of each account's e-mail domain (see scenario.Identity.email_domains)."""
    from distillguard.simulate import identity

    names, chosen = weighted_by_key(mix(keys, 301), weights)
    pick = mix(keys, 302)
    out = np.empty(len(keys), dtype=np.int32)
    for c, name in enumerate(names):
        rows = np.flatnonzero(chosen == c)
        if not len(rows):
            continue
        if name == "@free":
            values = [identity.FREE_MAIL[i] for i in below_int(pick[rows], len(identity.FREE_MAIL))]
        elif name == "@regional":
            values = []
            for r, p in zip(region[rows], pick[rows]):
                options = identity.REGIONAL_MAIL[network.REGION_NAMES[r]]
                values.append(options[int(p % np.uint64(len(options)))])
        elif name == "@disposable":
            values = [identity.DISPOSABLE_MAIL[i] for i in below_int(pick[rows], len(identity.DISPOSABLE_MAIL))]
        elif name in ("@custom", "@group"):
            custom = identity.custom_domains(keys[rows])
            values = custom if name == "@custom" else [
                group_domain[i] or custom[j] for j, i in enumerate(rows)]
        else:
            values = [name] * len(rows)
        out[rows] = catalogs.domains.add_many(values)
    return out


def below_int(keys: np.ndarray, n: int) -> np.ndarray:
    return (keys % np.uint64(n)).astype(np.int64)


def common_attributes(keys: np.ndarray, group_key: np.ndarray, grouped: np.ndarray,
                      group_domain: list[str | None], region: np.ndarray, client, identity_spec,
                      requests: Requests, network_spec: Network, catalogs: Catalogs,
                      salt: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Identity, client and request defaults of accounts, as Accounts fields."""
    n = len(keys)
    has_card = unit(mix(keys, 311)) < identity_spec.payment_on_file
    shares_card = grouped & (unit(mix(keys, 312)) < identity_spec.shared_payment)
    payment = np.where(shares_card, mix(salt, 313, group_key), mix(salt, 314, keys)) | np.uint64(1)
    payment = np.where(has_card, payment, np.uint64(0))
    in_org = grouped & (unit(mix(keys, 321)) < identity_spec.group_organization)
    organization = np.where(in_org, mix(salt, 322, group_key), mix(salt, 323, keys))
    api_keys = mean_lognormal(rng, identity_spec.api_keys_per_account.mean,
                              identity_spec.api_keys_per_account.sigma, n)
    api_keys = np.clip(np.round(api_keys), 1, 255).astype(np.int32)

    families = catalogs.ua_family_names
    fam_names, fam = weighted_by_key(mix(keys, 341), client.user_agents)
    fam_global = np.array([families.index(f) for f in fam_names])[fam]
    size = catalogs.ua_family_size[fam_global]
    newer = np.minimum((np.sqrt(unit(mix(keys, 342))) * size).astype(np.int64), size - 1)
    if getattr(client, "one_string", False):
        newer = size - 1
    user_agent = (catalogs.ua_family_start[fam_global] + newer).astype(np.int32)
    alt_fam = np.array([families.index(f) for f in ("curl", "httpx", "browser", "openai_python")])
    alt = alt_fam[below_int(mix(keys, 343), len(alt_fam))]
    alt_size = catalogs.ua_family_size[alt]
    user_agent_alt = (catalogs.ua_family_start[alt] + below_int(mix(keys, 344), 10_000) % alt_size).astype(np.int32)

    model_names, model_pick = weighted_by_key(mix(keys, 351), requests.models)
    primary_model = np.array([catalogs.models.add(m) for m in model_names], dtype=np.int32)[model_pick]
    mt_names, mt_pick = weighted_by_key(mix(keys, 361), requests.max_tokens)
    max_tokens = np.array([-1 if m == "none" else int(m) for m in mt_names], dtype=np.int64)[mt_pick]

    from distillguard.simulate.text import ENTERPRISE_SYSTEM_TEMPLATE, SYSTEM_PROMPTS

    sp_names, sp_pick = weighted_by_key(mix(keys, 371), requests.system_prompts)
    system_prompt = np.full(n, -1, dtype=np.int32)
    for s, name in enumerate(sp_names):
        rows = np.flatnonzero(sp_pick == s)
        if name == "@enterprise":
            texts = [ENTERPRISE_SYSTEM_TEMPLATE.format(company=group_domain[i] or "the company") for i in rows]
            system_prompt[rows] = catalogs.system_prompts.add_many(texts)
        elif name != "none":
            system_prompt[rows] = catalogs.system_prompts.add(SYSTEM_PROMPTS[name])
    tools = requests.tools
    tool_count = (tools.min + below_int(mix(keys, 381), tools.max - tools.min + 1)).astype(np.int32)

    return {
        "email_domain": email_domains(keys, region, group_domain, identity_spec.email_domains, catalogs),
        "payment": payment,
        "organization": organization,
        "api_keys": api_keys,
        "ipv6": unit(mix(keys, 331)) < network_spec.ipv6_share,
        "lease_days": lognormal(rng, network_spec.home_lease_days.median, network_spec.home_lease_days.sigma, n),
        "user_agent": user_agent,
        "user_agent_alt": user_agent_alt,
        "primary_model": primary_model,
        "max_tokens": max_tokens,
        "system_prompt": system_prompt,
        "tool_count": tool_count,
    }


def scaled_count(accounts: int, scale: float) -> int:
    """Accounts of a population at ``scale``: proportional, but at least one if it has any."""
    return 0 if accounts == 0 else max(1, int(round(accounts * scale)))
