"""Policy: YAML -> validated object -> actions with reasons.

Conservative by default: a false block of a real customer is worse than a day's delay. An
account is throttled or worse only as a member of a scored campaign; its own signals alone
can at most put it under monitoring. Verified organisations on the allowlist are never acted
on beyond monitoring.
"""

from __future__ import annotations

import textwrap
import typing
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator, model_validator

from distillguard import yamlfile
from distillguard.detect.signals import BY_NAME as SIGNALS


class CampaignThresholds(BaseModel):
    """How a campaign's score (0..1) becomes its recommended action. A rule-based campaign's members
    are monitored at most (scan._verdicts): throttle and stronger need a calibrated test."""

    model_config = ConfigDict(extra="forbid")
    monitor: float = Field(0.25, ge=0, le=1, description="campaign score from which it is flagged and its members "
                           "monitored")
    throttle: float = Field(0.40, ge=0, le=1, description="campaign score from which throttling is recommended "
                            "(its cells merge into one campaign; members are only monitored without a calibrated "
                            "finding)")
    fallback: float = Field(0.55, ge=0, le=1, description="campaign score from which the fallback model is "
                            "recommended (a recommendation only, as for throttle)")
    block: float = Field(0.80, ge=0, le=1, description="campaign score from which blocking is recommended (a "
                         "recommendation only, as for throttle)")
    min_members: int = Field(5, ge=2, description="accounts a cluster needs to be a campaign; a smaller group's "
                             "accounts are at most monitored")
    merge_link: float = Field(1.5, gt=0, description="edge weight between two flagged clusters that makes them one campaign")

    @model_validator(mode="after")
    def _ordered(self) -> "CampaignThresholds":
        if not self.monitor <= self.throttle <= self.fallback <= self.block:
            raise ValueError("campaign thresholds must satisfy monitor <= throttle <= fallback <= block")
        return self


class Linkage(BaseModel):
    """How shared keys link accounts (linkage.py); ``linkage.LinkageParams`` is this section."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    clique_max: int = Field(40, ge=2, description="accounts: a key held by at most this many links all its pairs; "
                            "a larger key links each holder to its ring_degree next holders")
    ring_degree: int = Field(4, ge=1, description="ring-lattice neighbours per holder of a large key")
    max_share: float = Field(0.05, gt=0, le=1, description="share of accounts: keys held by more are ignored...")
    habitual_max_share: float = Field(0.5, gt=0, le=1, description="share of accounts: ...except habitual "
                                      "framing, which only operations share widely")
    scaffold_min_uses: int = Field(3, ge=1, description="requests (distinct sampled prompts for an n-gram): a "
                                   "system prompt or a scaffold n-gram counts as habitual from this many uses")
    scaffold_min_share: float = Field(0.1, ge=0, le=1, description="share of an account's distinct sampled "
                                      "prompts a scaffold n-gram must reach to be habitual (a phrase typed now "
                                      "and then is not a wrapper)")
    system_prompt_min_share: float = Field(0.1, ge=0, le=1, description="share of an account's requests a "
                                           "system prompt must reach to be habitual (an operation mixing other "
                                           "traffic in dilutes its own below it: docs/detection.md, Not yet done)")
    max_accounts_floor: int = Field(50, ge=2, description="accounts: a key held by fewer is never ignored as common")
    min_pair_weight: float = Field(1.0, ge=0, description="evidence weight: weaker pairs are noise, one weak "
                                   "coincidence links nobody")
    session_gap_s: int = Field(1800, gt=0, description="seconds of quiet after which a request starts a session")
    slot_s: int = Field(300, gt=0, description="seconds: width of a session-start slot")
    sync_max_holders: int = Field(12, ge=2, description="accounts: a slot in which more start sessions is crowded, "
                                  "sharing it is chance")
    exclude: tuple[str, ...] = Field((), description="evidence kinds left out of the linkage")


class Clustering(BaseModel):
    """How clusters are found and scored (campaigns.py); ``campaigns.CampaignParams`` is this section."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min_members: int = Field(CampaignThresholds.model_fields["min_members"].default, ge=2,
                             description="accounts a cluster needs to be a campaign (the scan sets it from "
                             "campaign.min_members)")
    resolution: float = Field(1.0, gt=0, description="Leiden resolution (higher: smaller clusters)")
    seed: int = Field(7, description="Leiden's random seed")
    structure_scale: float = Field(6.0, gt=0, description="internal edge weight per member at which structure is ~0.63")
    min_member_evidence: float = Field(3.0, ge=0, description="evidence (kind weight x idf, once per key) a member "
                                       "must hold in keys shared with min_key_support other members")
    min_key_support: int = Field(2, ge=1, description="other members of the cluster that must hold a key for it to count")
    pivot_hours: float = Field(24.0, gt=0, description="hours after a model's release within which a first use is a pivot")
    pivot_min_share: float = Field(0.15, ge=0, le=1, description="share of a cluster's members that must pivot")
    pivot_lift: float = Field(4.0, ge=1, description="times the population's pivot share a cluster must reach")
    recruit_fresh_days: float = Field(14.0, gt=0, description="days from creation to first use of a fresh account")
    recruit_wave_hours: float = Field(12.0, gt=0, description="hours within which fresh members' creations form a wave")
    recruit_min_mates: int = Field(2, ge=1, description="other fresh members of other domains in a member's wave")
    recruit_min_share: float = Field(0.15, ge=0, le=1, description="share of a cluster's members recruited together")
    act_weight: float = Field(1.5, ge=0, description="evidence a recruitment wave adds to a member's tie "
                              "(a sign-up burst key's weight)")


class Inheritance(BaseModel):
    """How a new account inherits a throttled campaign's action between scans (inherit.py)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(True, description="new accounts that match a throttled campaign's indicators inherit "
                          "its action until the next scan")
    action: Literal["monitor", "throttle", "fallback", "block"] = Field(
        "throttle", description="the most a new account inherits; the next scan judges it on its own evidence")
    min_holders: int = Field(3, ge=2, description="throttled members that must hold a key for it to be an indicator")
    min_families: int = Field(2, ge=1, description="independent families of matched keys needed, the card aside")
    habitual_uses: int = Field(2, ge=1, description="requests of a new account that must carry a campaign's system "
                               "prompt or scaffold framing before that counts: the indicators are habitual use "
                               "(once is chance, a customer typing a phrase; twice is habit)")
    scaffold_ngrams: int = Field(
        2, ge=1, description="distinct scaffold n-grams of a campaign a new account's requests must show before its "
        "scaffold framing counts: a script's framing sentence spans several, a customer's own phrase shares one by "
        "chance")
    framing_share: float = Field(
        0.9, gt=0, le=1, description="a system prompt or scaffold framing is an indicator when at least this share "
        "of the accounts of the lookback that hold it (leaving out new accounts in no campaign-sized cluster) are "
        "the campaign's throttled members; every other kind needs every holder a throttled member")
    framing_outside: float = Field(
        0.02, ge=0, lt=1, description="...and at most this share of them are in no campaign-sized cluster: a "
        "popular tool's prompt has many customers of standing, in no such cluster; likewise a sign-up hour is one "
        "only at an e-mail domain with at most this share of its accounts in no such cluster (not a webmail domain "
        "customers use)")
    signature_words: int = Field(
        12, ge=0, description="a system prompt indicator of at least this many words, in habitual_uses of a new "
        "account's requests, suffices alone, as the campaign's card does: the campaign script's own prompt, not a "
        "phrase typed by chance (0: never alone)")
    new_account_hours: float = Field(72.0, gt=0, description="an account first seen this recently is new")
    max_account_age_days: float = Field(
        14.0, gt=0, description="...and created at most this long before the request, where its creation time is "
        "known: campaigns recruit fresh accounts, while a customer of long standing whose first request in the "
        "lookback comes from a campaign's residential neighbourhood is not a recruit")


class RateLimit(BaseModel):
    """One online trigger of the gateway (gateway/limits.py): more than ``max_requests`` in
    ``window_seconds`` from one account, subnet or card takes ``action`` until the window frees."""

    model_config = ConfigDict(extra="forbid")
    scope: Literal["account", "subnet", "payment"] = Field(
        description="what is counted: one account, one client subnet, or one payment card")
    window_seconds: float = Field(60.0, gt=0, description="seconds of the sliding window")
    max_requests: int = Field(..., ge=1, description="requests allowed in one window")
    action: Literal["monitor", "throttle", "fallback", "block"] = Field(
        "throttle", description="what a request over the limit gets")


def _default_limits() -> list[RateLimit]:
    # generous: a batch job or a university NAT may run hundreds of requests a minute; these
    # meet floods, the campaign detection is the scan's
    return [RateLimit(scope="account", window_seconds=60, max_requests=600),
            RateLimit(scope="subnet", window_seconds=60, max_requests=6000),
            RateLimit(scope="payment", window_seconds=60, max_requests=1200)]


class GatewayRules(BaseModel):
    """What the gateway does online (gateway/enforce.py), beside the scan's verdicts."""

    model_config = ConfigDict(extra="forbid")
    limits: list[RateLimit] = Field(default_factory=_default_limits, description="online rate limits, each "
                                    "one trigger (an empty list: none)")
    throttle_retry_after_seconds: float = Field(
        3600.0, gt=0, description="Retry-After of a request refused because its account is throttled by a verdict")
    findings_to_fallback: bool = Field(
        False, description="serve the accounts the scan's verdicts put at throttle (and the new accounts that "
        "inherit a campaign's throttle) by the fallback model instead of refusing them with 429: the answer names "
        "the model asked for, so the client cannot tell; needs the gateway's fallback model (without one they stay "
        "throttled). Operators' overrides, the online limits and the verify rule keep their own answers")


class ResellerRules(BaseModel):
    """What the gateway does with the requests of a key the latest scan recognised as a reseller
    (detect/resellers.py): its end users are judged one by one, and these rules apply per end user."""

    model_config = ConfigDict(extra="forbid")
    require_end_user: bool = Field(False, description="a recognised reseller's request that names no end user "
                                   "(OpenAI's request field user) is refused with 400 end_user_required; off: it is "
                                   "judged as the reseller's account")
    per_end_user_rate: int | None = Field(None, ge=1, description="requests per minute one end user of a recognised "
                                          "reseller may send (throttled above, like the online limits); null: no "
                                          "limit beyond the key's own")


class LiveRouting(BaseModel):
    """Live routing (gateway/live.py): each request of an account at allow or monitor gets a
    p-value against organic traffic (``distillguard gateway calibrate``); a session whose p-value
    falls below its share of the budget is served by the fallback model from then on."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(True, description="score requests live (needs the gateway's live_reference file and a "
                          "fallback model; without either nothing is routed)")
    session_budget: float = Field(0.005, gt=0, le=0.1, description="share of organic sessions that may ever reach "
                                  "the fallback: a session is decided at its 1st, 2nd, 4th, 8th, ... request, and "
                                  "the j-th of these checkpoints (j = 0, 1, ...) may spend session_budget / ((j+1) "
                                  "(j+2)) of it; the shares sum to the budget over any number of requests, so by the "
                                  "union bound an organic session crosses with probability at most the budget")
    session_gap_seconds: float = Field(1800.0, gt=0, description="seconds of quiet after which an account's next "
                                       "request starts a new session (its looks count from 1 again)")
    window: int = Field(32, ge=3, le=1024, description="requests per account kept for the session statistics "
                        "(rate, regularity, template repetition): memory is bounded by accounts x window")
    min_reference: int = Field(200, ge=1, description="organic looks a statistic needs in its reference bucket to "
                               "count; with fewer it is left out (its p-value is 1)")
    indicators: bool = Field(True, description="imported indicators count (weighed by how many organic accounts "
                             "matched each): a feed can then send new traffic to the fallback, beyond "
                             "intel.max_action, never refuse it; false: live routing ignores them")


class ErrorBudget(BaseModel):
    """The statistical evidence's error budget: per action, the false positives it accepts per
    organic entity (account, or declared organisation). Thresholds follow from these and the null
    (detect/verdicts.py); none is fitted to labelled data."""

    model_config = ConfigDict(extra="forbid")
    monitor: float = Field(1e-2, gt=0, le=1, description="expected false monitors per organic entity")
    throttle: float = Field(1e-4, gt=0, le=1, description="expected false throttles per organic entity")
    block: float = Field(1e-6, gt=0, le=1, description="expected false blocks per organic entity")


class Statistics(BaseModel):
    """The calibrated tests (detect/): block tests under BiCM, cohort windows against earlier arrivals."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(True, description="run the calibrated tests (off: linkage and signals alone)")
    budget: ErrorBudget = ErrorBudget()
    alpha: float = Field(0.01, gt=0, le=1, description="family-wise level a test result must reach, corrected "
                         "for every look, to be a finding at all; the budget then bounds what accepting "
                         "findings costs")
    pair_budget: int = Field(2_000_000, ge=1, description="holder pairs per evidence kind whose tokens are rare "
                             "enough to test (sets rarity; bounds the cost)")
    null_inflation: float = Field(1.0, ge=1.0, description="a block must share more than this many times what "
                                  "BiCM expects: a margin for what the null does not model (daily rhythm, time "
                                  "zones, regions), which makes large organic groups look slightly surprising")
    block_member_shares: list[float] = Field([4.0 ** i for i in range(1, 11)], min_length=1, description="a "
                                             "block's bystanders may cost at most this fraction (1 / value) of an "
                                             "action's budget: each value sets a member threshold, and the block is "
                                             "offered to the budget once per distinct set of members (the budget "
                                             "takes the cheapest per entity). The largest value bounds how many "
                                             "blocks one scan can accept, so the menu reaches far past any "
                                             "population's count of blocks")
    certain_p: float = Field(1e-8, gt=0, lt=1, description="results whose corrected p-value is at most this "
                             "are equally strong, and the budget takes them cheapest per entity not yet acted on "
                             "first; above it, strongest first, so that weak results, the first a misspecified "
                             "null lets through, never crowd out strong ones (the default is alpha / 1e6: still "
                             "significant were the null's tail a million times too thin)")
    finding_fdr: float = Field(0.1, gt=0, le=1, description="most expected false positives per entity a "
                               "result may add at throttle or stronger (its cost over the entities it adds that "
                               "no accepted result holds yet): its false discovery rate. The budget bounds what all "
                               "findings cost; this keeps any one of them from being mostly chance members")
    min_block_holders: int = Field(3, ge=2, description="entities a seed token must have to seed a block")
    group_null_min_groups: int = Field(20, ge=2, description="holder groups of a behaving block's seed kind "
                                       "(distinct holder sets of its rare tokens, at least min_block_holders "
                                       "each) its group null is fitted on; a kind with fewer is fitted on its "
                                       "family's groups, and with too few there on those of every place kind "
                                       "outside the network family")
    pair_q: float = Field(0.01, gt=0, le=1, description="false discovery rate of the pair tests (Benjamini-Hochberg "
                          "over all entity pairs): a validated pair groups findings under one campaign id, it never "
                          "raises an action")
    cohort_levels: tuple[float, ...] = Field((0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2), description="tail shares of a window's reference (the "
                                             "entities that arrived before it) an extreme entity falls in; each "
                                             "level is one more look, corrected for. Also the population tail "
                                             "shares of combined behaviour at which a campaign's associates "
                                             "behaving in the tail are offered on their own (not looks: offers, "
                                             "each priced by its own rate)")
    member_levels: tuple[float, ...] = Field((0.5,), description="tail shares, besides cohort_levels (and "
                                             "0: above the reference's largest value), at which a validated "
                                             "wording group's holders may be kept: not looks (the group's "
                                             "p-value does not depend on them) but offers, each priced by its "
                                             "level L: the holders that are not that far out estimate the "
                                             "organic ones among the kept, L / (1 - L) of them each; and a "
                                             "behaving block's members where its seed is an account token (a "
                                             "card). Other blocks' members, kept on ties of their own, stay at "
                                             "cohort_levels")
    owner_action: Literal["throttle", "monitor"] = Field("throttle", description="what the other holders of "
                                                         "a token with one owner (a card: evidence.Kind.alone) "
                                                         "get where accepted results hold some of its holders "
                                                         "at throttle or stronger: the owner's other accounts, "
                                                         "priced at the least expected false share of the held "
                                                         "holders per holder added, within the throttle budget. "
                                                         "monitor: never restricted for it")
    associate_action: Literal["throttle", "monitor"] = Field("throttle", description="what a campaign's "
                                                             "associates get: entities no result holds, tied to "
                                                             "the members of a campaign (accepted results at "
                                                             "throttle or stronger, campaign.min_members entities "
                                                             "or more) in two independent families (a token the "
                                                             "members hold, a sign-up near one of theirs) more "
                                                             "often than independent ties allow (detect/"
                                                             "associates.py), priced at the organic entities "
                                                             "expected tied in both, within the throttle budget. "
                                                             "monitor: never restricted for it")
    associate_hours: tuple[float, ...] = Field((0.25, 1.0), description="sign-up ties, hours: an entity created "
                                               "within this long of a campaign member's creation is tied to the "
                                               "campaign in the time family; each width is one more tie, and every "
                                               "pair of ties is a look, corrected for")
    cohort_windows_hours: tuple[float, ...] = Field((1.0, 6.0, 24.0, 168.0), description="arrival window widths, "
                                                    "hours (each with two offsets; every window is a look)")
    cohort_profile_level: float = Field(0.05, gt=0, le=1, description="a window's extreme entity is a member only "
                                        "if it is as extreme as the cohort's median member on the other features, "
                                        "closer than all but this share of the other entities (1: no check): the "
                                        "window's feature chose it, the others did not")
    cohort_min_exchanges: int = Field(20, ge=1, description="exchanges an account needs for its features to be judged")
    cohort_horizons_hours: tuple[float, ...] = Field(
        (3.0, 6.0, 12.0, 24.0, 48.0, 96.0, 192.0, 384.0, 768.0, 1536.0, 3072.0), min_length=1,
        description="observation views, hours: in the view of horizon H, a window and its reference count only the "
                    "entities first seen at least H before the scan and judged within H of their first request (so "
                    "that recent arrivals, judged only if fast, are not held against slower earlier ones); a window "
                    "of first requests is tested in the largest H its end is at least as old as, a sign-up window in "
                    "every view")
    cohort_refits: int = Field(2, ge=0, description="times the cohort tests are rerun with the entities the scan's "
                               "cohort findings hold taken out of the reference (a null refitted without validated "
                               "findings)")

    @field_validator("cohort_levels", "member_levels")
    @classmethod
    def _shares(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not all(0.0 < v < 1.0 for v in value):
            raise ValueError("each level is a tail share, strictly between 0 and 1")
        return value


class OutsideEvidence(BaseModel):
    """Imported threat-intelligence indicators (``distillguard intel import``): how much a match
    weighs and how far matches alone may act on an account; and when campaigns are one actor's."""

    model_config = ConfigDict(extra="forbid")
    max_action: Literal["allow", "monitor", "throttle", "fallback", "block"] = Field(
        "monitor", description="the strongest action imported indicators alone may give an account: another "
        "party's word is a reason to look, not proof; an action the account's own evidence earns is kept")
    min_weight: float = Field(0.5, gt=0, le=1, description="combined weight (1 - product of (1 - w)) an account's "
                              "matches need to act; a match weighs its confidence / 100 (unstated: "
                              "unstated_confidence), halved every half_life_days of its age")
    unstated_confidence: int = Field(50, ge=0, le=100, description="confidence (0..100) of an indicator that states none")
    half_life_days: float = Field(90.0, gt=0, description="days after an indicator's valid_from (else its import) "
                                  "in which its weight halves: addresses and cards are rotated")
    actor_alpha: float = Field(1e-3, gt=0, le=1, description="corrected p-value (shared keys against what sizes "
                               "and key popularity predict, Poisson tail, Bonferroni over campaign pairs) at "
                               "which two campaigns are linked to one actor (distillguard actors)")


class StepUp(BaseModel):
    """Step-up verification (action ``verify``): a new account whose verdict rests on a calibrated
    test is refused with ``verification_required`` until an operator lifts it, instead of being
    throttled. Off by default: it tells the account that it is suspected, which a throttle does not."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(False, description="send new accounts with statistical evidence to verify (the gateway "
                          "applies it to the scan's verdicts)")
    new_account_days: float = Field(7.0, gt=0, description="days: an account created at most this long before the "
                                    "request is new (an account whose creation time is unknown never is)")
    min_action: Literal["monitor", "throttle"] = Field(
        "monitor", description="the weakest verdict that is sent to verify; verdicts from it up to throttle are, "
        "when a calibrated test (block or cohort) is among their reasons; fallback and block are kept")

    def applies(self, action: str, statistical: bool, account_age_days: float | None) -> bool:
        """Whether a verdict of ``action`` becomes ``verify`` for an account of that age."""
        order = ("monitor", "throttle")
        return (self.enabled and statistical and account_age_days is not None
                and account_age_days <= self.new_account_days
                and action in order and order.index(action) >= order.index(self.min_action))


#: what each kind of entity control may do: a model is switched off, the rest are refused
CONTROL_ACTIONS: dict[str, tuple[str, ...]] = {"model": ("disable",), "organization": ("block",),
                                              "country": ("block",), "asn": ("block",), "email_domain": ("block",)}


def _country(value: Any) -> str:
    if not isinstance(value, str) or len(value.strip()) != 2 or not value.strip().isalpha() \
            or not value.strip().isascii():
        raise ValueError("a country is an ISO 3166-1 alpha-2 code such as GB")
    return value.strip().upper()


class ControlScope(BaseModel):
    """Whom a control applies to: everyone when both lists are empty, else requests of the named
    organisations or from the named countries."""

    model_config = ConfigDict(extra="forbid")
    organizations: list[StrictStr] = Field(default_factory=list, description="organization_id values")
    countries: list[str] = Field(default_factory=list, description="ISO 3166-1 alpha-2 codes (from --geoip)")

    @field_validator("countries", mode="before")
    @classmethod
    def _codes(cls, value: Any) -> Any:
        return [_country(c) for c in value] if isinstance(value, list) else value


class EntityControl(BaseModel):
    """One entity control (gateway/controls.py): a model disabled, or an organisation, country, ASN
    or e-mail domain blocked, optionally only for ``scope`` and until ``expires_at``."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["model", "organization", "country", "asn", "email_domain"] = Field(
        description="what is controlled")
    value: StrictStr = Field(description="the model name, organization_id, country code, AS number (13335 or "
                             "AS13335) or e-mail domain (its subdomains too)")
    action: Literal["disable", "block"] = Field(description="disable (a model) or block (the others)")
    reason: StrictStr = Field("", description="why (never sent to a client)")
    expires_at: datetime | None = Field(None, description="when it stops holding (ISO-8601 with offset); none: "
                                        "until removed")
    scope: ControlScope = Field(default_factory=ControlScope, description="whom it applies to (empty: everyone)")

    @field_validator("expires_at", mode="before")
    @classmethod
    def _time(cls, value: Any) -> Any:
        if value is None or isinstance(value, datetime):
            t = value
        elif isinstance(value, str):
            try:
                t = datetime.fromisoformat(value)
            except ValueError:
                raise ValueError(f"{value[:64]!r} is not an ISO-8601 time") from None
        else:
            raise ValueError("must be an ISO-8601 time with a UTC offset, e.g. 2030-01-31T12:00:00Z")
        if t is not None and t.tzinfo is None:
            raise ValueError("has no UTC offset (add Z or +00:00)")
        return t

    @model_validator(mode="after")
    def _normal(self) -> "EntityControl":
        if self.action not in CONTROL_ACTIONS[self.kind]:
            raise ValueError(f"a {self.kind} control's action is {' or '.join(CONTROL_ACTIONS[self.kind])}")
        value = self.value.strip()
        if not value or len(value) > 253 or not value.isprintable():
            raise ValueError("value must be 1 to 253 printable characters")
        if self.kind == "country":
            value = _country(value)
        elif self.kind == "asn":
            digits = value.upper().removeprefix("AS")
            if not digits.isdigit() or not digits.isascii() or int(digits) >= 1 << 32:
                raise ValueError("an AS number is 0..4294967295, written 13335 or AS13335")
            value = str(int(digits))
        elif self.kind == "email_domain":
            value = value.lower().removeprefix("@")
            if not value or any(c.isspace() or c == "@" for c in value):
                raise ValueError("an e-mail domain has no blanks and no @ (example.com)")
        object.__setattr__(self, "value", value)
        return self


class Policy(BaseModel):
    """What ``scan`` (and later the gateway) does with scores. Every field has a safe default."""

    model_config = ConfigDict(extra="forbid")
    version: int = Field(1, description="version of this file's layout")
    campaign: CampaignThresholds = CampaignThresholds()
    account_monitor: float = Field(0.45, ge=0, le=1, description="suspicion at which a lone account is monitored")
    signal_thresholds: dict[str, float] = Field(default_factory=dict, description="signal name -> threshold at "
                                                "which it fires, in place of the signal's own (e.g. "
                                                "{single_turn: 0.95}); docs/signals.md lists the signals")
    allowlist_organizations: list[str] = Field(default_factory=list, description="organization_id values of "
                                               "verified organisations: never acted on beyond monitoring")
    lookback_days: float = Field(30.0, gt=0, description="days of exchanges before as_of a scan judges")
    inherit: Inheritance = Inheritance()
    linkage: Linkage = Linkage()
    clustering: Clustering = Clustering()
    gateway: GatewayRules = GatewayRules()
    live: LiveRouting = LiveRouting()
    statistics: Statistics = Statistics()
    intel: OutsideEvidence = OutsideEvidence()
    verify: StepUp = StepUp()
    resellers: ResellerRules = ResellerRules()
    controls: list[EntityControl] = Field(default_factory=list, description="entity controls the gateway loads "
                                          "at start (read-only through its admin API)")

    @model_validator(mode="after")
    def _known_signals(self) -> "Policy":
        unknown = sorted(set(self.signal_thresholds) - set(SIGNALS))
        if unknown:
            raise ValueError(f"unknown signal(s) {unknown}; known: {sorted(SIGNALS)}")
        return self

    def campaign_action(self, score: float) -> str:
        c = self.campaign
        for action, floor in (("block", c.block), ("fallback", c.fallback), ("throttle", c.throttle),
                              ("monitor", c.monitor)):
            if score >= floor:
                return action
        return "allow"


def load_policy(path: str | Path | None) -> Policy:
    if path is None:
        return Policy()
    return yamlfile.validated(Policy, yamlfile.read(path, "policy") or {}, path, "policy field")


def tunables(policy: Policy, prefix: str = "") -> list[dict]:
    """Every tunable of ``policy`` (sections flattened to dotted names) with its value, default
    and description, in declaration order: what ``distillguard policy show`` prints."""
    rows = []
    defaults = type(policy)()
    for name, info in type(policy).model_fields.items():
        value, default = getattr(policy, name), getattr(defaults, name)
        if isinstance(value, BaseModel):
            rows.extend(tunables(value, f"{prefix}{name}."))
            continue
        rows.append({"name": f"{prefix}{name}", "value": _plain(value), "default": _plain(default),
                     "description": info.description or ""})
    return rows


def _plain(value):
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def policy_yaml(policy: Policy) -> str:
    """``policy`` as YAML that ``load_policy`` reads back equal, every field preceded by its
    description as a comment and followed by ``# default: ...`` where it differs from the
    default: what ``distillguard policy show`` prints and what examples/policy.yaml holds."""
    return "".join(_yaml_lines(policy, type(policy)(), 0))


def _yaml_lines(model: BaseModel, defaults: BaseModel, depth: int) -> list[str]:
    indent = "  " * depth
    lines: list[str] = []
    for name, info in type(model).model_fields.items():
        value, default = getattr(model, name), getattr(defaults, name)
        about = info.description or (type(value).__doc__ if isinstance(value, BaseModel) else "") or ""
        item = _list_item_model(info.annotation)
        if item is not None:
            about += "; each: " + ", ".join(f"{n} ({f.description})" for n, f in item.model_fields.items())
        lines.extend(f"{indent}# {line}\n" for line in textwrap.wrap(" ".join(about.split()), 110 - len(indent)))
        if isinstance(value, BaseModel):
            lines.append(f"{indent}{name}:\n")
            lines.extend(_yaml_lines(value, default, depth + 1))
            continue
        plain = _plain(value)
        if item is not None and plain:
            # one rule a line: a list of flow mappings reads like a table
            text = [f"{name}:", *(f"- {_flow(v)}" for v in plain)]
        else:
            text = [f"{name}: {_flow(plain)}"]
        if value != default:
            text[0] += f"  # default: {_flow(_plain(default))}"
        lines.extend(f"{indent}{line}\n" for line in text)
    return lines


def _flow(value: object) -> str:
    """``value`` as one line of YAML (flow style for collections). Escaped ASCII: written as
    itself, a line separator such as U+0085 in an organisation's name reads back as a space."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**9, allow_unicode=False)
    return text.removesuffix("\n...\n").rstrip("\n")


def _list_item_model(annotation: object) -> type[BaseModel] | None:
    """The model of a ``list[Model]`` field (gateway.limits), whose item fields the comment lists."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is list and args and isinstance(args[0], type) \
            and issubclass(args[0], BaseModel):
        return args[0]
    return None
