"""Distillation campaigns: fraudulent accounts in cells, sign-up waves, and harvesting prompts.

A campaign's accounts are organised in cells (the unit that shares a payment card, a proxy
pool, a controller clock and an e-mail domain), created in waves, used for a limited lifetime
and then dropped. Prompts are capability scaffolds x corpus seeds x constraints, with optional
chain-of-thought elicitation. Each coordination tell (``tells`` in the scenario) maps to one
mechanism here or in the shared generator, so its strength can be turned down to model an
adaptive attacker. A ``hydra`` campaign also relays genuine customers through its accounts.
"""

from __future__ import annotations

from math import gcd, prod

import numpy as np

from distillguard.simulate.corpora import PIECES, TextTable
from distillguard.simulate.keys import mix, unit
from distillguard.simulate.organic import (
    DAY_US, HOUR_US, MAX_ACCOUNT_AGE_DAYS, OrganicPopulation, TurnIndex, region_offsets, micros, organic_content)
from distillguard.simulate.population import (
    NEVER,
    Accounts,
    Behaviour,
    Catalogs,
    Content,
    ContentFn,
    Plan,
    Rows,
    RunContext,
    below_int,
    common_attributes,
    generate_rows,
    lognormal,
    mean_lognormal,
    scaled_count,
    weighted_by_key,
    weighted_choice,
)
from distillguard.simulate.scenario import Campaign, Scenario, ScenarioError
from distillguard.simulate.text import (
    CAPABILITY_CONSTRAINTS,
    COT_ELICITATION,
    PARAPHRASE_AXES,
    SCAFFOLD_AXES,
    SYSTEM_PROMPTS,
)

#: capability -> the scenario corpus its seed tasks come from
CAPABILITY_CORPUS = {
    "software_engineering": "code",
    "agentic_tool_use": "tool_use",
    "reasoning": "math",
    "data_analysis": "code",
    "roleplay": "roleplay",
    "grading": "math",
}
#: capability -> typical response length relative to the campaign's output_tokens median
CAPABILITY_OUTPUT = {
    "software_engineering": 1.5,
    "agentic_tool_use": 1.2,
    "reasoning": 1.0,
    "data_analysis": 1.3,
    "roleplay": 1.4,
    "grading": 1.3,
}
CAPABILITY_INDEX = {cap: i for i, cap in enumerate(CAPABILITY_CORPUS)}
#: capabilities whose conversations always offer tools
TOOL_CAPABILITIES = frozenset({"agentic_tool_use"})
COT_OUTPUT_FACTOR = 2.2
SHARED_HEADS_PER_CAPABILITY = 2


def scaffold_system_prompt(key: int) -> str:
    """A campaign's own scaffold system prompt: one sentence from each of text.SCAFFOLD_AXES."""
    sentences = []
    for axis in SCAFFOLD_AXES:
        key, digit = divmod(key, len(axis))
        sentences.append(axis[digit])
    return " ".join(sentences)


def paraphrase_capacity() -> int:
    return prod(len(axis) for axis in PARAPHRASE_AXES)


def paraphrase_heads(n: int, campaign_key: int, label: str) -> list[str]:
    """``n`` distinct scaffold rewrites, one per account (an affine bijection into the axes)."""
    capacity = paraphrase_capacity()
    if n > capacity:
        raise ScenarioError(f"{label}: prompts.paraphrase supports at most {capacity} accounts, got {n}")
    stride = 7_919
    while gcd(stride, capacity) != 1:
        stride += 1
    offset = int(campaign_key % capacity)
    heads = []
    for j in range(n):
        code = (stride * j + offset) % capacity
        parts = []
        for axis in PARAPHRASE_AXES:
            code, digit = divmod(code, len(axis))
            parts.append(axis[digit])
        opener, verb, obj, role, reasoning, sep = parts
        verb = verb if opener else verb[0].upper() + verb[1:]
        heads.append(f"{opener}{verb} {obj} {role}. {reasoning}{sep}")
    return heads


class CampaignPopulation:
    """The accounts of one campaign and how they behave."""

    def __init__(self, name: str, spec: Campaign, scale: float, customers: OrganicPopulation | None,
                 decoy_customers: OrganicPopulation | None = None) -> None:
        self.name = name
        self.campaign_id = name
        self.persona: str | None = None
        self.spec = spec
        self.n_accounts = scaled_count(spec.accounts, scale)
        self.role = "hydra_relay" if spec.hydra is not None else "attacker"
        self.customers = customers
        self.n_groups = max(1, int(round(self.n_accounts / spec.cells.size))) if self.n_accounts else 0
        self.group_names = [f"{name}:cell-{i:04d}" for i in range(self.n_groups)]
        self.relay_accounts: Accounts | None = None
        self.scaffold_system: dict[str, int] = {}
        self.decoy_customers = decoy_customers
        self.decoy: np.ndarray | None = None  # bool per account: a decoy (spec.decoys)
        self.decoy_accounts: Accounts | None = None
        self._decoy_content: ContentFn | None = None

    @property
    def relay_factor(self) -> float:
        hydra = self.spec.hydra
        return 0.0 if hydra is None else hydra.relay_share / max(1e-9, 1.0 - hydra.relay_share)

    # --- accounts -----------------------------------------------------------------------------

    def build_accounts(self, scenario: Scenario, first_ordinal: int, first_group: int,
                       catalogs: Catalogs, salt: int, rng: np.random.Generator) -> Accounts:
        spec, n = self.spec, self.n_accounts
        from distillguard.simulate import network
        from distillguard.simulate.identity import custom_domains

        ordinal = first_ordinal + np.arange(n, dtype=np.int64)
        keys = mix(salt, 1, ordinal)
        rank = np.arange(n, dtype=np.int64)
        cell = (rank * max(self.n_groups, 1)) // max(n, 1)
        group = first_group + cell
        group_key = mix(salt, 2, group)
        cell_domains = custom_domains(mix(salt, 2, first_group + np.arange(self.n_groups)))
        group_domain: list[str | None] = [cell_domains[c] for c in cell]
        region_names = list(network.REGIONS)
        pick_names, pick = weighted_by_key(mix(keys, 402), spec.regions)
        region = np.array([region_names.index(r) for r in pick_names], dtype=np.int32)[pick]

        created, start, end = self._lifetimes(n, rank, rng)
        exchanges = np.maximum(1, np.round(mean_lognormal(
            rng, spec.activity.exchanges_per_account.mean, spec.activity.exchanges_per_account.sigma, n)))
        conversations = exchanges / spec.activity.turns_per_conversation
        attrs = common_attributes(keys, group_key, np.ones(n, dtype=bool), group_domain, region, spec.client,
                                  spec.identity, spec.requests, spec.network, catalogs, salt, rng)
        attrs["tool_count"] = np.maximum(attrs["tool_count"], 1)
        capabilities = list(spec.prompts.capabilities)
        _, primary = weighted_by_key(mix(keys, 503), spec.prompts.capabilities)
        adopt_at, adopt_share = self._pivot(scenario, group_key, n)
        for cap in capabilities:
            if spec.prompts.scaffold_system_prompt is not None:
                scaffold = SYSTEM_PROMPTS[spec.prompts.scaffold_system_prompt]
            else:
                scaffold = scaffold_system_prompt(int(mix(salt, 561, sum(map(ord, self.name)), CAPABILITY_INDEX[cap])))
            self.scaffold_system[cap] = catalogs.system_prompts.add(scaffold)
        accounts = Accounts(
            ordinal=ordinal, key=keys, group=group, group_key=group_key, home_key=keys,
            site=np.full(n, -1, np.int32),
            region=region, utc_offset=(region_offsets(region_names, region, keys) if spec.account_local_time
                                       else np.full(n, spec.operator_utc_offset_minutes, np.int32)),
            nat_addresses=np.full(n, spec.network.pool_size, np.int32), via_cloud=np.zeros(n, bool),
            active_start=start, active_end=end, created_at=created, exchanges=exchanges.astype(np.int64),
            adopt_at=adopt_at, adopt_share=adopt_share, flavour=primary.astype(np.int32), local_rank=rank,
            queue_offset=(np.cumsum(conversations) - conversations).astype(np.int64), **attrs)
        if spec.hydra is not None and self.customers is not None:
            self.relay_accounts = self._relay_accounts(accounts, scenario, group_domain, catalogs, salt, rng)
        if spec.decoys is not None and self.decoy_customers is not None:
            self.decoy = unit(mix(keys, 571)) < spec.decoys.share
            self.decoy_accounts = self._decoy_accounts(accounts, scenario, group_domain, catalogs, salt, rng)
        return accounts

    def _decoy_accounts(self, own: Accounts, scenario: Scenario, group_domain, catalogs: Catalogs,
                        salt: int, rng: np.random.Generator) -> Accounts:
        """The same accounts as the persona the decoys copy would use them: its volume, models,
        token budgets, system prompts and adoption, on the campaign's identity, client and network."""
        persona = self.decoy_customers.spec
        n = len(own)
        attrs = common_attributes(mix(own.key, 572), own.group_key, np.zeros(n, bool), group_domain, own.region,
                                  persona.client, persona.identity, persona.requests, persona.network,
                                  catalogs, salt, rng)
        decoys = Accounts(**{name: getattr(own, name) for name in own.__dataclass_fields__})
        volume = persona.activity.exchanges_per_account
        decoys.exchanges = np.maximum(1, np.round(mean_lognormal(rng, volume.mean, volume.sigma, n))).astype(np.int64)
        for name in ("primary_model", "max_tokens", "system_prompt", "tool_count"):
            setattr(decoys, name, attrs[name])
        decoys.adopt_at, decoys.adopt_share = self.decoy_customers._adoption(scenario, n, rng)
        decoys.flavour = below_int(mix(own.key, 573), 1 << 16).astype(np.int32)
        return decoys

    def _lifetimes(self, n: int, rank: np.ndarray, rng: np.random.Generator):
        spec = self.spec
        w_start, w_end = micros(spec.window.start), micros(spec.window.end)
        lead = lognormal(rng, spec.creation.lead_days.median, spec.creation.lead_days.sigma, n) * DAY_US
        lifetime = lognormal(rng, spec.lifetime_days.median, spec.lifetime_days.sigma, n) * DAY_US
        # waves spread so that the accounts they create are in use throughout the window
        first_wave = w_start - spec.creation.lead_days.median * DAY_US
        last_wave = max(first_wave, w_end - 0.5 * spec.lifetime_days.median * DAY_US - DAY_US)
        waves = np.linspace(first_wave, last_wave, spec.creation.waves)
        wave = (rank * spec.creation.waves) // max(n, 1)
        in_wave = rng.random(n) < spec.tells.creation_burst
        burst = waves[wave] + np.abs(rng.normal(0, 0.5, n)) * spec.creation.wave_hours * HOUR_US
        spread = w_start - 7 * DAY_US + rng.random(n) * (w_end - w_start + 5 * DAY_US)
        # `signed` is when the account would start its lead time; aged waves were signed up
        # age_days earlier, and bought accounts long before by their former owners
        signed = np.where(in_wave, burst, spread).astype(np.int64)
        first_use = np.clip(signed + lead.astype(np.int64), w_start, w_end - HOUR_US)
        aged = (burst - spec.creation.age_days * DAY_US).astype(np.int64)
        created = np.where(in_wave, aged, signed)
        bought = spec.creation.outside_wave_age_days
        if bought is not None:
            age = np.minimum(lognormal(rng, bought.median, bought.sigma, n), MAX_ACCOUNT_AGE_DAYS) * DAY_US
            created = np.where(in_wave, created, first_use - age.astype(np.int64))
        created = np.minimum(created, first_use)
        end = np.minimum(first_use + lifetime.astype(np.int64), w_end)
        return created, first_use.astype(np.int64), np.maximum(end, first_use + HOUR_US)

    def _pivot(self, scenario: Scenario, group_key: np.ndarray, n: int):
        releases = scenario.releases()
        pivot = self.spec.tells.model_pivot
        adopt_at = np.full((n, len(releases)), NEVER, dtype=np.int64)
        share = np.zeros((n, len(releases)))
        for r, (_model, released) in enumerate(releases):
            # the controller of each cell switches within `within_hours` of the release
            lag = unit(mix(group_key, 511, r)) * pivot.within_hours * HOUR_US
            adopt_at[:, r] = micros(released) + lag.astype(np.int64)
            share[:, r] = pivot.share
        return adopt_at, share

    def _relay_accounts(self, own: Accounts, scenario: Scenario, group_domain, catalogs: Catalogs,
                        salt: int, rng: np.random.Generator) -> Accounts:
        """The same accounts, carrying relayed customers: customers' requests, hydra's network."""
        persona = self.customers.spec
        n = len(own)
        customer_keys = mix(own.key, 521)
        attrs = common_attributes(customer_keys, own.group_key, np.zeros(n, bool), group_domain, own.region,
                                  persona.client, persona.identity, persona.requests, persona.network,
                                  catalogs, salt, rng)
        adopt_at, adopt_share = self.customers._adoption(scenario, n, rng)
        relayed = Accounts(**{name: getattr(own, name) for name in own.__dataclass_fields__})
        relayed.exchanges = np.maximum(1, np.round(own.exchanges * self.relay_factor)).astype(np.int64)
        for name in ("primary_model", "max_tokens", "system_prompt", "tool_count"):
            setattr(relayed, name, attrs[name])
        relayed.adopt_at, relayed.adopt_share = adopt_at, adopt_share
        relayed.flavour = np.zeros(n, dtype=np.int32)
        return relayed

    # --- behaviour, content and rows ----------------------------------------------------------

    def behaviour(self, scenario: Scenario) -> Behaviour:
        spec = self.spec
        synchrony = spec.activity.synchrony.model_copy(update={"share": spec.tells.controller_synchrony})
        activity = spec.activity.model_copy(update={"synchrony": synchrony})
        return Behaviour(activity=activity, network=spec.network, requests=spec.requests,
                         window_end_us=micros(spec.window.end), client_alt_share=spec.client.other_agent_share)

    def content(self, text: TextTable, turns: dict[str, TurnIndex], salt: int) -> ContentFn:
        if self.decoy_customers is not None:
            self._decoy_content = organic_content(self.decoy_customers.spec, text, turns)
        return campaign_content(self, text, int(mix(salt, 531, sum(map(ord, self.name)))))

    def generate(self, acc: Accounts, start: int, stop: int, ctx: RunContext, scenario: Scenario,
                 content: ContentFn, relay_content: ContentFn | None, rng: np.random.Generator) -> Rows:
        rows = generate_rows(acc.slice(start, stop), self.behaviour(scenario), content, ctx, rng)
        if self.decoy is not None and self._decoy_content is not None:
            # decoys send only the persona's kind of traffic, the others only the harvest
            decoy = self.decoy[start:stop]
            persona = self.decoy_customers.spec
            behaviour = Behaviour(activity=persona.activity, network=self.spec.network, requests=persona.requests,
                                  window_end_us=micros(self.spec.window.end),
                                  client_alt_share=self.spec.client.other_agent_share)
            camouflage = generate_rows(self.decoy_accounts.slice(start, stop), behaviour, self._decoy_content,
                                       ctx, rng)
            rows = Rows.concat([rows.take(np.flatnonzero(~decoy[rows.account])),
                                camouflage.take(np.flatnonzero(decoy[camouflage.account]))])
        if self.relay_accounts is None or relay_content is None:
            return rows
        customers = self.customers.spec
        behaviour = Behaviour(activity=customers.activity, network=self.spec.network,
                              requests=customers.requests, window_end_us=micros(self.spec.window.end),
                              client_alt_share=self.spec.client.other_agent_share)
        relayed = generate_rows(self.relay_accounts.slice(start, stop), behaviour, relay_content, ctx, rng,
                                relayed=True)
        return Rows.concat([rows, relayed])


def campaign_content(population: CampaignPopulation, text: TextTable, campaign_key: int) -> ContentFn:
    spec = population.spec
    tells, prompts = spec.tells, spec.prompts
    capabilities = list(prompts.capabilities)
    n_cot = len(COT_ELICITATION)
    own_heads = text[f"shared_head:{population.name}"]
    shared_heads = {cap: own_heads.index(CAPABILITY_INDEX[cap] * SHARED_HEADS_PER_CAPABILITY
                                         + np.arange(SHARED_HEADS_PER_CAPABILITY))
                    for cap in capabilities}
    para = text[f"para:{population.name}"] if prompts.paraphrase else None
    domains, requirements = text["task_domain"], text["task_requirement"]

    def content(plan: Plan, rng: np.random.Generator) -> Content:
        acc = plan.accounts
        account = plan.conv_account
        n_conv = len(account)
        _, drawn = weighted_choice(rng, prompts.capabilities, n_conv)
        capability = np.where(rng.random(n_conv) < prompts.focus, acc.flavour[account], drawn)
        head = np.zeros(n_conv, dtype=np.int64)
        seed = np.zeros(n_conv, dtype=np.int64)
        tail = np.zeros(n_conv, dtype=np.int64)
        domain = np.zeros(n_conv, dtype=np.int64)
        requirement = np.zeros(n_conv, dtype=np.int64)
        factor = np.ones(n_conv)
        tools = np.zeros(n_conv, dtype=np.int64)
        shared = rng.random(n_conv) < tells.shared_scaffolding
        system = np.where(shared, 0, acc.system_prompt[account]).astype(np.int32)
        for c, cap in enumerate(capabilities):
            convs = np.flatnonzero(capability == c)
            if not len(convs):
                continue
            seeds = text[f"corpus:{CAPABILITY_CORPUS[cap]}"]
            n_constraints = len(CAPABILITY_CONSTRAINTS[cap])
            space = seeds.count * n_constraints
            multiplier = 2_654_435_761 % space or 1
            while gcd(multiplier, space) != 1:
                multiplier += 1
            # the shared work queue hands each account its own stretch of the task space
            queue = acc.queue_offset[account[convs]] + plan.conv_rank[convs]
            queued = (multiplier * queue + campaign_key % space) % space
            independent = rng.integers(0, space, len(convs))
            from_queue = rng.random(len(convs)) < tells.coverage_complementarity
            task = np.where(from_queue, queued, independent)
            # variation multiplies the space: queued tasks take it from their queue position
            varied = rng.random(len(convs)) < prompts.variation
            lap = np.where(from_queue, queue // space, rng.integers(0, 1 << 30, len(convs)))
            domain[convs] = np.where(varied, domains.index(below_int(mix(lap, task, 551), domains.count)), 0)
            requirement[convs] = np.where(
                varied, requirements.index(below_int(mix(lap, task, 552), requirements.count)), 0)
            asks_reasoning = rng.random(len(convs)) < prompts.cot_elicitation
            cot = np.where(asks_reasoning, rng.integers(1, n_cot + 1, len(convs)), 0)
            seed[convs] = seeds.index(task // n_constraints)
            tail[convs] = text[f"cap_tail:{cap}"].index((task % n_constraints) * (1 + n_cot) + cot)
            heads = text[f"cap_head:{cap}"]
            own = np.where(rng.random(len(convs)) < 0.25, 0, heads.index(rng.integers(0, heads.count, len(convs))))
            pick = shared_heads[cap][rng.integers(0, SHARED_HEADS_PER_CAPABILITY, len(convs))]
            head[convs] = np.where(shared[convs], pick, own)
            factor[convs] = CAPABILITY_OUTPUT[cap] * np.where(cot > 0, COT_OUTPUT_FACTOR, 1.0)
            offers = (cap in TOOL_CAPABILITIES) | (rng.random(len(convs)) < spec.requests.tools.share)
            tools[convs] = np.where(offers, acc.tool_count[account[convs]], 0)
            system[convs] = np.where(shared[convs], population.scaffold_system[cap], system[convs])
        if para is not None:
            head = para.index(acc.local_rank[account])

        row_conv = plan.row_conv
        first = plan.row_turn == 0
        pieces = np.zeros((len(row_conv), PIECES), dtype=np.int32)
        follow = text["attack_follow_up"]
        pieces[:, 0] = np.where(first | (para is not None), head[row_conv], 0)
        pieces[:, 1] = np.where(first, seed[row_conv], follow.index(rng.integers(0, follow.count, len(row_conv))))
        # follow-ups carry a new condition or context of their own now and then
        later_domain = np.where(rng.random(len(row_conv)) < 0.5,
                                domains.index(rng.integers(0, domains.count, len(row_conv))), 0)
        later_requirement = np.where(rng.random(len(row_conv)) < 0.7,
                                     requirements.index(rng.integers(0, requirements.count, len(row_conv))), 0)
        pieces[:, 2] = np.where(first, domain[row_conv], later_domain)
        pieces[:, 3] = np.where(first, requirement[row_conv], later_requirement)
        pieces[:, 4] = np.where(first, tail[row_conv], 0)
        row_factor = np.where(first, factor[row_conv], 1.2)
        if prompts.disguise > 0:
            _disguise(pieces, system, acc.system_prompt[account], plan, text, rng, prompts.disguise)
        context = spec.requests.context_tokens
        extra = (np.zeros(n_conv, dtype=np.int64) if context is None
                 else lognormal(rng, context.median, context.sigma, n_conv).astype(np.int64))
        return Content(pieces, system, tools, row_factor, extra)

    return content


def _disguise(pieces: np.ndarray, system: np.ndarray, own_system: np.ndarray, plan: Plan, text: TextTable,
              rng: np.random.Generator, share: float) -> None:
    """Rewrite a share of conversations (in place) as an organic user would ask the same task:
    the bare seed task, with the openers, pasted context and closings organic prompts carry
    (organic._decorate's pieces), the account's own system prompt, and no scaffold or constraint list."""
    n_conv = len(system)
    disguised = rng.random(n_conv) < share
    system[disguised] = own_system[disguised]
    rows = np.flatnonzero(disguised[plan.row_conv] & (plan.row_turn == 0))
    n = len(rows)
    if not n:
        return
    which = rng.random(n)
    opener = text["organic_prefix"]
    closing = text["organic_suffix"]
    pieces[rows, 0] = np.where(which < 0.45, opener.index(rng.integers(0, opener.count, n)), 0)
    pieces[rows, 4] = np.where(which > 0.6, closing.index(rng.integers(0, closing.count, n)), 0)
    pasted = rng.random(n) < 0.5
    first, nxt = text["ctx_prose_first"], text["ctx_prose_next"]
    pieces[rows, 2] = np.where(pasted, first.index(rng.integers(0, first.count, n)), 0)
    pieces[rows, 3] = np.where(pasted & (rng.random(n) < 0.6), nxt.index(rng.integers(0, nxt.count, n)), 0)


def relay_content(population: CampaignPopulation, text: TextTable, turns: dict[str, TurnIndex]) -> ContentFn | None:
    if population.customers is None:
        return None
    return organic_content(population.customers.spec, text, turns)
