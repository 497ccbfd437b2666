"""A randomized family of campaign strategies, and the split that keeps some of them unseen.

A benchmark built from a handful of hand-written campaigns can be overfitted: tune the
detector until those campaigns fall, and it has learnt the scenarios, not the problem. Here a
campaign's strategy is drawn from declared knobs (``KNOBS``: infrastructure, payment, timing,
volume, account age, prompts, user agents, camouflage), each level a set of overrides of the
campaign template in ``scenarios/_strategies.yaml``, mapped onto the generator's own mechanisms
(scenario fields and tells). Every combination of levels is one strategy; a salted hash puts
each in the development set or in the held-out set, so a fresh salt is a fresh held-out draw.
The organic population around the campaign is randomized per draw as well (``jitter_personas``),
and the hard personas (``HARD_PERSONAS``) are always present.

This module knows nothing of the detector (the simulator never imports it) and reads no file
but the shipped template: the salt is the caller's (bench.strategies reads it from
``benchmarks/heldout.salt``).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from distillguard.simulate.scenario import Campaign, Scenario, ScenarioError, _resolve, merge, validate_scenario

#: the scenario template strategies are built on, and the campaign in it they override
TEMPLATE = "_strategies"
CAMPAIGN = "strategy"
#: share of all combinations that the salted hash puts in the held-out set
HELDOUT_SHARE = 0.3
SPLITS = ("dev", "heldout")
Split = Literal["dev", "heldout"]


@dataclass(frozen=True)
class Level:
    """One level of a knob: what it models, and the campaign overrides (scenario.Campaign
    fields, merged as a scenario file's ``base`` is: sections key by key, weight maps whole)."""

    name: str
    means: str
    campaign: dict[str, Any]


@dataclass(frozen=True)
class Knob:
    """One dimension of a strategy, with its levels."""

    name: str
    means: str
    levels: tuple[Level, ...]

    def level(self, name: str) -> Level:
        for level in self.levels:
            if level.name == name:
                return level
        raise ScenarioError(f"knob {self.name!r} has no level {name!r}; "
                            f"levels: {', '.join(lv.name for lv in self.levels)}")


def _daily(exchanges_per_day: float, conversations_per_session: float) -> dict[str, Any]:
    # the template's accounts live about 8 days (lifetime_days.median)
    return {"activity": {"exchanges_per_account": {"mean": exchanges_per_day * 8, "sigma": 0.5},
                         "conversations_per_session": conversations_per_session}}


_SDKS = {"openai_python": 1, "openai_python_async": 1, "openai_node": 1, "anthropic_python": 1, "anthropic_node": 1,
         "httpx": 1, "requests": 1, "aiohttp": 1, "node": 1, "curl": 1, "go": 1, "java": 1, "framework": 1}

#: the strategy family: knob -> levels, each level's overrides of the campaign template
KNOBS: tuple[Knob, ...] = (
    Knob("infrastructure", "where the campaign's requests come from", (
        Level("dedicated_datacenter", "the operator's own hosting: a few datacenter addresses per cell, one per account",
              {"network": {"modes": {"datacenter_proxy": 1.0}, "rotation": "per_account", "pool_size": 4}}),
        Level("residential_per_request", "a residential proxy network, a new home address per request",
              {"network": {"modes": {"residential_proxy": 1.0}, "rotation": "per_request"}}),
        Level("residential_per_session", "a residential proxy network, a new home address per session",
              {"network": {"modes": {"residential_proxy": 1.0}, "rotation": "per_session"}}),
        Level("mobile_per_request", "a mobile proxy network (carrier NAT exits), a new exit per request",
              {"network": {"modes": {"mobile_proxy": 1.0}, "rotation": "per_request"}}),
        Level("mobile_per_session", "a mobile proxy network (carrier NAT exits), a new exit per session",
              {"network": {"modes": {"mobile_proxy": 1.0}, "rotation": "per_session"}}),
        Level("mixed", "datacenter, residential and mobile exits mixed, rotated per session",
              {"network": {"modes": {"datacenter_proxy": 0.4, "residential_proxy": 0.4, "mobile_proxy": 0.2},
                           "rotation": "per_session", "pool_size": 8}}),
    )),
    Knob("payment", "how the accounts pay", (
        Level("shared_card", "every account of a cell pays with the cell's card",
              {"identity": {"payment_on_file": 1.0, "shared_payment": 1.0}}),
        Level("card_per_account", "a card of its own on every account",
              {"identity": {"payment_on_file": 1.0, "shared_payment": 0.0}}),
        Level("free_tier", "no payment method at all",
              {"identity": {"payment_on_file": 0.0, "shared_payment": 0.0}}),
    )),
    Knob("timing", "when the accounts send", (
        Level("around_the_clock", "all hours, every day, on the operators' clock; controllers start sessions in step",
              {"account_local_time": False, "activity": {"rhythm": {"profile": "flat", "weekend_factor": 1.0}},
               "tells": {"controller_synchrony": 0.35}}),
        Level("human_shifts", "office hours of the operators' one time zone, quiet weekends",
              {"account_local_time": False, "activity": {"rhythm": {"profile": "office", "weekend_factor": 0.3}},
               "tells": {"controller_synchrony": 0.2}}),
        Level("organic_profile", "each account keeps its claimed region's evening rhythm, as consumers do; "
                                 "no controller clock",
              {"account_local_time": True, "activity": {"rhythm": {"profile": "evening", "weekend_factor": 1.1}},
               "tells": {"controller_synchrony": 0.0}}),
    )),
    Knob("volume", "exchanges per account per day of use", (
        Level("low", "about 10 a day, a casual user's pace", _daily(10, 3)),
        Level("medium", "about 40 a day, a developer's pace", _daily(40, 8)),
        Level("high", "about 150 a day, a harvesting script's pace", _daily(150, 30)),
    )),
    Knob("account_age", "when and how the accounts were created", (
        Level("burst_created", "signed up in a few tight waves days before use",
              {"creation": {"waves": 3, "wave_hours": 4, "age_days": 0.0}, "tells": {"creation_burst": 0.95}}),
        Level("aged", "signed up in waves about three months before use, then left to age",
              {"creation": {"waves": 3, "wave_hours": 12, "age_days": 90.0}, "tells": {"creation_burst": 0.95}}),
        Level("bought", "bought from their former owners: created one by one, months to years before",
              {"creation": {"outside_wave_age_days": {"median": 400, "sigma": 0.8}},
               "tells": {"creation_burst": 0.0},
               "identity": {"email_domains": {"@free": 0.6, "@regional": 0.3, "@custom": 0.1}}}),
    )),
    Knob("prompts", "how the harvest is asked", (
        Level("templates", "campaign-wide scaffolds and system prompts around queued tasks",
              {"prompts": {"paraphrase": False, "disguise": 0.0, "variation": 0.3, "focus": 0.6,
                           "cot_elicitation": 0.6}, "tells": {"shared_scaffolding": 0.8}}),
        Level("paraphrases", "every account rewrites the scaffold in words of its own",
              {"prompts": {"paraphrase": True, "disguise": 0.0, "variation": 0.7, "focus": 0.3,
                           "cot_elicitation": 0.5}, "tells": {"shared_scaffolding": 0.3}}),
        Level("organic_hidden_target", "asked as organic users ask, the target capability hidden in the tasks",
              {"prompts": {"paraphrase": False, "disguise": 0.9, "variation": 0.7, "focus": 0.0,
                           "cot_elicitation": 0.2}, "tells": {"shared_scaffolding": 0.0}}),
    )),
    Knob("user_agents", "the client software the accounts claim", (
        Level("one", "one string on every account",
              {"client": {"user_agents": {"httpx": 1.0}, "one_string": True, "other_agent_share": 0.0}}),
        Level("many", "spread evenly over every SDK family and version",
              {"client": {"user_agents": dict(_SDKS), "one_string": False}}),
        Level("population", "the consumer population's own mix of apps, browsers and SDKs",
              {"client": {"user_agents": {"browser": 0.25, "mobile_app": 0.2, "desktop_app": 0.2,
                                          "openai_python": 0.1, "httpx": 0.05, "requests": 0.05, "node": 0.05,
                                          "framework": 0.05, "anthropic_python": 0.05},
                          "one_string": False, "other_agent_share": 0.03}}),
    )),
    Knob("camouflage", "benign behaviour mixed in", (
        Level("none", "nothing but the harvest", {}),
        Level("benign_accounts", "a third of the accounts harvest nothing and behave like casual users",
              {"decoys": {"share": 0.3, "customers": "casual"}}),
        Level("benign_traffic", "every account also relays genuine casual users' requests (30% of its traffic)",
              {"hydra": {"relay_share": 0.3, "customers": "casual"}}),
    )),
)
KNOB_INDEX = {knob.name: knob for knob in KNOBS}

#: personas that make detection hard, present in every draw: shared campus NAT, enterprise
#: batch jobs from cloud addresses, benchmark runners, coding agents, resellers
HARD_PERSONAS: dict[str, str] = {
    "university": "campus NAT: hundreds of students behind a few addresses, onboarded together",
    "enterprise_batch": "nightly batch jobs from cloud addresses, one card and many keys per organisation",
    "benchmark_researcher": "public benchmarks replayed in bursts from cloud and home",
    "coding_agent": "long tool loops of coding agents, high volume per account",
    "reseller": "a few accounts relaying many unrelated end users from a cloud backend",
}


@dataclass(frozen=True, order=True)
class Strategy:
    """One combination of knob levels, in KNOBS order: ((knob, level), ...)."""

    levels: tuple[tuple[str, str], ...]

    @property
    def key(self) -> str:
        """Stable text of the combination: ``knob=level;knob=level;...``."""
        return ";".join(f"{k}={v}" for k, v in self.levels)

    @property
    def name(self) -> str:
        """A short readable name: the levels joined by ``/`` in KNOBS order."""
        return "/".join(v for _, v in self.levels)

    def level(self, knob: str) -> str:
        return dict(self.levels)[knob]

    @classmethod
    def of(cls, **levels: str) -> Strategy:
        """A strategy from keyword levels; every knob must be given, each with a declared level."""
        missing = [k.name for k in KNOBS if k.name not in levels]
        unknown = sorted(set(levels) - set(KNOB_INDEX))
        if missing or unknown:
            raise ScenarioError(f"a strategy needs every knob; missing {missing}, unknown {unknown}")
        return cls(tuple((k.name, k.level(levels[k.name]).name) for k in KNOBS))

    @classmethod
    def parse(cls, key: str) -> Strategy:
        """The inverse of ``key``."""
        return cls.of(**dict(part.split("=", 1) for part in key.split(";") if part))


def all_strategies() -> list[Strategy]:
    """Every combination of knob levels, in a fixed order."""
    return [Strategy(tuple(zip((k.name for k in KNOBS), combo)))
            for combo in itertools.product(*[[lv.name for lv in k.levels] for k in KNOBS])]


def split_of(strategy: Strategy, salt: str) -> Split:
    """``heldout`` for about HELDOUT_SHARE of the combinations, ``dev`` for the rest: a pure
    function of the salt and the combination, so a new salt redraws the held-out set."""
    digest = hashlib.sha256(f"{salt}\n{strategy.key}".encode()).digest()
    return "heldout" if int.from_bytes(digest[:8], "big") / 2**64 < HELDOUT_SHARE else "dev"


def draw_strategies(seed: int, n: int, split: Split, *, salt: str) -> list[Strategy]:
    """``n`` distinct strategies of one split, chosen deterministically from ``seed``.

    The draw covers levels before it repeats them, and then spreads the repeats: each pick is,
    among a seeded shuffle of the split, the first combination with the most knob levels not
    drawn yet and, among those, the fewest earlier draws of its levels. So any ``n`` at least the
    largest knob's level count reaches every level the split holds, and per-level figures rest on
    similar numbers of strategies.

    Raises:
        ScenarioError: an unknown split, or more strategies asked for than the split holds.
    """
    if split not in SPLITS:
        raise ScenarioError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if not salt:
        raise ScenarioError("the split needs a non-empty salt")
    pool = [s for s in all_strategies() if split_of(s, salt) == split]
    if n < 1 or n > len(pool):
        raise ScenarioError(f"asked for {n} {split} strategies; the split holds {len(pool)}")
    order = np.random.default_rng([seed, 0x5EED]).permutation(len(pool))
    pool = [pool[i] for i in order]
    drawn: dict[tuple[str, str], int] = {}
    chosen: list[Strategy] = []
    taken: set[int] = set()
    for _ in range(n):
        best, best_score = -1, None
        for i, strategy in enumerate(pool):
            if i in taken:
                continue
            counts = [drawn.get(pair, 0) for pair in strategy.levels]
            score = (-sum(c == 0 for c in counts), sum(counts))
            if best_score is None or score < best_score:
                best, best_score = i, score
        taken.add(best)
        chosen.append(pool[best])
        for pair in pool[best].levels:
            drawn[pair] = drawn.get(pair, 0) + 1
    return chosen


# --- scenarios ----------------------------------------------------------------------------------

def _jittered(rng: np.random.Generator, value: float, sigma: float) -> float:
    return float(value * np.exp(sigma * rng.standard_normal()))


def jitter_personas(organic: dict[str, dict], rng: np.random.Generator) -> dict[str, dict]:
    """The template's personas with their size and behaviour randomized (a copy): accounts,
    volume, session shape, group size and NAT addresses, card sharing and payment on file vary
    by draw, so no detector threshold can settle on one organic population. Every persona keeps
    at least one account (at least one group's worth where it is grouped)."""
    out = copy.deepcopy(organic)
    for spec in out.values():
        group = spec.get("group")
        minimum = 1
        if group is not None:
            group["accounts_per_group"] = max(1.0, _jittered(rng, group["accounts_per_group"], 0.2))
            group["nat_addresses"] = max(1, int(round(_jittered(rng, group.get("nat_addresses", 4), 0.3))))
            minimum = int(np.ceil(group["accounts_per_group"]))
        spec["accounts"] = max(minimum, int(round(_jittered(rng, spec["accounts"], 0.25))))
        activity = spec["activity"]
        volume = activity["exchanges_per_account"]
        activity["exchanges_per_account"] = {**volume, "mean": _jittered(rng, volume["mean"], 0.3)}
        if "conversations_per_session" in activity:
            activity["conversations_per_session"] = max(1.0, _jittered(rng, activity["conversations_per_session"], 0.2))
        identity = spec["identity"]
        for field in ("payment_on_file", "shared_payment"):
            if field in identity:
                identity[field] = float(np.clip(identity[field] + rng.uniform(-0.1, 0.1), 0.0, 1.0))
    return out


def strategy_campaign(strategy: Strategy, template: dict) -> dict:
    """The campaign template with every knob level's overrides applied, in KNOBS order."""
    campaign = copy.deepcopy(template)
    for knob, level in strategy.levels:
        campaign = merge(Campaign, campaign, copy.deepcopy(KNOB_INDEX[knob].level(level).campaign))
    return campaign


def scaled_personas(organic: dict[str, dict], factor: float) -> dict[str, dict]:
    """The personas with ``factor`` times their accounts (a copy; groups keep their size, so a
    larger population has more offices and campuses, not bigger ones)."""
    out = copy.deepcopy(organic)
    if factor != 1.0:
        for spec in out.values():
            spec["accounts"] = max(1, int(round(spec["accounts"] * factor)))
    return out


def strategy_scenario(strategy: Strategy, seed: int, organic_scale: float = 1.0) -> Scenario:
    """The scenario of one strategy at one seed: the template's organic personas jittered (from
    ``seed`` and the strategy), each with ``organic_scale`` times its accounts, and its campaign
    set to the strategy (whatever ``organic_scale``). The scenario's ``seed`` is ``seed``; its
    name says which strategy it is (and the organic scale, when not 1)."""
    raw, label = _resolve(TEMPLATE, None, ())
    digest = hashlib.sha256(strategy.key.encode()).digest()
    rng = np.random.default_rng([seed, int.from_bytes(digest[:8], "big")])
    raw = copy.deepcopy(raw)
    raw["organic"] = scaled_personas(jitter_personas(raw["organic"], rng), organic_scale)
    missing = sorted(set(HARD_PERSONAS) - set(raw["organic"]))
    if missing:  # a template edit, not a user's mistake
        raise AssertionError(f"the strategy template lost hard personas {missing}")
    raw["campaigns"] = {CAMPAIGN: strategy_campaign(strategy, raw["campaigns"][CAMPAIGN])}
    raw["seed"] = int(seed)
    raw["name"] = f"strategy-{digest.hex()[:10]}" + (f"-organic{organic_scale:g}" if organic_scale != 1.0 else "")
    raw["description"] = f"strategy {strategy.key}"
    return validate_scenario(raw, f"{label} with strategy {strategy.key}")


def organic_scenario(seed: int, organic_scale: float = 1.0) -> Scenario:
    """The template's organic population alone, jittered from ``seed``, each persona with
    ``organic_scale`` times its accounts: the reference a detector may be fitted on (never a
    scenario it is scored on)."""
    raw, label = _resolve(TEMPLATE, None, ())
    raw = copy.deepcopy(raw)
    raw["organic"] = scaled_personas(jitter_personas(raw["organic"], np.random.default_rng([seed, 0x0E6A])),
                                     organic_scale)
    raw["campaigns"] = {}
    raw["seed"] = int(seed)
    raw["name"] = "strategies-organic" + (f"{organic_scale:g}" if organic_scale != 1.0 else "")
    return validate_scenario(raw, f"{label} (organic only)")
