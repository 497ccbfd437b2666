"""Per request: which action applies to this account now, and why.

The sources, strongest claim first:

1. an operator's override (``POST /admin/accounts/{id}/action``): final, kept with who and when;
   then one on the account's campaign (``POST /admin/campaigns/{id}/action``, keyed by
   :func:`campaign_key` of its stable id): it covers the members later scans add and the
   accounts that inherit the campaign's indicators;
2. the latest ``scan`` verdicts (its ``verdicts.parquet``, hot-reloaded when a scan rewrites it);
3. inheritance: a *new* account whose requests show a throttled campaign's indicators (the
   scan's ``indicators.parquet``) takes that campaign's action at once, capped by the policy
   (inherit.Matcher and inherit.Freshness: the rule the benchmark's replay measures);
4. the online limits (policy ``gateway.limits``): floods per account, subnet or card; per end
   user of a reseller (policy ``resellers.per_end_user_rate``).

A request of a key the scan recognised as a reseller's that names an end user is decided as
the entity ``<account>::<end user>`` the scan judged (gateway/resellers.py): its override (else
the account's), its verdict, or, for an end user the scan did not judge, the account's verdict.

The action taken is the strongest of 2-4 (an override replaces 2 and 3); an organisation on
the policy's allowlist is never taken beyond monitoring by 2 or 3. With the policy's
``gateway.findings_to_fallback``, a throttle from 2 or 3 is served by the fallback model instead
(a campaign then gets answers it cannot tell from the primary model's, where a 429 tells it that
it was caught), except where the verify rule takes the account (controls.step_up). Each
decision carries its reasons with numbers, as the scan's verdicts do; those stay in the log, the
store and the reports. A client learns only what it must to behave: a blocked request gets a
403 and a throttled one a 429 with Retry-After, each with a generic message and a support
reference (the exchange id, which leads support to the reasons); a fallback answer looks like
any other (server.py).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq

from distillguard.detect import inherit
from distillguard.gateway.limits import Counters
from distillguard.ingest import enrich
from distillguard.detect.policy import Policy
from distillguard.store.verdicts import ACTIONS, SEVERITY

log = logging.getLogger("distillguard.gateway")


@dataclass(frozen=True)
class Decision:
    action: str
    source: str  # override | verdict | inherited | limit | default
    reasons: tuple[str, ...] = ()
    campaign_id: str | None = None
    retry_after: float | None = None  # seconds, for throttle


ALLOW = Decision("allow", "default")


@dataclass(frozen=True)
class Refusal:
    """What a refused request is answered with (OpenAI error shape fields and headers), and
    the action it enforces (for the metrics, never sent)."""

    status: int
    kind: str
    code: str
    message: str
    headers: dict[str, str]
    action: str


def refusal(decision: Decision, fallback_model: str | None, throttle_retry_after: float,
            reference: str | None = None, verification: str | None = None) -> Refusal | None:
    """The answer to a request the decision refuses (block, throttle; fallback without a
    fallback model, the conservative reading of which is a throttle); None to serve it. One
    wording for the gateway and the LiteLLM plugin.

    The message is generic: the decision's reasons name campaigns, linked accounts, operators
    and their addresses, which would tell whoever runs the accounts what gave them away.
    ``reference`` (the exchange id) is what the client quotes to support; ``verification``, for
    verify, the reference of the verification the account is asked for (stable until an operator
    lifts it; gateway/controls.verification_reference), in its place."""
    action = decision.action
    if action == "fallback" and not fallback_model:
        action = "throttle"
    quote = f" and quote reference {reference}" if reference else ""
    if action == "block":
        return Refusal(403, "permission_error", "account_blocked",
                       f"This account cannot use the API. If you believe this is a mistake, contact support{quote}.",
                       {"x-should-retry": "false"}, "block")
    if action == "verify":
        ref = verification or reference
        return Refusal(403, "permission_error", "verification_required",
                       "This account must be verified before it can use the API again. Contact support to verify "
                       f"it{f' and quote verification reference {ref}' if ref else ''}.",
                       {"x-should-retry": "false"}, "verify")
    if action == "throttle":
        seconds = max(decision.retry_after or throttle_retry_after, 0.001)
        return Refusal(429, "rate_limit_error", "rate_limit_exceeded",
                       "Rate limit reached for requests from this account; retry after the time in the Retry-After "
                       f"header. If this persists, contact support{quote}.",
                       {"Retry-After": str(math.ceil(seconds)), "retry-after-ms": str(int(seconds * 1000))},
                       "throttle")
    return None


@dataclass(frozen=True)
class Override:
    action: str
    reason: str
    actor: str
    at: datetime

    def decision(self) -> Decision:
        return Decision(self.action, "override",
                        (f"operator override by {self.actor} at {self.at.isoformat()}: {self.reason}",))


#: the override key of a campaign (account ids never start with it: ``campaign_key`` refuses none,
#: the admin API refuses an account route for such an id)
CAMPAIGN_KEY_PREFIX = "campaign:"


def campaign_key(campaign_id: str) -> str:
    """The key under which a campaign's override is held beside the accounts' ones."""
    return CAMPAIGN_KEY_PREFIX + campaign_id


@dataclass
class Request:
    """What enforcement needs of one request."""

    account_id: str
    organization_id: str | None
    payment_fingerprint: str | None
    email_domain: str | None
    account_created_at: datetime | None
    client_ip: str | None
    system_prompt: str | None
    prompt: str | None
    at: datetime
    subnet: str | None = field(default=None)
    #: ``<account>::<end user>`` for a recognised reseller's request naming an end user: decided as that entity
    entity: str | None = field(default=None)

    def __post_init__(self) -> None:
        if self.subnet is None and self.client_ip:
            self.subnet = _subnet(self.client_ip)


@lru_cache(maxsize=1 << 16)
def _subnet(ip: str) -> str | None:
    """enrich.subnet_of, remembered: clients come back from the same addresses, and parsing
    an address costs more than the rest of the decision."""
    return enrich.subnet_of(ip)


class ScanOutputs:
    """The scan's verdicts and indicators in one directory, reloaded when either file changes."""

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = Path(directory) if directory else None
        self.verdicts: dict[str, Decision] = {}
        self.indicators = inherit.INDICATOR_SCHEMA.empty_table()
        self.as_of: str | None = None
        self.judged: set[str] = set()
        self._stamp: tuple | None = None

    def _files(self) -> tuple[Path, Path]:
        return self.directory / "verdicts.parquet", self.directory / "indicators.parquet"

    def stamp(self) -> tuple | None:
        if self.directory is None:
            return None
        try:
            return tuple((s.st_mtime_ns, s.st_size) for s in (os.stat(p) for p in self._files() if p.exists()))
        except OSError:
            return None

    def reload_if_changed(self) -> bool:
        stamp = self.stamp()
        if stamp is None or stamp == self._stamp:
            return False
        verdicts_path, indicators_path = self._files()
        try:
            table = pq.read_table(verdicts_path, columns=["account_id", "action", "campaign_id", "reasons", "as_of"])
            indicators = (pq.read_table(indicators_path) if indicators_path.exists()
                          else inherit.INDICATOR_SCHEMA.empty_table())
        except (OSError, ValueError) as exc:  # a scan writing right now: next check
            log.warning("verdicts: cannot read %s yet (%s)", self.directory, exc)
            return False
        verdicts = {}
        for account, action, campaign, reasons in zip(*(table[c].to_pylist() for c in
                                                       ("account_id", "action", "campaign_id", "reasons"))):
            if action != "allow" and action in SEVERITY:
                verdicts[account] = Decision(action, "verdict", tuple(reasons or ()), campaign)
        as_of = table["as_of"][0].as_py() if table.num_rows else None
        self.verdicts, self.indicators, self._stamp = verdicts, indicators, stamp
        self.as_of = as_of.isoformat() if as_of else None
        self.judged = set(table["account_id"].to_pylist())
        log.info("verdicts: loaded %d non-allow verdicts and %d indicators (scan as of %s)",
                 len(verdicts), indicators.num_rows, self.as_of)
        return True


class Enforcer:
    """Decides per request; holds the overrides, the inherited actions and the limits."""

    def __init__(self, policy: Policy, scan: ScanOutputs, counters: Counters,
                 first_seen: dict[str, datetime] | None = None) -> None:
        self.policy = policy
        self.scan = scan
        self.counters = counters
        self.overrides: dict[str, Override] = {}
        self.inherited: dict[str, Decision] = {}
        self.first_seen: dict[str, datetime] = dict(first_seen or {})
        self.allowlist = set(policy.allowlist_organizations)
        self.fresh = inherit.Freshness.of(policy.inherit)
        self.matcher: inherit.Matcher | None = None
        self.refresh()

    def refresh(self) -> bool:
        """Pick up a new scan; accounts it judged lose what they inherited (the scan has now
        judged them on their own evidence)."""
        if not self.scan.reload_if_changed() and self.matcher is not None:
            return False
        rule = self.policy.inherit
        self.matcher = (inherit.Matcher(self.scan.indicators, rule.min_families, fresh=self.fresh,
                                        habitual_uses=rule.habitual_uses, signature_words=rule.signature_words,
                                        scaffold_ngrams=rule.scaffold_ngrams)
                        if rule.enabled and self.scan.indicators.num_rows else None)
        self.inherited = {a: d for a, d in self.inherited.items() if a not in self.scan.judged}
        return True

    def set_policy(self, policy: Policy) -> None:
        self.policy = policy
        self.allowlist = set(policy.allowlist_organizations)
        self.fresh = inherit.Freshness.of(policy.inherit)
        self.matcher = None
        self.refresh()

    def verdict(self, who: str, account_id: str) -> Decision | None:
        """The scan's verdict of ``who`` (an account, or an end user entity of ``account_id``);
        for an entity the scan did not judge (an end user new since), the account's."""
        if who != account_id and who not in self.scan.judged:
            return self.scan.verdicts.get(account_id)
        return self.scan.verdicts.get(who)

    async def decide(self, r: Request) -> Decision:
        who = r.entity or r.account_id
        first = self.first_seen.setdefault(who, r.at)
        override = self.overrides.get(who) or (self.overrides.get(r.account_id) if r.entity else None)
        if override is not None:
            standing = override.decision()
        else:
            standing = self.verdict(who, r.account_id) or self.inherited.get(who) or ALLOW
            if SEVERITY[standing.action] < SEVERITY["throttle"]:
                standing = self._inherit(r, first) or standing
            held = self.overrides.get(campaign_key(standing.campaign_id)) if standing.campaign_id else None
            if held is not None:
                d = held.decision()
                standing = Decision(d.action, d.source, d.reasons, standing.campaign_id)
            elif r.organization_id in self.allowlist and SEVERITY[standing.action] > SEVERITY["monitor"]:
                standing = Decision("monitor", standing.source, (
                    *standing.reasons, f"organization {r.organization_id} is on the policy's allowlist: "
                    f"{standing.action} capped at monitor"), standing.campaign_id)
            elif standing.action == "throttle" and self.policy.gateway.findings_to_fallback:
                standing = self._served_by_fallback(r, standing)
        limited = await self._limits(r)
        decision = limited if limited and SEVERITY[limited.action] > SEVERITY[standing.action] else standing
        if decision.action == "throttle" and decision.retry_after is None:
            decision = Decision(decision.action, decision.source, decision.reasons, decision.campaign_id,
                                self.policy.gateway.throttle_retry_after_seconds)
        return decision

    def _served_by_fallback(self, r: Request, throttled: Decision) -> Decision:
        """``throttled`` (a verdict's or an inherited throttle), or fallback in its place, as
        ``gateway.findings_to_fallback`` asks; kept where the verify rule will raise it to verify,
        a stronger answer the operator chose for new accounts."""
        from distillguard.gateway.controls import step_up  # controls imports this module

        # an end user's creation time is not known (the key's is the reseller's), as in server.py
        if step_up(throttled, None if r.entity else r.account_created_at, r.at, self.policy).action == "verify":
            return throttled
        return Decision("fallback", throttled.source, (
            *throttled.reasons, "throttle served by the fallback model (policy gateway.findings_to_fallback)"),
            throttled.campaign_id)

    def _inherit(self, r: Request, first: datetime) -> Decision | None:
        # an end user's card, e-mail domain and creation are the reseller's: they would tie every end
        # user to every other (the scan leaves them out of its entities too, detect/resellers.py)
        who, card, domain, created = ((r.entity, None, None, None) if r.entity else
                                      (r.account_id, r.payment_fingerprint, r.email_domain, r.account_created_at))
        if self.matcher is None or not self.fresh.is_new(r.at, first, created):
            return None
        keys = inherit.request_keys(card, r.client_ip, r.system_prompt, r.prompt, domain, created)
        hit = self.matcher.observe(who, keys, r.at, first_seen=first, created=created)
        if hit is None:
            return None
        campaign, reasons = hit
        action = min(self.matcher.action[campaign], self.policy.inherit.action, key=SEVERITY.__getitem__)
        decision = Decision(action, "inherited", (
            f"new account inherits {action} from {campaign} (scan of {self.scan.as_of})", *reasons), campaign)
        self.inherited[who] = decision
        log.warning("inherited: %s takes %s from %s", who, action, campaign)
        return decision

    async def _limits(self, r: Request) -> Decision | None:
        worst: Decision | None = None
        now = r.at.timestamp()
        for rule in self.policy.gateway.limits:
            key = {"account": r.account_id, "subnet": r.subnet, "payment": r.payment_fingerprint}[rule.scope]
            if not key:
                continue
            count = await self.counters.hit(rule.scope, key, rule.window_seconds, now)
            if count > rule.max_requests and (worst is None or SEVERITY[rule.action] > SEVERITY[worst.action]):
                worst = Decision(rule.action, "limit", (
                    f"{count} requests from {rule.scope} {key} in the last {rule.window_seconds:g} s "
                    f"(limit {rule.max_requests})",), None, rule.window_seconds / 12)
        rate = self.policy.resellers.per_end_user_rate
        if r.entity and rate is not None:
            count = await self.counters.hit("end_user", r.entity, 60.0, now)
            if count > rate and (worst is None or SEVERITY[worst.action] < SEVERITY["throttle"]):
                worst = Decision("throttle", "limit", (
                    f"{count} requests from end user {r.entity} in the last 60 s (resellers.per_end_user_rate "
                    f"{rate})",), None, 60.0 / 12)
        return worst


assert set(ACTIONS) == set(SEVERITY)
