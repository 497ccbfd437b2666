"""Legitimate customers: personas, their groups (campuses, offices, organisations) and prompts.

A persona's behaviour comes entirely from its scenario section; this module adds the
structure that is not a single number: which accounts share a campus NAT or an organisation,
and how each prompt style (chat, coding agent, benchmark run, batch job, ...) is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from distillguard.simulate import network
from distillguard.simulate.corpora import PIECES, TextTable
from distillguard.simulate.keys import mix, unit
from distillguard.simulate.population import (
    NEVER,
    Accounts,
    Behaviour,
    Catalogs,
    Content,
    ContentFn,
    Plan,
    below_int,
    common_attributes,
    lognormal,
    mean_lognormal,
    scaled_count,
    weighted_by_key,
    weighted_choice,
)
from distillguard.simulate.scenario import Persona, Scenario
from distillguard.simulate.text import BATCH_TEMPLATES, HARNESS_HEADS, HARNESS_TAILS

DAY_US = 86_400_000_000
FOLLOW_UP_DETAIL = 0.75  # share of follow-up turns that add a specific sentence
HOUR_US = 3_600_000_000


def micros(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


#: oldest plausible account, in days before the scenario starts
MAX_ACCOUNT_AGE_DAYS = 2000


@dataclass
class TurnIndex:
    """Where a corpus's later turns live in the text table: per prompt, first entry and count."""

    start: np.ndarray
    count: np.ndarray


def region_offsets(region_names: list[str], region: np.ndarray, keys: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(region), dtype=np.int32)
    for r, name in enumerate(region_names):
        rows = np.flatnonzero(region == r)
        if len(rows):
            table = network.REGIONS[name]["utc_offsets"]
            names, pick = weighted_by_key(mix(keys[rows], 401), {str(k): v for k, v in table.items()})
            offsets[rows] = np.array([int(x) for x in names], dtype=np.int32)[pick]
    return offsets


class OrganicPopulation:
    """The accounts of one persona and how they behave."""

    role = "organic"
    campaign_id: str | None = None

    def __init__(self, name: str, spec: Persona, scale: float) -> None:
        self.name = name
        self.persona = name
        self.spec = spec
        self.n_accounts = scaled_count(spec.accounts, scale)
        self.n_groups = 0
        self.group_names: list[str] = []

    # --- accounts -----------------------------------------------------------------------------

    def build_accounts(self, scenario: Scenario, first_ordinal: int, first_group: int,
                       catalogs: Catalogs, salt: int, rng: np.random.Generator) -> Accounts:
        spec, n = self.spec, self.n_accounts
        ordinal = first_ordinal + np.arange(n, dtype=np.int64)
        keys = mix(salt, 1, ordinal)
        region_names = list(network.REGIONS)
        pick_names, pick = weighted_by_key(mix(keys, 402), spec.regions)
        region = np.array([region_names.index(r) for r in pick_names], dtype=np.int32)[pick]
        offsets = region_offsets(region_names, region, keys)
        group = np.full(n, -1, dtype=np.int64)
        site = np.full(n, -1, dtype=np.int32)
        nat = np.ones(n, dtype=np.int32)
        via_cloud = np.zeros(n, dtype=bool)
        group_domain: list[str | None] = [None] * n
        group_key = keys.copy()
        local_group = np.full(n, -1, dtype=np.int64)

        if spec.group is not None and n:
            g = spec.group
            self.n_groups = max(1, int(round(n / g.accounts_per_group)))
            local_group = below_int(mix(keys, 403), self.n_groups)
            group = first_group + local_group
            group_key = mix(salt, 2, group)
            nat[:] = g.nat_addresses
            self.group_names, domains, g_region, g_offset, g_site = self._groups(
                g.kind, mix(salt, 2, first_group + np.arange(self.n_groups)), region_names, spec.regions)
            group_domain = [domains[i] for i in local_group]
            region = g_region[local_group]
            offsets = g_offset[local_group]
            site = g_site[local_group]
            via_cloud = unit(mix(group_key, 404)) < g.cloud_egress_share

        created, start, end = self._lifetimes(scenario, n, local_group, rng)
        exchanges = np.maximum(1, np.round(mean_lognormal(
            rng, spec.activity.exchanges_per_account.mean, spec.activity.exchanges_per_account.sigma, n)))
        attrs = common_attributes(keys, group_key, group >= 0, group_domain, region, spec.client,
                                  spec.identity, spec.requests, spec.network, catalogs, salt, rng)
        adopt_at, adopt_share = self._adoption(scenario, n, rng)
        harness = below_int(mix(keys, 405), len(HARNESS_HEADS) * len(HARNESS_TAILS))
        # an organisation runs the same batch templates on all its accounts
        batch = below_int(mix(group_key, 406), len(BATCH_TEMPLATES))
        flavour = batch if "batch" in spec.prompts.styles else harness
        household = spec.group is not None and spec.group.kind == "household"
        return Accounts(
            ordinal=ordinal, key=keys, group=group, group_key=group_key,
            home_key=group_key if household else keys, site=site, region=region,
            utc_offset=offsets, nat_addresses=nat, via_cloud=via_cloud, active_start=start,
            active_end=end, created_at=created, exchanges=exchanges.astype(np.int64),
            adopt_at=adopt_at, adopt_share=adopt_share, flavour=flavour.astype(np.int32),
            local_rank=np.arange(n, dtype=np.int64), queue_offset=np.zeros(n, dtype=np.int64),
            end_users=self._end_users(keys), **attrs)

    def _end_users(self, keys: np.ndarray) -> np.ndarray | None:
        """How many end users each account relays (identity.end_users_per_account), drawn by hash,
        not from the run's generator, so that every other draw of the run stays as it was."""
        spread = self.spec.identity.end_users_per_account
        if spread is None:
            return None
        u = np.clip(unit(mix(keys, 408)), 1e-12, 1.0)  # Box-Muller: a standard normal from two hashes
        z = np.sqrt(-2.0 * np.log(u)) * np.cos(2.0 * np.pi * unit(mix(keys, 409)))
        return np.maximum(2, np.round(spread.mean * np.exp(spread.sigma * z - spread.sigma ** 2 / 2))).astype(np.int64)

    def _groups(self, kind: str, gkeys: np.ndarray, region_names: list[str],
                region_weights: dict[str, float]):
        from distillguard.simulate.identity import custom_domains

        n_groups = self.n_groups
        names, domains = [], []
        g_region = np.zeros(n_groups, dtype=np.int32)
        g_offset = np.zeros(n_groups, dtype=np.int32)
        g_site = np.full(n_groups, -1, dtype=np.int32)
        pick_names, pick = weighted_by_key(mix(gkeys, 407), region_weights)
        g_region[:] = np.array([region_names.index(r) for r in pick_names], dtype=np.int32)[pick]
        g_offset[:] = region_offsets(region_names, g_region, gkeys)
        custom = custom_domains(gkeys)
        for i in range(n_groups):
            if kind == "university":
                uni = i % len(network.UNIVERSITIES)
                domain, region, offset = network.UNIVERSITIES[uni][:3]
                g_site[i] = uni
                g_region[i] = region_names.index(region)
                g_offset[i] = offset
            elif kind in ("office", "enterprise"):
                from distillguard.simulate.network import COMPANY_DOMAINS

                stem, tld = COMPANY_DOMAINS[i % len(COMPANY_DOMAINS)].rsplit(".", 1)
                domain = f"{stem}.{tld}" if i < len(COMPANY_DOMAINS) else f"{stem}{i // len(COMPANY_DOMAINS)}.{tld}"
            else:
                domain = custom[i]
            domains.append(domain)
            names.append(f"{self.name}:{domain}")
        return names, domains, g_region, g_offset, g_site

    def _lifetimes(self, scenario: Scenario, n: int, local_group: np.ndarray, rng: np.random.Generator):
        spec = self.spec
        period_start, period_end = micros(scenario.period.start), micros(scenario.period.end)
        new = rng.random(n) < spec.created.during_period
        # the lognormal tail reaches back decades; no account of an LLM API predates ~2020
        before = np.minimum(lognormal(rng, spec.created.days_before_start.median,
                                      spec.created.days_before_start.sigma, n), MAX_ACCOUNT_AGE_DAYS)
        created = np.where(new, period_start + (rng.random(n) * (period_end - period_start - DAY_US)).astype(np.int64),
                           period_start - (before * DAY_US).astype(np.int64))
        if self.n_groups:
            # each group has one onboarding day (some before the period, some inside it)
            span = period_end - period_start
            day = period_start - 120 * DAY_US + rng.random(self.n_groups) * (span + 110 * DAY_US)
            onboarding = (local_group >= 0) & (rng.random(n) < spec.created.group_onboarding)
            together = day[np.maximum(local_group, 0)] + np.abs(rng.normal(0, 3, n)) * HOUR_US
            created = np.where(onboarding, together.astype(np.int64), created)
            new = np.where(onboarding, created >= period_start, new)
        start = np.where(new, created + (rng.random(n) * 2 * HOUR_US).astype(np.int64), period_start)
        start = np.clip(start, period_start, period_end - DAY_US)
        churned = rng.random(n) < spec.activity.churn
        end = np.where(churned, start + (rng.uniform(0.05, 1.0, n) * (period_end - start)).astype(np.int64),
                       period_end)
        return created.astype(np.int64), start.astype(np.int64), np.maximum(end, start + HOUR_US)

    def _adoption(self, scenario: Scenario, n: int, rng: np.random.Generator):
        releases = scenario.releases()
        adopt_at = np.full((n, len(releases)), NEVER, dtype=np.int64)
        share = np.zeros((n, len(releases)))
        spec = self.spec.adoption
        for r, (_model, released) in enumerate(releases):
            early = rng.random(n) < spec.early
            lag = np.where(early, rng.random(n), lognormal(rng, spec.lag_days.median, spec.lag_days.sigma, n))
            adopts = early | (rng.random(n) >= spec.never)
            adopt_at[:, r] = np.where(adopts, micros(released) + (lag * DAY_US).astype(np.int64), NEVER)
            share[:, r] = spec.share_after
        return adopt_at, share

    # --- behaviour and content ----------------------------------------------------------------

    def behaviour(self, scenario: Scenario) -> Behaviour:
        spec = self.spec
        return Behaviour(activity=spec.activity, network=spec.network, requests=spec.requests,
                         window_end_us=micros(scenario.period.end),
                         client_alt_share=spec.client.other_agent_share)

    def content(self, text: TextTable, turns: dict[str, TurnIndex]) -> ContentFn:
        return organic_content(self.spec, text, turns)


# --- prompt styles ----------------------------------------------------------------------------

@dataclass
class _Style:
    """Rows of one style inside a block, and where to write their pieces."""

    rows: np.ndarray  # row indexes in block
    conv: np.ndarray  # conversation index per row
    first: np.ndarray  # bool per row: first turn
    pieces: np.ndarray  # (rows x PIECES), written in place


def _pick(section, rng: np.random.Generator, n: int) -> np.ndarray:
    return section.index(rng.integers(0, section.count, n))


def _decorate(style: _Style, text: TextTable, rng: np.random.Generator, decoration: float,
              personal_context: float, context: str) -> None:
    first = np.flatnonzero(style.first)
    n = len(first)
    decorated = rng.random(n) < decoration
    which = rng.random(n)
    head = decorated & (which < 0.6)
    tail = decorated & (which > 0.35)
    style.pieces[first[head], 0] = _pick(text["organic_prefix"], rng, int(head.sum()))
    style.pieces[first[tail], 4] = _pick(text["organic_suffix"], rng, int(tail.sum()))
    if context == "code":  # developers state languages and constraints
        stated = first[rng.random(n) < 0.35]
        style.pieces[stated, 4] = _pick(text["code_suffix"], rng, len(stated))
    pasted = rng.random(n) < personal_context
    style.pieces[first[pasted], 2] = _pick(text[f"ctx_{context}_first"], rng, int(pasted.sum()))
    more = pasted & (rng.random(n) < 0.6)
    style.pieces[first[more], 3] = _pick(text[f"ctx_{context}_next"], rng, int(more.sum()))


def _corpus_turns(style: _Style, plan: Plan, text: TextTable, turns: dict[str, TurnIndex], corpus: str,
                  rng: np.random.Generator, record: np.ndarray) -> None:
    """Body of every row: the corpus prompt, then its own later turns, then generic follow-ups."""
    body = text[f"corpus:{corpus}"]
    turn = plan.row_turn[style.rows]
    style.pieces[:, 1] = body.index(record)
    later = ~style.first
    follow = _pick(text["follow_up"], rng, len(style.rows))
    index = turns.get(corpus)
    if index is not None:
        own = later & (turn - 1 < index.count[record])
        style.pieces[own, 1] = index.start[record[own]] + (turn[own] - 1)
        later = later & ~own
    style.pieces[later, 1] = follow[later]
    # people rarely send a bare "why?": most follow-ups carry their own specifics
    n = len(style.rows)
    specific = np.flatnonzero(~style.first & (rng.random(n) < FOLLOW_UP_DETAIL))
    style.pieces[specific, 2] = _pick(text["ctx_prose_next"], rng, len(specific))
    longer = specific[rng.random(len(specific)) < 0.5]
    style.pieces[longer, 3] = _pick(text["ctx_prose_next"], rng, len(longer))


def _chat_like(corpus: str, context: str, factor: float):
    def build(style: _Style, plan: Plan, spec: Persona, text: TextTable, turns, rng) -> np.ndarray:
        n_records = text[f"corpus:{corpus}"].count
        conv_record = rng.integers(0, n_records, len(plan.conv_account))
        _corpus_turns(style, plan, text, turns, corpus, rng, conv_record[style.conv])
        _decorate(style, text, rng, spec.prompts.decoration, spec.prompts.personal_context, context)
        return np.full(len(style.rows), factor)
    return build


def _short(style: _Style, plan: Plan, spec: Persona, text: TextTable, turns, rng) -> np.ndarray:
    style.pieces[:, 1] = np.where(style.first, _pick(text["short"], rng, len(style.rows)),
                                  _pick(text["follow_up"], rng, len(style.rows)))
    return np.full(len(style.rows), 0.3)


def _benchmark(style: _Style, plan: Plan, spec: Persona, text: TextTable, turns, rng) -> np.ndarray:
    """An evaluation run: the benchmark's items in order, in the researcher's harness format."""
    acc = plan.accounts
    account = plan.conv_account[style.conv]
    body = text["corpus:benchmark"]
    start = below_int(mix(acc.key[account], 411, plan.conv_session[style.conv]), body.count)
    item = (start + plan.conv_rank_in_session[style.conv]) % body.count
    harness = acc.flavour[account]
    heads, tails = text["harness_head"], text["harness_tail"]
    # a few harness formats dominate (everyone uses the popular evaluation libraries)
    head = np.minimum((unit(mix(harness, 412)) ** 2 * heads.count).astype(np.int64), heads.count - 1)
    tail = np.minimum((unit(mix(harness, 413)) ** 2 * tails.count).astype(np.int64), tails.count - 1)
    style.pieces[:, 0] = np.where(style.first, heads.index(head), 0)
    style.pieces[:, 1] = np.where(style.first, body.index(item), _pick(text["follow_up"], rng, len(style.rows)))
    style.pieces[:, 4] = np.where(style.first, tails.index(tail), 0)
    return np.full(len(style.rows), 0.9)


def _agent(style: _Style, plan: Plan, spec: Persona, text: TextTable, turns, rng) -> np.ndarray:
    """A coding-agent loop: a task, then tool output and nudges, many times over."""
    n_records = text["corpus:code"].count
    conv_record = rng.integers(0, n_records, len(plan.conv_account))
    first = style.first
    style.pieces[first, 1] = text["corpus:code"].index(conv_record[style.conv[first]])
    _decorate(style, text, rng, spec.prompts.decoration, spec.prompts.personal_context, "code")
    later = np.flatnonzero(~first)
    n = len(later)
    style.pieces[later, 0] = _pick(text["agent_head"], rng, n)
    style.pieces[later, 2] = _pick(text["agent_detail"], rng, n)
    more = rng.random(n) < 0.9
    style.pieces[later[more], 3] = _pick(text["ctx_code_next"], rng, int(more.sum()))
    most = rng.random(n) < 0.6
    style.pieces[later[most], 4] = _pick(text["ctx_code_next"], rng, int(most.sum()))
    return np.where(first, 1.2, 0.55)


def _batch(style: _Style, plan: Plan, spec: Persona, text: TextTable, turns, rng) -> np.ndarray:
    """An enterprise job: the organisation's template filled with one document each."""
    acc = plan.accounts
    account = plan.conv_account[style.conv]
    templates = text["batch_template"]
    second = unit(mix(acc.group_key[account], 421, plan.conv_session[style.conv])) < 0.3
    template = (acc.flavour[account] + second) % templates.count
    n = len(style.rows)
    style.pieces[:, 0] = templates.index(template)
    style.pieces[:, 2] = _pick(text["ctx_prose_first"], rng, n)
    more = rng.random(n) < 0.8
    style.pieces[more, 3] = _pick(text["ctx_prose_next"], rng, int(more.sum()))
    return np.full(n, 0.25)


def _longform(style: _Style, plan: Plan, spec: Persona, text: TextTable, turns, rng) -> np.ndarray:
    """Content generation: a long-form template around a topic, answered at length."""
    n_records = text["corpus:chat"].count
    conv_record = rng.integers(0, n_records, len(plan.conv_account))
    _corpus_turns(style, plan, text, turns, "chat", rng, conv_record[style.conv])
    first = np.flatnonzero(style.first)
    style.pieces[first, 0] = _pick(text["longform_template"], rng, len(first))
    _decorate(style, text, rng, 0.0, spec.prompts.personal_context, "prose")
    return np.where(style.first, 2.5, 1.2)


#: prompt style -> builder (scenario field prompts.styles names these)
STYLES = {
    "chat": _chat_like("chat", "prose", 1.0),
    "code": _chat_like("code", "code", 1.4),
    "math": _chat_like("math", "prose", 0.9),
    "short": _short,
    "benchmark": _benchmark,
    "agent": _agent,
    "batch": _batch,
    "longform": _longform,
}
#: styles whose conversations always offer the account's tools
TOOL_STYLES = frozenset({"agent"})


def organic_content(spec: Persona, text: TextTable, turns: dict[str, TurnIndex]) -> ContentFn:
    def content(plan: Plan, rng: np.random.Generator) -> Content:
        n_conv, n_rows = len(plan.conv_account), len(plan.row_conv)
        names, conv_style = weighted_choice(rng, spec.prompts.styles, n_conv)
        pieces = np.zeros((n_rows, PIECES), dtype=np.int32)
        factor = np.ones(n_rows)
        row_style = conv_style[plan.row_conv]
        for s, name in enumerate(names):
            rows = np.flatnonzero(row_style == s)
            if not len(rows):
                continue
            style = _Style(rows, plan.row_conv[rows], plan.row_turn[rows] == 0,
                           np.zeros((len(rows), PIECES), dtype=np.int32))
            factor[rows] = STYLES[name](style, plan, spec, text, turns, rng)
            pieces[rows] = style.pieces
        acc = plan.accounts
        account = plan.conv_account
        tool_style = np.isin(np.array(names)[conv_style], list(TOOL_STYLES))
        offers = tool_style | (rng.random(n_conv) < spec.requests.tools.share)
        tools = np.where(offers, acc.tool_count[account], 0).astype(np.int64)
        system = np.where(tool_style | (rng.random(n_conv) < 0.92), acc.system_prompt[account], -1)
        context = spec.requests.context_tokens
        extra = (np.zeros(n_conv, dtype=np.int64) if context is None
                 else lognormal(rng, context.median, context.sigma, n_conv).astype(np.int64))
        return Content(pieces, system.astype(np.int32), tools, factor, extra)
    return content
