"""Inheritance: a new account that shows a known campaign's indicators takes its action at once.

Campaigns keep recruiting fresh accounts. A scan every few hours judges an account only once
it has traffic, so every new recruit would otherwise harvest freely until the next scan: in a
replay of ``alibaba-2026`` with a scan every six hours that was 8% of the campaign's
exchanges, each recruit's first session. The scan therefore exports each throttled campaign's
*indicators*: keys (a card, a client IP, a hosting /24 subnet, a system prompt, a scaffold
n-gram) that only the campaign's throttled members hold, and that at least ``min_holders`` of
them hold. The gateway (and the benchmark's replay, which models it) checks each new account's
requests against them and applies the campaign's action, capped by the policy, from the
request that completes the evidence.

Conservative, as everything that acts without a scan:

- only the campaign's keys: held by no account of the lookback outside the campaign (its
  weakly tied members aside, and new accounts that no clustering placed yet), or, for a system
  prompt or scaffold framing, by ``framing_share`` of throttled members with at most
  ``framing_outside`` of holders outside every campaign-sized cluster (a university NAT or a
  popular tool's system prompt is never one: see :func:`indicators`);
- only *new* accounts (first seen at most ``new_account_hours`` before the request, and created
  at most ``max_account_age_days`` before it where the creation time is known): the scan
  judges the others on all their evidence;
- the card alone suffices (a card used by a campaign's accounts and by nobody else), as does
  the campaign's own long system prompt used habitually (``signature_words``: its script's
  signature, see :class:`Matcher`); any other evidence must come from two independent families (account: a sign-up burst, the same
  e-mail domain in the same hour; network: IP or subnet; client: system prompt or scaffold
  framing), so that a residential neighbour of a proxy exit or a
  user who pasted a campaign's framing is not enough; a system prompt or framing counts
  only once it was in ``habitual_uses`` of the account's requests, as linkage holds them, and
  framing only once ``scaffold_ngrams`` distinct n-grams of it matched (one is a phrase
  anyone may type);
- the inherited action is at most ``inherit.action`` (throttle by default); the next scan
  judges the account on its own evidence.

The keys are the ones linkage.account_keys computes, so an indicator reads as evidence: "the
same card as 38 throttled accounts of campaign-…".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import ibis
import ibis.expr.types as ir
import pyarrow as pa
import pyarrow.compute as pc

from distillguard.detect import evidence
from distillguard.detect.evidence import HABITUAL
from distillguard.detect.evidence import KINDS as _KINDS
from distillguard.detect.extract import (  # noqa: F401 (re-exported)
    RequestFacts,
    signup_burst_key,
    system_prompt_key,
)
from distillguard.detect.policy import Inheritance
from distillguard.ingest import enrich
from distillguard.store.verdicts import SEVERITY, VERDICT_SCHEMA, severities

#: the key kinds a single request can show (evidence.Kind.inheritable), and the family of each
KINDS: tuple[str, ...] = evidence.INHERITABLE
FAMILY: dict[str, str] = {k: _KINDS[k].family for k in KINDS}

#: the policy's inheritance defaults: the one place they are set
_RULE = Inheritance()

INDICATOR_SCHEMA = pa.schema([
    ("campaign_id", pa.string()), ("action", pa.string()), ("kind", pa.string()), ("key", pa.string()),
    ("holders", pa.int64()),
])

#: the per-request keys of exchanges (exchange_keys)
KEY_SCHEMA = pa.schema([("row", pa.int64()), ("kind", pa.string()), ("key", pa.string())])


@dataclass(frozen=True)
class Freshness:
    """Which accounts are new enough to inherit: one rule for the gateway and the replay.

    A request's account is new when it was first seen at most ``first_seen_within`` before
    the request (its first request, if never seen before) and, where its creation time is
    known, created at most ``created_within`` before it. Campaigns recruit fresh accounts; a
    customer of long standing whose first request in the lookback comes from a campaign's
    residential neighbourhood is not a recruit, and the scan judges it on all its evidence.
    """

    first_seen_within: timedelta = timedelta(hours=Inheritance().new_account_hours)
    created_within: timedelta = timedelta(days=Inheritance().max_account_age_days)

    @classmethod
    def of(cls, rule) -> Freshness:
        """From the policy's ``inherit`` section (policy.Inheritance)."""
        return cls(timedelta(hours=rule.new_account_hours), timedelta(days=rule.max_account_age_days))

    def is_new(self, at: datetime, first_seen: datetime | None = None, created: datetime | None = None) -> bool:
        """Per request: ``first_seen`` None means this is the account's first request."""
        if first_seen is not None and at - first_seen > self.first_seen_within:
            return False
        return created is None or at - created <= self.created_within

    def filter(self, requests: pa.Table) -> pa.Table:
        """The rows of ``requests`` (timestamp, optional first_seen and account_created_at
        columns; a missing column or a null is unknown) whose account is new at that request:
        :meth:`is_new`, row by row, vectorised."""
        at = requests["timestamp"].cast(pa.timestamp("us", tz="UTC"))
        keep = pa.array([True] * requests.num_rows, pa.bool_())
        for column, within in (("first_seen", self.first_seen_within), ("account_created_at", self.created_within)):
            if column in requests.column_names:
                age = pc.subtract(at, requests[column].cast(pa.timestamp("us", tz="UTC")))
                young = pc.less_equal(age, pa.scalar(within, pa.duration("us")))
                keep = pc.and_kleene(keep, pc.or_kleene(pc.is_null(age), young))
        return requests.filter(keep)


def candidate_keys(held: ir.Table, members: ir.Table, min_holders: int, new: ir.Table | None = None,
                   outside_share: float = 0.0) -> ir.Table:
    """(kind, key, account_id, holders) of keys of the inheritable kinds that only accounts of
    campaign-sized clusters hold (``held``: linkage.ranked; ``members``: account_id, cluster).

    With ``new`` (account_id of the accounts the inheritance rule calls new at the scan,
    Freshness), holders of a habitual framing key that are new and in no such cluster do not
    count against it and are left out of ``holders``: a campaign recruits all the time, and
    its newest accounts hold its framing before any clustering has placed them; counting them
    would leave none of the campaign's widely used framing pure. Every other kind counts every
    holder, as it always did: a new customer's own sign-up hour or address must keep a key it
    shares with a campaign from becoming an indicator that it would then inherit from, and
    those keys need two families anyway.

    A habitual key (system prompt, scaffold framing) may have up to ``outside_share`` of its
    holders outside such clusters (see :func:`indicators`): a few of a campaign's quieter
    accounts that no clustering placed, where a popular tool's prompt has its many customers
    of standing, who form no campaign-sized cluster.

    The scan narrows these to the throttled members of one campaign once verdicts exist
    (:func:`indicators`); this step runs on the engine, over the linkage keys it already holds.
    """
    rows = held.filter(held.kind.isin(list(KINDS)) & (held.holders >= min_holders))
    rows = rows.select("kind", "key", "account_id").left_join(members, "account_id")
    rows = rows.drop([c for c in rows.columns if c.endswith("_right")])
    inside = rows.cluster.notnull()
    if new is not None:
        rows = rows.left_join(new.select("account_id").mutate(fresh=ibis.literal(True)), "account_id")
        rows = rows.drop([c for c in rows.columns if c.endswith("_right")])
        counts = inside | rows.fresh.isnull() | ~rows.kind.isin(list(HABITUAL))
    else:
        counts = ibis.literal(True)
    rows = rows.mutate(inside=inside, counts=counts)
    # sums of 0/1 integers: Spark does not sum booleans
    per_key = rows.group_by(["kind", "key"]).aggregate(
        n_in=rows.inside.cast("int64").sum(), holders=rows.counts.cast("int64").sum())
    # habitual framing: all but ``outside_share`` of its holders in such clusters (indicators
    # applies its share to the throttled members of one campaign); every other kind: all
    share = ibis.cases((per_key.kind.isin(list(HABITUAL)), 1.0 - outside_share), else_=1.0)
    pure = per_key.filter((per_key.n_in >= share * per_key.holders) & (per_key.holders >= min_holders))
    return rows.filter(rows.inside).join(pure, ["kind", "key"]).select("kind", "key", "account_id", "holders")


def common_domains(accounts: pa.Table, clustered: Iterable[str], new: Iterable[str], outside_share: float) -> set[str]:
    """E-mail domains customers use: of the accounts at the domain (``accounts``: account_id,
    email_domain; the ``new`` ones left out, as :func:`candidate_keys` leaves them out), more
    than ``outside_share`` are in no campaign-sized cluster (``clustered``).

    A sign-up hour at such a domain is never an indicator (:func:`indicators`): that only a
    campaign's accounts signed up at a webmail domain in one hour of the lookback is a fact of
    a quiet hour (of a scaled-down benchmark, above all), and the next customer to sign up there
    in a busy one is no recruit; in a 72-hour check of ``low-and-slow`` a developer who signed up
    at Gmail in such an hour inherited a throttle. A domain the operation registered for itself
    has no customers.
    """
    accounts = accounts.filter(pc.and_(accounts["email_domain"].is_valid(),
                                       pc.invert(pc.is_in(accounts["account_id"],
                                                          value_set=pa.array(list(new), pa.string())))))
    inside = pc.is_in(accounts["account_id"], value_set=pa.array(list(clustered), pa.string()))
    per_domain = pa.table({"domain": pc.utf8_lower(accounts["email_domain"]),
                           "outside": pc.cast(pc.invert(inside), pa.int64())}).group_by("domain").aggregate(
        [("outside", "sum"), ("outside", "count")])
    common = pc.greater(pc.cast(per_domain["outside_sum"], pa.float64()),
                        pc.multiply(pc.cast(per_domain["outside_count"], pa.float64()), outside_share))
    return set(per_domain["domain"].filter(common).to_pylist())


def indicators(candidates: pa.Table, verdicts: pa.Table, min_holders: int = 1, min_share: float = 1.0,
               common: set[str] | frozenset[str] = frozenset()) -> pa.Table:
    """INDICATOR_SCHEMA rows: keys whose holders are members of one campaign throttled (or
    stronger), at least ``min_holders`` of them throttled, with that campaign's action; a subnet
    only where it is a listed hosting range (:func:`neighbourhoods`), a sign-up hour only at a
    domain not in ``common`` (:func:`common_domains`).

    Every kind but habitual framing needs every holder to be a throttled member: a key that a
    customer, a weakly tied member (possibly a customer Leiden attached) or a member of another
    cluster holds is never an indicator. Habitual framing (HABITUAL) may also be held by the
    members the scan only monitors as weakly tied (scan._verdicts: an adaptive campaign's newest
    members share its framing before a scan has enough of their traffic), or needs only
    ``min_share`` of its holders to be the campaign's throttled members: an operation
    that sends its framing from a thousand accounts always has a few that no scan has tied
    yet (too quiet, or clustered apart), and one such account would otherwise keep its most
    used framing from ever being an indicator; a popular tool's or template's framing is held
    by customers far beyond that share. The inheritance rule (Matcher) acts on framing alone
    only for a long system prompt (its signature rule).
    """
    stopped = verdicts.filter(pc.and_(pc.greater_equal(severities(verdicts["action"]), SEVERITY["throttle"]),
                                      verdicts["campaign_id"].is_valid()))
    if candidates.num_rows == 0 or stopped.num_rows == 0:
        return INDICATOR_SCHEMA.empty_table()
    acting = set(stopped["campaign_id"].to_pylist())
    members = verdicts.filter(verdicts["campaign_id"].is_valid())
    members = members.filter(pc.is_in(members["campaign_id"], value_set=pa.array(sorted(acting), pa.string())))
    members = pa.table({
        "account_id": members["account_id"], "campaign_id": members["campaign_id"],
        "stopped": pc.cast(pc.greater_equal(severities(members["action"]), SEVERITY["throttle"]), pa.int64())})
    joined = candidates.join(members, "account_id", join_type="left outer")
    per_key = joined.group_by(["kind", "key"]).aggregate([
        ("campaign_id", "count"), ("campaign_id", "count_distinct"), ("holders", "max"), ("campaign_id", "min"),
        ("stopped", "sum")])
    holders = per_key["holders_max"]
    stopped_n = pc.fill_null(per_key["stopped_sum"], 0)
    habitual = pc.is_in(per_key["kind"], value_set=pa.array(list(HABITUAL), pa.string()))
    # every kind: every holder a throttled member of the one campaign...
    all_stopped = pc.equal(stopped_n, holders)
    # ...habitual framing: every holder its member (count of non-null campaign ids == holders),
    # or enough of them its throttled members
    members_only = pc.equal(per_key["campaign_id_count"], holders)
    most = pc.greater_equal(pc.cast(stopped_n, pa.float64()), pc.multiply(pc.cast(holders, pa.float64()), min_share))
    framing = pc.and_(habitual, pc.or_(members_only, most))
    keep = pc.and_(pc.and_(pc.or_(all_stopped, framing), pc.equal(per_key["campaign_id_count_distinct"], 1)),
                   pc.greater_equal(stopped_n, min_holders))
    per_key = per_key.filter(keep)
    per_key = per_key.filter(pc.invert(neighbourhoods(per_key["kind"], per_key["key"])))
    if common:
        domain = pc.utf8_lower(pc.replace_substring_regex(per_key["key"].cast(pa.string()), r"@[^@]*$", ""))
        webmail = pc.and_(pc.is_in(per_key["kind"], value_set=pa.array(evidence.with_form("signup_hour"), pa.string())),
                          pc.is_in(domain, value_set=pa.array(sorted(common), pa.string())))
        per_key = per_key.filter(pc.invert(webmail))
    # one action per campaign: the campaign's (scan._verdicts gives its members that action or monitor)
    action = dict(zip(stopped["campaign_id"].to_pylist(), stopped["action"].to_pylist()))
    out = pa.table({
        "campaign_id": per_key["campaign_id_min"],
        "action": pa.array([action[c] for c in per_key["campaign_id_min"].to_pylist()], pa.string()),
        "kind": per_key["kind"], "key": per_key["key"], "holders": per_key["stopped_sum"].cast(pa.int64()),
    }, schema=INDICATOR_SCHEMA)
    return out.sort_by([("campaign_id", "ascending"), ("kind", "ascending"), ("key", "ascending")])


def neighbourhoods(kinds: pa.ChunkedArray | pa.Array, keys: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray:
    """Which (kind, key) pairs are subnets outside every listed hosting range: residential and
    mobile neighbourhoods, never indicators.

    A datacenter /24 is one operator's rack; a residential /24 is a street of households, and
    a residential proxy's exits *are* households' connections (proxyware on their devices). That
    only the campaign's throttled exits used a neighbourhood in the lookback says nothing about
    the next customer who moves in: in 72-hour checks of ``residential-proxies`` two customers
    on such /24s inherited a campaign's throttle. The exit address itself (kind ``ip``) stays an
    indicator.
    """
    kinds = pa.chunked_array([kinds]).cast(pa.string())
    keys = pa.chunked_array([keys]).cast(pa.string())
    subnet = pc.is_in(kinds, value_set=pa.array(evidence.with_form("range"), pa.string()))
    bases = pc.replace_substring_regex(keys.filter(subnet), r"/\d+$", "")
    if len(bases) == 0:
        return pc.and_(subnet, False)
    table = enrich.ip_table(bases)
    hosted = table.filter(table["infra_category"].is_valid())["ip"]
    base_all = pc.replace_substring_regex(keys, r"/\d+$", "")
    return pc.and_(subnet, pc.invert(pc.is_in(base_all, value_set=hosted)))


def request_keys(payment_fingerprint: str | None, client_ip: str | None, system_prompt: str | None,
                 prompt: str | None, email_domain: str | None = None,
                 account_created_at: datetime | None = None) -> list[tuple[str, str]]:
    """(kind, key) of one request: what the gateway compares with the indicators (evidence.request_keys)."""
    return evidence.request_keys(RequestFacts(payment_fingerprint, client_ip, system_prompt, prompt, email_domain,
                                              account_created_at))


def exchange_keys(exchanges: pa.Table) -> pa.Table:
    """KEY_SCHEMA rows for a table of exchanges (row = position in ``exchanges``):
    :func:`request_keys` of each row (email_domain and account_created_at are optional columns)."""
    columns = ("payment_fingerprint", "client_ip", "system_prompt", "prompt", "email_domain", "account_created_at")
    values = [exchanges[c].to_pylist() if c in exchanges.column_names else [None] * exchanges.num_rows
              for c in columns]
    rows, kinds, keys = [], [], []
    for i, request in enumerate(zip(*values)):
        for kind, key in request_keys(*request):
            rows.append(i)
            kinds.append(kind)
            keys.append(key)
    return pa.table({"row": pa.array(rows, pa.int64()), "kind": pa.array(kinds, pa.string()),
                     "key": pa.array(keys, pa.string())}, schema=KEY_SCHEMA)


class Matcher:
    """The inheritance rule over one set of indicators, request by request (the gateway's form).

    ``observe(account, keys, at, ...)`` records one request (all its keys) and returns the
    campaign and reasons once a *new* account's (Freshness) requests so far hold that
    campaign's card, or keys of two independent families; None until then, and always None
    for an account that is not new.

    A key of a *habitual* kind (``habitual``: the system prompt and the scaffold framing)
    counts only once ``habitual_uses`` of the account's requests carried the campaign's keys
    of that kind. Those indicators say "only the campaign's accounts use this habitually"
    (linkage holds such keys at three uses and a tenth of the prompts), so one request is not
    the same evidence: in a replay two customers who once typed a chain-of-thought phrase the
    campaign's framing also uses, from a residential /24 the campaign's proxies shared, were
    stopped. A recruit's script sends its framing with every request, so it still matches
    within its first few.

    Scaffold framing counts only once the account's requests showed ``scaffold_ngrams``
    distinct scaffold indicators of the campaign: a script's framing sentence spans several
    n-grams the campaign alone uses, while a customer's own wording shares one with it by
    chance ("do not skip any"). (It does not help against a customer who pastes a whole public
    chain-of-thought sentence the campaign also uses; that customer needs a second family, and
    neither a residential neighbourhood nor a webmail sign-up hour is one: see
    :func:`neighbourhoods` and :func:`common_domains`.)

    A *signature*, a system prompt indicator of at least ``signature_words`` words (0: none)
    used habitually, suffices alone, as the card does: a short phrase is typed by chance, a
    campaign's own long system prompt only by its script (or by whoever copied it, and a
    prompt that many customers copied is not an indicator: see :func:`indicators`). An
    adaptive operation gives every account its own card, addresses and e-mail domain, so that
    its script's system prompt is the one thing a recruit shows at its first requests; in a
    replay of ``adaptive-2026`` every recruit leaked ~20 exchanges until a scan had enough of
    its traffic to tie it.
    """

    def __init__(self, table: pa.Table, min_families: int = _RULE.min_families, alone: tuple[str, ...] = evidence.ALONE,
                 fresh: Freshness | None = None, habitual: tuple[str, ...] = HABITUAL,
                 habitual_uses: int = _RULE.habitual_uses, signature_words: int = _RULE.signature_words,
                 scaffold_ngrams: int = _RULE.scaffold_ngrams) -> None:
        self.min_families = min_families
        self.scaffold_ngrams = scaffold_ngrams
        self.signature_words = signature_words
        self.alone = set(alone)
        self.fresh = fresh or Freshness.of(_RULE)
        self.habitual = set(habitual)
        self.habitual_uses = habitual_uses
        self.by_key: dict[tuple[str, str], tuple[str, int]] = {
            (k, v): (c, h) for c, k, v, h in zip(*(table[n].to_pylist() for n in ("campaign_id", "kind", "key",
                                                                                   "holders")))}
        self.action = dict(zip(table["campaign_id"].to_pylist(), table["action"].to_pylist()))
        self.seen: dict[str, dict[str, dict[str, tuple[str, int]]]] = {}  # account -> campaign -> family -> evidence
        self.uses: dict[tuple[str, str, str], int] = {}  # (account, campaign, habitual kind) -> requests
        self.ngrams: dict[tuple[str, str], set[str]] = {}  # (account, campaign) -> scaffold keys matched
        self.first_seen: dict[str, datetime] = {}

    def observe(self, account: str, keys: Iterable[tuple[str, str]], at: datetime,
                first_seen: datetime | None = None, created: datetime | None = None) -> tuple[str, list[str]] | None:
        """``keys``: every key of one request; ``first_seen``: the account's first request as
        the store knows it (else the first this matcher observed); ``created``: its creation
        time where known."""
        first = self.first_seen[account] = min(self.first_seen.get(account, at), at)
        if not self.fresh.is_new(at, first if first_seen is None else min(first_seen, first), created):
            return None
        counted: set[tuple[str, str]] = set()  # (campaign, habitual kind) counted for this request
        for kind, key in keys:
            hit = self.by_key.get((kind, key))
            if hit is None:
                continue
            campaign, holders = hit
            if kind in self.habitual:
                if (campaign, kind) not in counted:
                    counted.add((campaign, kind))
                    self.uses[(account, campaign, kind)] = self.uses.get((account, campaign, kind), 0) + 1
                if _KINDS[kind].ngrams:
                    self.ngrams.setdefault((account, campaign), set()).add(key)
                if self.uses[(account, campaign, kind)] < self.habitual_uses:
                    continue
                if _KINDS[kind].ngrams and len(self.ngrams[(account, campaign)]) < self.scaffold_ngrams:
                    continue
            uses = self.uses.get((account, campaign, kind))
            signature = _KINDS[kind].signature and 0 < self.signature_words <= len(key.split())
            family = "alone" if kind in self.alone or signature else FAMILY[kind]
            families = self.seen.setdefault(account, {}).setdefault(campaign, {})
            what = (f"the campaign's own {len(key.split())}-word {_KINDS[kind].wording}" if signature
                    else f"{kind}")
            shown = f"{key[:60]!r}"
            if _KINDS[kind].ngrams:
                ngrams = sorted(self.ngrams[(account, campaign)])
                what = f"{len(ngrams)} {kind} n-grams" if len(ngrams) > 1 else what
                shown = ", ".join(f"{k[:40]!r}" for k in ngrams[:3]) + (", ..." if len(ngrams) > 3 else "")
            families.setdefault(family, f"{what} {shown}" + (f" in {uses} requests" if uses else "")
                                + f", held by {holders} throttled accounts of {campaign}")
            if "alone" in families or len(families) >= self.min_families:
                return campaign, list(families.values())
        return None


def inherited(exchanges: pa.Table, table: pa.Table, as_of: datetime, cap: str,
              min_families: int = _RULE.min_families, alone: tuple[str, ...] = evidence.ALONE,
              fresh: Freshness | None = None, habitual_uses: int = _RULE.habitual_uses,
              signature_words: int = _RULE.signature_words, scaffold_ngrams: int = _RULE.scaffold_ngrams) -> pa.Table:
    """VERDICT_SCHEMA rows for the new accounts among ``exchanges`` (account_id, timestamp,
    payment_fingerprint, client_ip, system_prompt, prompt, optionally first_seen,
    email_domain and account_created_at; sent after the scan at ``as_of`` that produced the
    indicators ``table``) that inherit a campaign's action, each stamped with the time of the
    request that completed the evidence (that request is refused). Only requests of accounts
    new at the time (``fresh``, the rule the gateway's Matcher applies) count."""
    if table.num_rows == 0 or exchanges.num_rows == 0:
        return VERDICT_SCHEMA.empty_table()
    exchanges = (fresh or Freshness.of(_RULE)).filter(exchanges)
    if exchanges.num_rows == 0:
        return VERDICT_SCHEMA.empty_table()
    exchanges = exchanges.sort_by([("timestamp", "ascending"), ("account_id", "ascending")])
    keys = exchange_keys(exchanges)
    wanted = pa.table({"kind": table["kind"], "key": table["key"]})
    keys = keys.join(wanted, ["kind", "key"], join_type="inner").sort_by("row")
    # freshness is already applied row by row; the matcher only collects the evidence
    matcher = Matcher(table, min_families, alone, Freshness(timedelta.max, timedelta.max),
                      habitual_uses=habitual_uses, signature_words=signature_words,
                      scaffold_ngrams=scaffold_ngrams)
    accounts = exchanges["account_id"].to_pylist()
    times = exchanges["timestamp"].to_pylist()
    done: dict[str, tuple[datetime, str, list[str]]] = {}
    rows, kinds, values = (keys[n].to_pylist() for n in ("row", "kind", "key"))
    i = 0
    while i < len(rows):  # one observation per request, with all its matched keys
        row, j = rows[i], i
        while j < len(rows) and rows[j] == row:
            j += 1
        account = accounts[row]
        if account not in done:
            hit = matcher.observe(account, list(zip(kinds[i:j], values[i:j])), times[row])
            if hit is not None:
                done[account] = (times[row], *hit)
        i = j
    out = {name: [] for name in VERDICT_SCHEMA.names}
    for account, (when, campaign, reasons) in sorted(done.items()):
        action = min(matcher.action[campaign], cap, key=SEVERITY.__getitem__)
        out["account_id"].append(account)
        out["action"].append(action)
        out["score"].append(0.0)
        out["campaign_id"].append(campaign)
        out["reasons"].append([f"new account inherits {action} from {campaign} (scan of {as_of.isoformat()})",
                               *reasons])
        out["as_of"].append(when)
    return pa.table(out, schema=VERDICT_SCHEMA)
