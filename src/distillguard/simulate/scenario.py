"""Scenario files: YAML -> validated, typed, frozen objects.

A scenario describes a simulated period of API traffic: the models on offer (and releases),
the prompt corpora, organic personas, and distillation campaigns. Every behavioural knob the
generator uses is a field here, with its meaning in the field description; the shipped files in
``scenarios/`` show them in use.

Inheritance: ``base: NAME`` (a shipped scenario, or a path relative to the file) loads that
scenario first and applies this file on top; ``base: [A, B]`` merges A then B first. Sections
(objects, and maps of named personas or campaigns) are merged key by key; everything else,
including weight maps such as ``network.modes``, is replaced as a whole, so an override never
leaves stray weights behind.
"""

from __future__ import annotations

import types
import typing
from datetime import date, datetime, time, timezone
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from distillguard.errors import UserError

SCENARIO_DIR = "scenarios"

Share = Annotated[float, Field(ge=0.0, le=1.0)]
Weights = dict[str, Annotated[float, Field(ge=0.0)]]


class ScenarioError(UserError, ValueError):
    """A scenario cannot be used: unknown name, unreadable YAML, or an invalid field.

    The message names the file and the dotted path of the offending field.
    """


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_weights(value: dict[str, float], allowed: typing.Iterable[str] | None, what: str) -> dict[str, float]:
    if not value or sum(value.values()) <= 0:
        raise ValueError(f"{what} needs at least one positive weight")
    if allowed is not None:
        allowed = set(allowed)
        unknown = sorted(k for k in value if k not in allowed)
        if unknown:
            raise ValueError(f"unknown {what} {unknown}; expected some of {sorted(allowed)}")
    return value


def _utc(value: Any) -> Any:
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, time(0), tzinfo=timezone.utc)
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value


# --- small value types ------------------------------------------------------------------------

class MeanSpread(_Spec):
    """A positive per-account amount, log-normal around ``mean`` (``sigma``: spread of its log).

    Large ``sigma`` gives the heavy tail of real usage: most accounts small, a few huge.
    """

    mean: float = Field(gt=0)
    sigma: float = Field(0.0, ge=0, le=4)


class MedianSpread(_Spec):
    """A positive quantity, log-normal with the given ``median`` and ``sigma`` of its log."""

    median: float = Field(gt=0)
    sigma: float = Field(0.0, ge=0, le=4)


class Window(_Spec):
    """A UTC time interval, ``start`` inclusive, ``end`` exclusive."""

    start: datetime
    end: datetime

    @field_validator("start", "end", mode="before")
    @classmethod
    def _date_as_datetime(cls, value: Any) -> Any:
        return _utc(value)

    @field_validator("start", "end")
    @classmethod
    def _as_utc(cls, value: datetime) -> datetime:
        return _utc(value)

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


# --- shared behaviour sections ----------------------------------------------------------------

RHYTHM_PROFILES = ("office", "evening", "student", "flat", "night_owl", "nightly_batch", "global_users")


class Rhythm(_Spec):
    """When in the (local) day and week sessions start."""

    profile: Literal[RHYTHM_PROFILES] = Field(  # type: ignore[valid-type]
        "office", description="24-hour activity shape (timing.PROFILES)")
    weekend_factor: float = Field(0.6, ge=0, description="weekend intensity relative to weekdays")


class Synchrony(_Spec):
    """Sessions that start on a group-wide clock tick and run at the group's cadence."""

    share: Share = Field(0.0, description="share of sessions aligned to the group clock")
    tick_minutes: float = Field(240, gt=0, description="spacing of group clock ticks")
    jitter_ms: float = Field(500, ge=0, description="per-request deviation from the group cadence")


class Activity(_Spec):
    """How much an account sends, and when: sessions of conversations of turns."""

    exchanges_per_account: MeanSpread = Field(description="exchanges over the account's active time")
    turns_per_conversation: float = Field(1.5, ge=1, description="mean user turns per conversation (geometric)")
    max_turns: int = Field(60, ge=1)
    conversations_per_session: float = Field(2.0, ge=1, description="mean conversations per session")
    turn_gap_seconds: MedianSpread = Field(
        MedianSpread(median=45, sigma=0.9), description="reading/typing time after a response")
    conversation_gap_seconds: MedianSpread = Field(
        MedianSpread(median=120, sigma=1.0), description="pause between conversations in a session")
    concurrency: float = Field(1.0, ge=1, description="parallel workers: >1 overlaps requests")
    rhythm: Rhythm = Rhythm()
    synchrony: Synchrony = Synchrony()
    churn: Share = Field(0.0, description="share of accounts that stop at a random point of the period")


NETWORK_MODES = ("home", "mobile", "campus", "office", "cloud", "vpn", "privacy_relay",
                 "datacenter_proxy", "residential_proxy", "mobile_proxy")
DATACENTER_SOURCES = ("cloud", "hosting", "hosting_unlisted", "vpn")


class Network(_Spec):
    """Where an account's sessions come from (network.py has the address pools)."""

    modes: Weights = Field(description=f"share of sessions per access mode: {NETWORK_MODES}")
    ipv6_share: Share = Field(0.0, description="share of accounts on IPv6 where their network offers it")
    home_lease_days: MedianSpread = Field(
        MedianSpread(median=12, sigma=0.8), description="how long a home connection keeps its IPv4 address")
    datacenter_sources: Weights = Field(
        {"hosting": 0.5, "cloud": 0.3, "hosting_unlisted": 0.2},
        description=f"where cloud and datacenter-proxy addresses come from: {DATACENTER_SOURCES}")
    pool_size: int = Field(8, ge=1, description="egress addresses per organisation (cloud) or cell (datacenter proxy)")
    rotation: Literal["per_request", "per_session", "per_account"] = Field(
        "per_session", description="how often a proxy address changes")
    proxy_regions: Weights | None = Field(None, description="regions of residential-proxy exits (default: all)")
    mobile_cgnat_addresses: int = Field(
        3000, ge=1, description="public carrier-NAT addresses per region that mobile users share")

    @field_validator("modes")
    @classmethod
    def _modes(cls, v: dict[str, float]) -> dict[str, float]:
        return _check_weights(v, NETWORK_MODES, "network mode")

    @field_validator("datacenter_sources")
    @classmethod
    def _sources(cls, v: dict[str, float]) -> dict[str, float]:
        return _check_weights(v, DATACENTER_SOURCES, "datacenter source")

    @field_validator("proxy_regions")
    @classmethod
    def _regions(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        from distillguard.simulate.network import REGIONS

        return None if v is None else _check_weights(v, REGIONS, "region")


class Client(_Spec):
    """Which software sends the requests."""

    user_agents: Weights = Field(description="user-agent families (clients.USER_AGENT_FAMILIES)")
    other_agent_share: Share = Field(0.03, description="share of requests from a second client of the account")
    one_string: bool = Field(
        False, description="every account sends the newest string of its family (one build deployed everywhere) "
                           "instead of a version of its own")

    @field_validator("user_agents")
    @classmethod
    def _families(cls, v: dict[str, float]) -> dict[str, float]:
        from distillguard.simulate.clients import FAMILY_NAMES

        return _check_weights(v, FAMILY_NAMES, "user-agent family")


class Identity(_Spec):
    """Sign-up details: e-mail domain, payment method, API keys, organisation."""

    email_domains: Weights = Field(
        description="literal domains, or '@free' (global webmail), '@regional' (webmail of the account's "
                    "region), '@group' (the site's, company's or cell's domain), '@custom' (a personal "
                    "domain), '@disposable' (throwaway mail)")
    payment_on_file: Share = Field(0.6, description="share of accounts with a payment method")
    shared_payment: Share = Field(0.0, description="share of those paying with their group's card")
    api_keys_per_account: MeanSpread = MeanSpread(mean=1.3, sigma=0.4)
    group_organization: Share = Field(0.0, description="share of grouped accounts inside the group's organisation")
    end_users_per_account: MeanSpread | None = Field(
        None, description="end users an account relays and names in each request (OpenAI's `user` field): a "
                          "reseller's; none by default")


class Tools(_Spec):
    """Tool (function) definitions offered with a request."""

    share: Share = Field(0.0, description="share of conversations offering tools (agent loops always do)")
    min: int = Field(1, ge=0)
    max: int = Field(8, ge=0)

    @model_validator(mode="after")
    def _range(self) -> Tools:
        if self.max < self.min:
            raise ValueError("max must be >= min")
        return self


class Errors(_Spec):
    """Share of requests answered with an error instead of a completion."""

    rate_limited: Share = Field(0.002, description="HTTP 429")
    client_error: Share = Field(0.003, description="HTTP 400")
    server_error: Share = Field(0.002, description="HTTP 500/529")


class Requests(_Spec):
    """Request parameters and the response they get."""

    models: Weights = Field(description="model mix before any release in the period")
    system_prompts: Weights = Field(
        {"none": 1.0}, description="text.SYSTEM_PROMPTS names, 'none', or '@enterprise' (the organisation's own)")
    output_tokens: MedianSpread = MedianSpread(median=350, sigma=0.8)
    max_tokens: Weights = Field({"none": 1.0}, description="'none' or an integer, per account")
    context_tokens: MedianSpread | None = Field(
        None, description="extra input per conversation (attached documents, repository context)")
    tools: Tools = Tools()
    tokens_per_second: float = Field(70, gt=0, description="generation speed, for latency")
    errors: Errors = Errors()

    @field_validator("system_prompts")
    @classmethod
    def _systems(cls, v: dict[str, float]) -> dict[str, float]:
        from distillguard.simulate.text import SYSTEM_PROMPTS

        return _check_weights(v, [*SYSTEM_PROMPTS, "none", "@enterprise"], "system prompt")

    @field_validator("max_tokens")
    @classmethod
    def _max_tokens(cls, v: dict[str, float]) -> dict[str, float]:
        _check_weights(v, None, "max_tokens value")
        for key in v:
            if key != "none" and not (str(key).isdigit() and int(key) > 0):
                raise ValueError(f"max_tokens keys are 'none' or positive integers, not {key!r}")
        return {str(k): w for k, w in v.items()}


# --- organic personas -------------------------------------------------------------------------

ORGANIC_STYLES = ("chat", "code", "math", "short", "benchmark", "agent", "batch", "longform")


class OrganicPrompts(_Spec):
    """What an organic persona asks (organic.STYLES builds each style)."""

    styles: Weights = Field(description=f"share of conversations per style: {ORGANIC_STYLES}")
    decoration: Share = Field(0.4, description="share of first turns with a personal opener or closing")
    personal_context: Share = Field(0.5, description="share of first turns with pasted personal context")

    @field_validator("styles")
    @classmethod
    def _styles(cls, v: dict[str, float]) -> dict[str, float]:
        return _check_weights(v, ORGANIC_STYLES, "prompt style")


class Group(_Spec):
    """Accounts that share a place or an organisation."""

    kind: Literal["university", "office", "enterprise", "app", "household"] = Field(
        description="household: sibling accounts of one person or family, sharing a home line")
    accounts_per_group: float = Field(gt=0, description="mean accounts per group")
    nat_addresses: int = Field(4, ge=1, description="egress addresses the group's network uses")
    cloud_egress_share: Share = Field(0.0, description="share of offices that egress through a cloud proxy")


class Adoption(_Spec):
    """How an organic account takes up a model released during the period."""

    lag_days: MedianSpread = MedianSpread(median=7, sigma=1.0)
    never: Share = Field(0.25, description="share of accounts that never switch")
    share_after: Share = Field(0.8, description="share of an adopter's requests on the new model")
    # launch day: developers read the announcement and try the model within hours. Without
    # them, an account moving to a new model within a day would be a one-feature tell of a
    # campaign, which real traffic does not give.
    early: Share = Field(0.1, description="share of accounts that try the model within a day of its release")


class Created(_Spec):
    """When organic accounts were created."""

    days_before_start: MedianSpread = MedianSpread(median=200, sigma=1.0)
    during_period: Share = Field(0.05, description="share of accounts created during the period")
    group_onboarding: Share = Field(
        0.0, description="share of grouped accounts created together on their group's onboarding day "
                         "(a class assignment, a team roll-out)")


class Persona(_Spec):
    """One kind of legitimate customer."""

    accounts: int = Field(ge=0, description="accounts at scale 1.0")
    regions: Weights = Field({"us": 1.0}, description="network.REGIONS weights (time zone and ISP)")
    group: Group | None = None
    activity: Activity
    network: Network
    client: Client
    identity: Identity
    requests: Requests
    prompts: OrganicPrompts
    adoption: Adoption = Adoption()
    created: Created = Created()

    @field_validator("regions")
    @classmethod
    def _regions(cls, v: dict[str, float]) -> dict[str, float]:
        from distillguard.simulate.network import REGIONS

        return _check_weights(v, REGIONS, "region")

    @model_validator(mode="after")
    def _grouped_modes(self) -> Persona:
        needs_group = {"campus": "university", "office": "office"}
        for mode, kind in needs_group.items():
            if self.network.modes.get(mode, 0) > 0 and (self.group is None or self.group.kind != kind):
                raise ValueError(f"network mode {mode!r} needs group.kind {kind!r}")
        return self


# --- distillation campaigns -------------------------------------------------------------------

CAPABILITIES = ("software_engineering", "agentic_tool_use", "reasoning", "data_analysis", "roleplay", "grading")


class ModelPivot(_Spec):
    """Moving traffic to a model released during the campaign."""

    share: Share = Field(0.5, description="share of requests on the new model once an account has pivoted")
    within_hours: float = Field(24, gt=0, description="every cell pivots within this long after the release")


class Tells(_Spec):
    """Strength (0 = absent, 1 = blatant) of the coordination tells a campaign shows.

    Adaptive attackers turn these down; each maps to one mechanism of the generator.
    """

    coverage_complementarity: Share = Field(
        0.7, description="share of requests taken from the campaign's shared work queue (disjoint across accounts) "
                         "rather than drawn independently")
    controller_synchrony: Share = Field(
        0.3, description="share of sessions started on the cell controller's clock, in lockstep")
    shared_scaffolding: Share = Field(
        0.7, description="share of requests using the campaign-wide scaffold text and system prompt")
    creation_burst: Share = Field(
        0.8, description="share of accounts created inside sign-up waves rather than spread out")
    model_pivot: ModelPivot = ModelPivot()


class Creation(_Spec):
    """Account sign-up waves."""

    waves: int = Field(8, ge=1)
    wave_hours: float = Field(6, gt=0, description="width of a wave")
    lead_days: MedianSpread = Field(
        MedianSpread(median=2, sigma=0.8), description="delay from sign-up to first use")
    age_days: float = Field(
        0.0, ge=0, description="days wave-created accounts are left to age before use (aged accounts: the waves "
                               "lie this far before the campaign)")
    outside_wave_age_days: MedianSpread | None = Field(
        None, description="accounts created outside a wave were signed up this long before their first use "
                          "(bought accounts, created one by one by their former owners); default: spread "
                          "over the campaign's window")


class Cells(_Spec):
    """Operational groups inside a campaign (shared card, proxy pool, controller, e-mail domain)."""

    size: float = Field(40, ge=1, description="mean accounts per cell")


class CampaignPrompts(_Spec):
    """What the campaign harvests."""

    capabilities: Weights = Field(description=f"share of conversations per capability: {CAPABILITIES}")
    cot_elicitation: Share = Field(0.6, description="share of requests demanding step-by-step reasoning")
    focus: Share = Field(0.6, description="share of an account's conversations in the one capability assigned to "
                                          "it (narrow accounts); the rest follow `capabilities`")
    variation: Share = Field(
        0.5, description="share of tasks varied with a domain context and an extra requirement (a larger "
                         "task space, so fewer exact repeats across accounts)")
    paraphrase: bool = Field(False, description="rewrite scaffolds per account: no two accounts share prompt text")
    disguise: Share = Field(
        0.0, description="share of conversations whose first turn reads like an organic user's (the bare task with "
                         "a personal opener, pasted context or a closing; no scaffold, no constraint list) while "
                         "the task itself still comes from the campaign's target")
    scaffold_system_prompt: str | None = Field(
        None, description="text.SYSTEM_PROMPTS name of the shared scaffold (default: per capability)")

    @field_validator("scaffold_system_prompt")
    @classmethod
    def _scaffold(cls, v: str | None) -> str | None:
        from distillguard.simulate.text import SYSTEM_PROMPTS

        if v is not None and v not in SYSTEM_PROMPTS:
            raise ValueError(f"unknown system prompt {v!r}; expected one of {sorted(SYSTEM_PROMPTS)}")
        return v

    @field_validator("capabilities")
    @classmethod
    def _capabilities(cls, v: dict[str, float]) -> dict[str, float]:
        return _check_weights(v, CAPABILITIES, "capability")


class Hydra(_Spec):
    """A proxy operator whose accounts also relay genuine customers' requests."""

    relay_share: Share = Field(0.3, description="share of each account's traffic that is relayed customers")
    customers: str = Field("casual", description="organic persona whose behaviour relayed customers follow")


class Decoys(_Spec):
    """Accounts of the campaign that harvest nothing: they behave like an organic persona (its
    activity, requests and prompts) on the campaign's identity and network, to dilute it."""

    share: Share = Field(0.3, description="share of the campaign's accounts that are decoys")
    customers: str = Field("casual", description="organic persona whose behaviour the decoys copy")


class Campaign(_Spec):
    """One distillation campaign."""

    accounts: int = Field(ge=0, description="accounts at scale 1.0")
    window: Window
    operator_utc_offset_minutes: int = Field(480, ge=-720, le=840, description="the operators' clock")
    account_local_time: bool = Field(
        False, description="each account keeps its claimed region's local time (as organic users do) instead of "
                           "the operators' clock: adaptive operators schedule like their personas")
    regions: Weights = Field({"us": 1.0}, description="regions the accounts claim (e-mail, billing)")
    lifetime_days: MedianSpread = Field(
        MedianSpread(median=10, sigma=0.6), description="time an account is used before it is dropped")
    cells: Cells = Cells()
    creation: Creation = Creation()
    activity: Activity
    network: Network
    client: Client
    identity: Identity
    requests: Requests
    prompts: CampaignPrompts
    tells: Tells = Tells()
    hydra: Hydra | None = None
    decoys: Decoys | None = None

    @field_validator("regions")
    @classmethod
    def _regions(cls, v: dict[str, float]) -> dict[str, float]:
        from distillguard.simulate.network import REGIONS

        return _check_weights(v, REGIONS, "region")

    @model_validator(mode="after")
    def _tells_own_synchrony(self) -> Campaign:
        if self.activity.synchrony.share > 0:
            raise ValueError("activity.synchrony.share is set by tells.controller_synchrony for campaigns")
        return self


# --- the scenario -----------------------------------------------------------------------------

class ModelSpec(_Spec):
    """A model on offer; ``released`` inside the period makes it a release event."""

    released: datetime | None = None
    successor_of: str | None = None

    @field_validator("released", mode="before")
    @classmethod
    def _date_as_datetime(cls, value: Any) -> Any:
        return _utc(value)

    @field_validator("released")
    @classmethod
    def _as_utc(cls, value: datetime | None) -> datetime | None:
        return _utc(value)


class Corpus(_Spec):
    """A named prompt corpus: shipped sources of one kind.

    ``--organic-prompts`` replaces every corpus of kind ``organic`` and ``--distill-prompts``
    every corpus of kind ``distillation``; ``benchmark`` corpora are public test sets and are
    never replaced.
    """

    kind: Literal["organic", "distillation", "benchmark"]
    sources: list[str] = Field(min_length=1)


REQUIRED_CORPORA = ("chat", "code", "math", "tool_use", "roleplay", "benchmark")


class Scenario(_Spec):
    """A complete simulated period of traffic."""

    name: str
    description: str = ""
    seed: int = Field(0, ge=0, description="default seed; the caller may override it")
    period: Window
    models: dict[str, ModelSpec]
    corpora: dict[str, Corpus]
    organic: dict[str, Persona] = {}
    campaigns: dict[str, Campaign] = {}

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        missing = [c for c in REQUIRED_CORPORA if c not in self.corpora]
        if missing:
            raise ValueError(f"corpora {missing} must be defined")
        for corpus_name, corpus in self.corpora.items():
            from distillguard import data

            shipped_kind = "organic" if corpus.kind == "organic" else "distillation"
            unknown = sorted(set(corpus.sources) - set(data.prompt_sources(shipped_kind)))
            if unknown:
                raise ValueError(f"corpora.{corpus_name}: unknown {shipped_kind} sources {unknown}")
        for model_name, spec in self.models.items():
            if spec.successor_of is not None and spec.successor_of not in self.models:
                raise ValueError(f"models.{model_name}.successor_of: unknown model {spec.successor_of!r}")
        owners = [*(f"organic.{k}" for k in self.organic), *(f"campaigns.{k}" for k in self.campaigns)]
        specs = [*self.organic.values(), *self.campaigns.values()]
        for owner, spec in zip(owners, specs):
            unknown = sorted(set(spec.requests.models) - set(self.models))
            if unknown:
                raise ValueError(f"{owner}.requests.models: unknown models {unknown}")
        for name, campaign in self.campaigns.items():
            if campaign.hydra is not None and campaign.hydra.customers not in self.organic:
                raise ValueError(f"campaigns.{name}.hydra.customers: unknown persona {campaign.hydra.customers!r}")
            if campaign.decoys is not None and campaign.decoys.customers not in self.organic:
                raise ValueError(f"campaigns.{name}.decoys.customers: unknown persona {campaign.decoys.customers!r}")
            if campaign.window.start < self.period.start or campaign.window.end > self.period.end:
                raise ValueError(f"campaigns.{name}.window must lie inside period")
        return self

    def releases(self) -> list[tuple[str, datetime]]:
        """Models released inside the period, earliest first."""
        out = [(n, m.released) for n, m in self.models.items()
               if m.released is not None and self.period.start <= m.released < self.period.end]
        return sorted(out, key=lambda item: item[1])


# --- loading ----------------------------------------------------------------------------------

def shipped_scenarios() -> list[str]:
    """Names of the scenarios shipped with the package."""
    folder = resources.files("distillguard.simulate").joinpath(SCENARIO_DIR)
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir()
                  if p.name.endswith(".yaml") and not p.name.startswith("_"))


def _inner_model(annotation: Any) -> tuple[str, type[BaseModel] | None]:
    """('model', cls) for a section, ('map', cls) for dict[str, section], else ('value', None)."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _inner_model(args[0]) if len(args) == 1 else ("value", None)
    if origin is dict:
        value = typing.get_args(annotation)[1]
        if isinstance(value, type) and issubclass(value, BaseModel):
            return "map", value
        return "value", None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "model", annotation
    return "value", None


def merge(model: type[BaseModel], base: dict, override: dict) -> dict:
    """Apply ``override`` on ``base`` following the schema of ``model`` (see module docstring)."""
    out = dict(base)
    for key, value in override.items():
        field = model.model_fields.get(key)
        shape, inner = _inner_model(field.annotation) if field else ("value", None)
        old = out.get(key)
        if shape == "model" and isinstance(value, dict) and isinstance(old, dict):
            out[key] = merge(inner, old, value)
        elif shape == "map" and isinstance(value, dict) and isinstance(old, dict):
            merged = dict(old)
            for name, item in value.items():
                if isinstance(item, dict) and isinstance(merged.get(name), dict):
                    merged[name] = merge(inner, merged[name], item)
                else:
                    merged[name] = item
            out[key] = merged
        else:
            out[key] = value
    return out


def _read_yaml(path: Path, label: str) -> dict:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"{label}: cannot read scenario file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{label}: not valid YAML ({exc})") from None
    if not isinstance(loaded, dict):
        raise ScenarioError(f"{label}: a scenario file must be a mapping of fields")
    return loaded


def _locate(name_or_path: str | Path, relative_to: Path | None) -> tuple[Path, str]:
    candidate = Path(name_or_path)
    if relative_to is not None and not candidate.is_absolute():
        local = relative_to / candidate
        if local.suffix in (".yaml", ".yml") and local.exists():
            return local, str(local)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.exists():
            raise ScenarioError(f"{candidate}: scenario file not found")
        return candidate, str(candidate)
    shipped = resources.files("distillguard.simulate").joinpath(SCENARIO_DIR, f"{name_or_path}.yaml")
    if not shipped.is_file():
        raise ScenarioError(
            f"unknown scenario {str(name_or_path)!r}; shipped scenarios: {', '.join(shipped_scenarios())} "
            f"(or give a path to a .yaml file)")
    return Path(str(shipped)), f"scenario {name_or_path!r} ({Path(str(shipped)).name})"


def _resolve(name_or_path: str | Path, relative_to: Path | None, chain: tuple[str, ...]) -> tuple[dict, str]:
    path, label = _locate(name_or_path, relative_to)
    key = str(path.resolve())
    if key in chain:
        raise ScenarioError(f"{label}: 'base' chain loops back to itself")
    raw = _read_yaml(path, label)
    base = raw.pop("base", None)
    if base is None:
        return raw, label
    bases = [base] if isinstance(base, str) else base
    if not isinstance(bases, list) or not bases or not all(isinstance(b, str) for b in bases):
        raise ScenarioError(f"{label}: base: must be a scenario name or file path, or a list of them")
    parent: dict = {}
    for name in bases:  # later bases override earlier ones
        resolved, _ = _resolve(name, path.parent, (*chain, key))
        parent = merge(Scenario, parent, resolved)
    raw.setdefault("description", "")
    return merge(Scenario, parent, raw), label


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load a shipped scenario by name, or a YAML file by path, resolving ``base`` chains.

    Raises :class:`ScenarioError` naming the file and the offending field.
    """
    raw, label = _resolve(name_or_path, None, ())
    return validate_scenario(raw, label)


def validate_scenario(raw: dict, label: str = "scenario") -> Scenario:
    """Validate an already-merged mapping; errors name ``label`` and the field path."""
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "(top level)"
            problems.append(f"{where}: {error['msg']}")
        shown = "; ".join(problems[:5]) + (f"; ... ({len(problems) - 5} more)" if len(problems) > 5 else "")
        raise ScenarioError(f"{label}: invalid field {shown}") from None
