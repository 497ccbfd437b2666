"""Actions from the calibrated tests and the policy's error budget.

The policy declares, per action, the false positives it accepts per organic entity
(policy.ErrorBudget); with N entities judged, an action may cost ``budget[action] x N`` expected
false positives in all. Each test result has a cost: a block whose ``c`` tied members have member
p-values ``p_i`` and whose corrected p-value is ``p`` costs ``p x c + sum p_i`` (all members false
if the block is null; each still false with its own p otherwise); a cohort window costs its chance
members ``n x pi`` plus ``p x X``. Results are accepted in order of their corrected p-value (ties
cheapest per entity first) while their summed cost fits the budget, strongest action first.
Nothing here is fitted to labels.

A block member counts only when its own p-value is at most ``budget[action] x N / holders``: tied in
one of the block's two families. A block reaches throttle only when its holders are also extreme in
behaviour against everyone else (a behaving block); co-location alone, which offices show too, is
monitor at most. A
group needs ``campaign.min_members`` accounts to reach more than monitor (a campaign is many
accounts); lone accounts are never acted on by these tests.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import sparse

from distillguard.detect import associates as associates_mod
from distillguard.detect import blocks as blocks_mod
from distillguard.detect import cohorts as cohorts_mod
from distillguard.detect import nulls
from distillguard.detect.arrays import distinct
from distillguard.detect import pairs as pairs_mod
from distillguard.detect.resellers import ENTITY_SEPARATOR
from distillguard.detect.evidence import (BICM, BINOMIAL_WINDOW, FAMILY_OF, INDEPENDENT_TIES, KINDS, ONE_OWNER,
                                          POPULATIONS, SHARED_WORDING)
from distillguard.detect.policy import Policy, Statistics
from distillguard.detect.signals import SIGNALS

ORDER = ("allow", "monitor", "throttle", "block")
#: the actions the tests can earn, strongest first
ACTIONS = ("block", "throttle", "monitor")
#: features that are functions of an arrival attribute (the account's age of its creation; how soon
#: it used a new model of when it first appeared: launch-day newcomers use the newest model; the
#: coefficient of variation of its gaps of how many gaps were seen: the newest arrivals have fewer,
#: and look regular by construction), so testing them against arrival windows would find arrival itself
ARRIVAL_FEATURES = ("account_age_days", "pivot_hours", "gap_cv")
#: the cohorts' combined feature: Fisher's statistic of an entity's tail shares over every signal
#: feature, for accounts each moderately extreme on several behaviours and on none alone
COMBINED_FEATURE = "combined_tail"
#: per entity, the accounts of it a result names where it names only some: an organisation holds
#: a wording when one of its accounts asks in it, and the evidence is about that account's requests
Restriction = tuple[tuple[int, tuple[str, ...]], ...]


@dataclass(frozen=True)
class Finding:
    """One validated test result and the action its p-value earns under the budget."""

    action: str
    test: str  # block or cohort
    null: str
    p_corrected: float
    budget: float  # the action's budget of expected false positives (rate x entities)
    reason: str
    entities: tuple[int, ...]
    cost: float  # the expected false positives accepting it cost
    #: the entities of the campaign the result belongs to without acting on them (a campaign's
    #: associates join its members): grouped with them, under one campaign id, and counted with
    #: them against the campaign-size cap
    joins: tuple[int, ...] = ()
    #: per entity whose accounts the evidence names only in part, those accounts (``Restriction``);
    #: an entity not listed is acted on with all its accounts
    only: Restriction = ()

    @property
    def grouped(self) -> tuple[int, ...]:
        """The entities the result groups: its own and those it joins."""
        return self.entities + self.joins if self.joins else self.entities

    def accounts(self, entity: int, accounts_of: dict[int, list[str]]) -> list[str]:
        """The accounts of ``entity`` the result acts on: all of them, or those it names (``only``)."""
        for e, named in self.only:
            if e == entity:
                return list(named)
        return accounts_of[entity]


@dataclass
class Evidence:
    """What the statistical tests found: per account its action and reasons, and the groups."""

    entities: list[str]
    accounts_of: dict[int, list[str]]
    findings: list[Finding]
    looks: dict[str, int] = field(default_factory=dict)
    capped: frozenset[str] = frozenset()  # accounts of allowlisted organisations: never raised
    edges: list[pairs_mod.PairEdge] = field(default_factory=list)  # validated pairs: they group, never act
    group_ties: list[pairs_mod.GroupTie] = field(default_factory=list)  # tied groups of findings: one id
    # by_account's result per min_members: the scan reads it three times, and at full scale it is
    # a pass over a hundred thousand finding entities (not an init field: dataclasses.replace of
    # other findings must not carry it over)
    _by_account: dict[int, dict[str, tuple[str, str, list[str]]]] = field(default_factory=dict, init=False,
                                                                         repr=False, compare=False)

    def co_located(self) -> frozenset[str]:
        """Accounts that a block finding at monitor holds: tied to a co-located group, whatever
        their behaviour."""
        return frozenset(a for f in self.findings if f.test == "block" and f.action == "monitor"
                         for e in f.entities for a in self.accounts_of[e])

    def groups(self, min_members: int) -> list[tuple[str, frozenset[str]]]:
        """(strongest action, accounts) of each group whose accounts the findings put at throttle or
        stronger (:meth:`by_account`; accounts of allowlisted organisations left out): what
        campaigns.reconcile names as one campaign each."""
        members: dict[str, set[str]] = {}
        action: dict[str, str] = {}
        for account, (act, gid, _) in self.by_account(min_members).items():
            if act in ("throttle", "block") and account not in self.capped:
                members.setdefault(gid, set()).add(account)
                action[gid] = max(action.get(gid, act), act, key=ORDER.index)
        return sorted(((action[g], frozenset(m)) for g, m in members.items()), key=lambda t: sorted(t[1]))

    def by_account(self, min_members: int) -> dict[str, tuple[str, str, list[str]]]:
        """account -> (action, group id, reasons), for accounts a finding reaches.

        Groups are the connected components of the findings at throttle or stronger (a monitor
        finding never joins two groups); a group of fewer than ``min_members`` entities (a declared
        organisation is one) is capped at monitor. A validated pair (pairs.py) between two entities
        that findings at throttle or stronger hold puts their groups under one campaign id, but
        the cap counts each group's own entities: a pair groups, it never raises an action. So does
        a group tie (pairs.group_ties): two groups whose members share rare tokens beyond chance.
        Monitor findings are attached to the accounts they name."""
        if min_members not in self._by_account:
            self._by_account[min_members] = self._group_accounts(min_members)
        return dict(self._by_account[min_members])

    def _group_accounts(self, min_members: int) -> dict[str, tuple[str, str, list[str]]]:
        """:meth:`by_account`, computed."""
        strong = [f for f in self.findings if f.action != "monitor"]
        held = {e for f in strong for e in f.entities}
        ties = [(e.a, e.b) for e in self.edges if e.a in held and e.b in held]
        ties += [(t.a, t.b) for t in self.group_ties if t.a in held and t.b in held]
        own_groups = _components([f.grouped for f in strong])
        size_of = {e: len(g) for g in own_groups for e in g}
        group_tie_of: dict[int, pairs_mod.GroupTie] = {}
        first_of = {e: first for g in own_groups for first in (min(g),) for e in g}
        for t in sorted(self.group_ties, key=lambda t: t.p_corrected):
            for e, first in first_of.items():
                if first in (t.a, t.b) and e not in group_tie_of:
                    group_tie_of[e] = t
        group_of: dict[int, tuple[int, str]] = {}
        for group in _components([f.grouped for f in strong] + ties):
            accounts = sorted(a for e in group for a in self.accounts_of[e])
            gid = "campaign-" + hashlib.blake2b(",".join(accounts).encode(), digest_size=5).hexdigest()
            for e in group:
                group_of[e] = (size_of[e], gid)
        tie_of: dict[int, pairs_mod.PairEdge] = {}
        for edge in self.edges:
            gid = group_of.get(edge.a, (0, ""))[1]
            if gid and gid == group_of.get(edge.b, (0, ""))[1]:
                for e in (edge.a, edge.b):
                    if e not in tie_of or edge.p_value < tie_of[e].p_value:
                        tie_of[e] = edge
        out: dict[str, tuple[str, str, list[str]]] = {}
        for f in self.findings:
            for e in f.entities:
                size, gid = group_of.get(e, (len(f.entities), ""))
                action = f.action if size >= min_members else min(f.action, "monitor", key=ORDER.index)
                capped = "" if action == f.action else (f"; capped at {action}: the group has fewer than "
                                                        f"{min_members} entities")
                line = f"{f.test} ({f.null} null): {f.reason}{capped}"
                for a in f.accounts(e, self.accounts_of):
                    held = out.get(a)
                    best = action if held is None else max(held[0], action, key=ORDER.index)
                    out[a] = (best, (held[1] if held and held[1] else gid), (held[2] if held else []) + [line])
        for e, edge in sorted(tie_of.items()):
            for a in self.accounts_of[e]:
                if a in out:
                    action, gid, lines = out[a]
                    out[a] = (action, gid, lines + [f"pair ({BICM.name} null): {edge.reason()}"])
        for e, tie in sorted(group_tie_of.items()):
            for a in self.accounts_of[e]:
                if a in out:
                    action, gid, lines = out[a]
                    out[a] = (action, gid, lines + [f"group ({BICM.name} null): {tie.reason()}"])
        return out


def evaluate(keys: pa.Table, feats: pa.Table, policy: Policy, as_of: datetime | None = None) -> Evidence:
    """Run the block and cohort tests over one scan's keys (account_id, kind, key) and features.

    With a ``judged_at`` feature (when each account reached the judging minimum of exchanges),
    the cohort windows are tested in observation views (cohorts.Observation) as of ``as_of``
    (default: the latest request seen)."""
    stats = policy.statistics
    accounts = feats.column("account_id").to_pylist()
    orgs = feats.column("organization_id").to_pylist()
    entity_key = [f"org:{o}" if o else f"account:{a}" for a, o in zip(accounts, orgs)]
    entities = sorted(set(entity_key))
    index = {e: i for i, e in enumerate(entities)}
    entity_of = {a: index[k] for a, k in zip(accounts, entity_key)}
    accounts_of: dict[int, list[str]] = {}
    for a in accounts:
        accounts_of.setdefault(entity_of[a], []).append(a)
    n = len(entities)
    # every test's result, per action, with the false positives accepting it would cost
    candidates: dict[str, list[Candidate]] = {a: [] for a in ACTIONS}

    tables = blocks_mod.kind_tables(keys, entity_of, n, stats.pair_budget)
    relayed = np.array([ENTITY_SEPARATOR in e for e in entities], dtype=bool)
    owned = _owned(tables, relayed)
    edges, pair_looks = pairs_mod.pair_tests(tables, n, stats.pair_q)
    blocks, block_looks = blocks_mod.block_tests(tables, stats.min_block_holders, stats.null_inflation, stats.alpha,
                                                 single=True)
    for b in blocks:
        if b.beyond_seed < 2:  # co-located in one family beyond the seed: tested on behaviour only
            continue
        # co-location alone is what an office shows too: worth watching (and, for a new account,
        # a verification: policy.verify), never an action; a behaving block may earn one below
        t = stats.budget.monitor * n / (stats.block_member_shares[0] * b.holders)
        tied = tuple(e for e, q in zip(b.tied, b.member_p) if q <= t)
        if len(tied) >= 2:
            candidates["monitor"].append(Candidate(b.p_corrected, "block", BICM.name, b.reason(),
                                                   f"{len(tied)} members each tied on their own (member p <= "
                                                   f"{t:.3g}); co-location alone, so monitor at most", tied,
                                                   b.p_corrected * len(tied) + b.holders * t))

    feature_values, attributes, judged = _entity_features(feats, entity_of, n, stats.cohort_min_exchanges)
    ent = _entity_index(feats, entity_of)
    observation = _observation(feats, ent, n, attributes["first_seen"], as_of, stats.cohort_horizons_hours)
    behaviour = {f: v for f, v in feature_values.items() if f in BEHAVIOUR_FEATURES}
    if behaviour:
        behaviour[COMBINED_FEATURE] = (_combined(behaviour), "above")
    tail = cohorts_mod.tail_shares(behaviour[COMBINED_FEATURE][0], "above") if behaviour else None
    # every account's creation, judged or not: an associate is typically too quiet to be judged
    associates = Associates(tables, _earliest(feats, "created_at", ent, n), relayed, tuple(stats.associate_hours),
                            judged, tail, tuple(stats.cohort_levels))
    wordings = _wording_groups(tables, stats.min_block_holders)
    holding = _holding_accounts(keys, accounts_of)
    # the cohorts' reference is refitted without what the scan's cohorts have found: a campaign's later
    # arrivals are tested against earlier arrivals less its already validated accounts
    excluded: frozenset[int] = frozenset()
    # the groups' null is refitted without what the scan's findings at throttle or stronger hold
    every_group = _group_nulls(tables, stats, attributes["first_seen"])
    group_nulls, validated = every_group, frozenset[int]()
    # ties do not depend on the reference; a co-located cohort counts on behaviour only
    tie_check = TieCheck(tables, stats.cohort_profile_level, component_members=policy.campaign.min_members,
                         shared_by_place=frozenset(f for f in feature_values if f not in BEHAVIOUR_FEATURES),
                         judged=judged)
    windows: tuple[tuple[frozenset[int], frozenset[int]], list[cohorts_mod.Cohort], cohorts_mod.ProfileCheck] | None \
        = None
    reuse = _Reuse(excluded)
    for _ in range(stats.cohort_refits + 1):
        if reuse.excluded != excluded:
            reuse = _Reuse(excluded, ties=reuse.ties)
        if windows is None or windows[0] != (excluded, validated):
            # the rate null's pace counts no entity a finding at throttle or stronger holds
            found_c = cohorts_mod.window_tests(feature_values, attributes, tuple(stats.cohort_levels),
                                               tuple(stats.cohort_windows_hours), excluded=excluded,
                                               alpha=stats.alpha, observation=observation, held=validated)
            # a window's members are checked (their profile, their ties) only when the budget reaches it
            windows = ((excluded, validated), found_c, cohorts_mod.ProfileCheck(
                feature_values, stats.cohort_profile_level, excluded, checks=len(found_c),
                arrival=attributes["first_seen"], attributes=attributes, observation=observation))
        _, found_c, profile = windows
        cohort_candidates = {a: list(c) for a, c in candidates.items()}
        _behaving_blocks(blocks, tables, behaviour, stats, n, excluded, cohort_candidates,
                         {f: v for f, v in feature_values.items() if f in ROTATION}, group_nulls, reuse,
                         attributes["first_seen"])
        _newcomer_wordings(wordings, behaviour, attributes["first_seen"], stats, excluded, cohort_candidates,
                           {f: v for f, v in feature_values.items() if f in ROTATION}, group_nulls, validated,
                           holding)
        for c in found_c:
            refine = _Refined(c, profile, tie_check)
            # the check keeps at least one in (1 + extremes) of the chance members
            least = c.chance_members * profile.least_survival(c) + c.p_corrected * c.extreme
            reason, cost, residual = c.reason(), _cost(c), c.residual
            # the three offers of one window: the checked member sets are within the whole
            nest = f"window {c.attribute} {c.width_hours:g}h {c.start:.0f} {c.horizon:.0f} {c.feature} {c.rank}/{c.reference}"
            # monitor restricts nobody: its windows keep every extreme member at the full cost,
            # so that the checks run only for the windows the small budgets reach
            cohort_candidates["monitor"].append(Candidate(c.p_corrected, "cohort", BINOMIAL_WINDOW.name, reason,
                                                          "", c.members, cost, residual=residual))
            # the restricting actions are offered the same results, each one's checks run once for both
            offers = (Candidate(c.p_corrected, "cohort", BINOMIAL_WINDOW.name, reason, "", c.members, cost, refine,
                                least, residual=residual, nest=nest, holds_nest=False),
                      # the members tied in place, each chance one charged as often as it would be tied
                      Candidate(c.p_corrected, "cohort", BINOMIAL_WINDOW.name, reason, "members tied in place",
                                c.members, cost, _Placed(c, tie_check), c.p_corrected * c.extreme, residual=residual,
                                nest=nest, holds_nest=False),
                      # every extreme entity a member, each chance one charged in full, less what
                      # the window's other offers were charged
                      Candidate(c.p_corrected, "cohort", BINOMIAL_WINDOW.name, reason, "every extreme entity a member",
                                c.members, cost, _Refined(c, None, tie_check), cost, residual=residual, nest=nest))
            for action in ACTIONS:
                if action != "monitor":
                    cohort_candidates[action].extend(offers)
        findings = _within_budget(cohort_candidates, n, policy, owned, associates)
        # refitted without what the cohort findings hold, not what blocks hold: a window's chance
        # members are costed at the window's chosen feature and level only, an underestimate when
        # its organic arrival could have been extreme on any feature; with the block findings'
        # accounts gone too, the reference's thresholds fell and small windows around a campaign
        # accepted benchmark runners that arrived the same day (6 of 294 on held-out strategies)
        found = frozenset(e for f in findings if f.action in ("throttle", "block") and f.test == "cohort"
                          for e in f.entities)
        held = frozenset(e for f in findings if f.action in ("throttle", "block") for e in f.entities)
        if found <= excluded and held <= validated:
            break
        excluded, validated = excluded | found, validated | held
        group_nulls = _without(every_group, validated)
    cohort_candidates, findings = _with_owners(cohort_candidates, findings, n, policy, owned)
    if stats.associate_action != "monitor":
        findings = _with_associates(cohort_candidates, findings, n, policy, owned, associates)
    allowed = set(policy.allowlist_organizations)
    capped = frozenset(a for a, o in zip(accounts, orgs) if o is not None and o in allowed)
    groups = _components([f.grouped for f in findings if f.action != "monitor"])
    ties = pairs_mod.group_ties(tables, groups, stats.alpha)
    return Evidence(entities, accounts_of, findings, {"block_seeds": block_looks, "cohort_windows": len(found_c),
                                                      "wordings": len(wordings),
                                                      "pairs": pair_looks, "group_pairs": len(groups) * (len(groups) - 1) // 2},
                    capped, edges, ties)


#: what an account asks for and how much, as opposed to where it connects from, when, and with which
#: software: the features a co-located organic group (an office, a campus) has no reason to share
BEHAVIOUR_FEATURES = ("exchanges_per_active_day", "first_turn_share", "long_max_tokens_share", "tools_per_request",
                      "output_input_ratio", "cot_elicitation_share", "targeted_share", "rubric_grading_share")
#: behaviour the client software sets rather than its user (the tools it offers, its max_tokens, how it
#: opens conversations, the work it is built for): not evidence about a group co-located in software
CLIENT_SHAPED = ("first_turn_share", "long_max_tokens_share", "tools_per_request", "targeted_share")
#: behaviour read off the words of the prompts (the areas they ask about, the reasoning and grading
#: they ask for): holders of one wording share it by construction (a framing n-gram "think step by
#: step" is itself a request for reasoning), so it is no evidence about them
WORDED = ("cot_elicitation_share", "targeted_share", "rubric_grading_share")
#: how many networks a member reaches the service from: each member of a group rotating through
#: many subnets is what a proxy pool gives, not what an office's or a campus's one egress does. A
#: group co-located in the network family shares its place's networks by construction, so there
#: it is no evidence about the group
ROTATION = ("distinct_subnets",)


def _wording_groups(tables: list[blocks_mod.KindTable], min_holders: int) -> list[tuple[str, str, np.ndarray]]:
    """(kind, token, holders) of every wording that seeds blocks (a prompt text kind: Kind.text),
    each holder set once (the n-grams of one template and its system prompt are one group)."""
    groups: dict[tuple[int, ...], tuple[str, str]] = {}
    for table in tables:
        if not KINDS[table.kind].text:
            continue
        for token, members in blocks_mod.holder_groups(table, min_holders):
            key = tuple(members.tolist())
            if key not in groups or (table.kind, token) < groups[key]:
                groups[key] = (table.kind, token)
    return sorted(((kind, token, np.asarray(key, dtype=np.int64)) for key, (kind, token) in groups.items()),
                  key=lambda g: (g[0], g[1]))


def _holding_accounts(keys: pa.Table, accounts_of: dict[int, list[str]]
                      ) -> Callable[[str, str, tuple[int, ...]], Restriction]:
    """``holding(kind, token, entities)``: of ``entities``, those with several accounts (an
    organisation) not all of which hold the prompt text ``token`` of ``kind``, each with the
    accounts that do (sorted). Read off ``keys`` (account_id, kind, key): the organisations'
    prompt text keys once, on first use, and each token's holders among them once."""
    several = {e: a for e, a in accounts_of.items() if len(a) > 1}
    theirs: list[pa.Table] = []  # the organisations' accounts' prompt text keys, once loaded
    held: dict[tuple[str, str], frozenset[str]] = {}

    def holding(kind: str, token: str, entities: tuple[int, ...]) -> Restriction:
        mine = [e for e in entities if e in several]
        if not mine:
            return ()
        if not theirs:
            accounts = pa.array(sorted({a for e in several for a in several[e]}), pa.string())
            text = pa.array(sorted(k for k, v in KINDS.items() if v.text), pa.string())
            theirs.append(keys.filter(pc.and_(pc.is_in(keys.column("account_id"), value_set=accounts),
                                              pc.is_in(keys.column("kind"), value_set=text))))
        if (kind, token) not in held:
            rows = theirs[0].filter(pc.and_(pc.equal(theirs[0].column("kind"), kind),
                                            pc.equal(theirs[0].column("key"), token)))
            held[kind, token] = frozenset(rows.column("account_id").to_pylist())
        holders = held[kind, token]
        out = []
        for e in sorted(mine):
            named = tuple(sorted(a for a in several[e] if a in holders))
            if named and len(named) < len(several[e]):
                out.append((e, named))
        return tuple(out)

    return holding


def _newcomer_wordings(groups: list[tuple[str, str, np.ndarray]], behaviour: dict[str, tuple[np.ndarray, str]],
                       first_seen: np.ndarray, stats: Statistics, excluded: frozenset[int],
                       candidates: dict[str, list[Candidate]],
                       rotation: dict[str, tuple[np.ndarray, str]] | None = None,
                       group_nulls: dict[str, cohorts_mod.GroupNull] | None = None,
                       validated: frozenset[int] = frozenset(),
                       holding: Callable[[str, str, tuple[int, ...]], Restriction] | None = None) -> None:
    """The holders of one wording (a system prompt, a framing n-gram) that arrived later than the
    population and behave unlike it, tested as a group.

    Accounts bought one by one share no card, address or clock, and arrive spread over the window,
    so neither blocks nor arrival windows see them; an operation that gives them one template to
    ask with still makes them holders of one wording. Sharing a wording is not evidence in itself
    (a public tool's system prompt, a benchmark's framing), and its holders share what their words
    set (WORDED) and what their software sets (CLIENT_SHAPED). The group's null: its holders are
    exchangeable with every other entity in when they were first seen and in the remaining
    behaviour. Group tests (cohorts.group_behaviour, beta-binomial counts of extremes), each
    corrected for its (feature, level) looks: the holders extreme in behaviour, and either first
    seen later than the entities as extreme or each reaching the service from more networks than
    the population and the groups like it (``rotation``, against ``group_nulls`` of the wording's
    kind: what a proxy pool gives bought accounts that arrive like anyone's) while its holders
    extreme in behaviour reach more networks than the entities as extreme outside it do (less
    the entities findings hold and the holders of every group that rotates as a group, so that a
    campaign asking in many wordings is not its own groups' reference; the larger of the two: an app's audience mixes
    heavy backends and rotating phone users, extreme on both as a group, while its heavy holders
    rotate as other heavy entities do), the smaller of those two routes times 2; the group's
    p-value is the larger of behaviour's and that (intersection-union:
    both must be surprising, as a public template's users are the population's own, present from
    the start), corrected for every wording tested. Each route that passes offers its members
    (:func:`_wording_offers`), priced as behaving blocks price theirs; of an organisation, on the
    accounts whose requests hold the wording only (``holding(kind, token, kept)``:
    :func:`_holding_accounts`)."""
    if not groups:
        return
    judged_on = {f: v for f, v in behaviour.items()
                 if f not in CLIENT_SHAPED and f not in WORDED and f != COMBINED_FEATURE}
    if not judged_on:
        return
    judged_on[COMBINED_FEATURE] = (_combined(judged_on), "above")
    ranked = cohorts_mod.ranked(judged_on, excluded)
    levels = tuple(stats.cohort_levels)
    rotated = cohorts_mod.ranked(rotation or {}, excluded)
    usable = np.ones(first_seen.size, dtype=bool)
    usable[list(excluded)] = False
    rotation_values = np.asarray(rotation[ROTATION[0]][0], dtype=float) if rotation and ROTATION[0] in rotation \
        else None
    routes = 2 if rotated else 1  # Bonferroni over the two routes looked at

    def route(gb: cohorts_mod.GroupBehaviour, q: float) -> float:
        """Behaviour and one route both surprising, corrected for the routes and every wording."""
        return float(nulls.bonferroni(max(gb.p_corrected, min(1.0, routes * q)), len(groups)))

    tested = []
    for kind, token, members in groups:
        gb = cohorts_mod.group_behaviour(ranked, members, levels)
        if gb is None or gb.p_corrected * len(groups) > stats.alpha:
            continue
        late = _later_than_alike(ranked[gb.feature], members, gb.members, first_seen, usable, levels)
        # or each holder reaching the service from more networks than the population and than
        # groups like it do: what a proxy pool gives, which neither words nor software set
        rot = (cohorts_mod.group_behaviour(rotated, members, levels, (group_nulls or {}).get(kind),
                                           before=_first_arrival(first_seen, members))
               if rotated else None)
        tested.append((kind, token, members, gb, late, rot))
    # the matched rotation reference leaves out the holders of every group that behaves and rotates
    # as a group, and what the scan's findings hold: a campaign asking in many wordings would
    # otherwise be its own groups' reference, as heavy and rotating as they are
    reference = usable.copy()
    reference[list(validated)] = False
    for _, _, members, gb, _, rot in tested:
        if rot is not None and route(gb, rot.p_corrected) <= stats.alpha:
            reference[members] = False
    for kind, token, members, gb, late, rot in tested:
        # and its extreme holders rotating more than the entities as extreme outside it: an app's
        # audience mixes heavy backends (extreme on volume) with phone users (rotating), so the
        # group is extreme on both while its heavy holders rotate as heavy entities do; a pool's
        # accounts do both at once (looked at only where the group rotates as a group)
        alike = (_later_than_alike(ranked[gb.feature], members, gb.members, rotation_values, reference, levels,
                                   ROTATION[0])
                 if rot is not None and rotation_values is not None and route(gb, rot.p_corrected) <= stats.alpha
                 else None)
        second = max(rot.p_corrected, alike.p_corrected) if alike is not None else 1.0
        by_arrival = route(gb, late.p_corrected)
        by_rotation = route(gb, second) if alike is not None else 1.0
        p = min(by_arrival, by_rotation)
        if p > stats.alpha:
            continue
        cuts = cohorts_mod.extremes(ranked[gb.feature], members, _member_levels(stats))
        matched = (f", and its extreme holders rotating more than the entities as extreme outside it, less those "
                   f"held or in a group rotating as a group: {alike.reason()}" if alike is not None else "")
        rotating = (f"; or its holders rotating through networks: {rot.reason()}{matched}; the smaller of the two "
                    f"routes corrected for both p={min(1.0, routes * min(late.p_corrected, second)):.3g}"
                    if rot is not None else "")
        reason = (f"wording: {len(members)} entities hold the {KINDS[kind].wording} {token!r}; "
                  f"behaviour: {gb.reason()}; its extreme holders first seen later than the entities as "
                  f"extreme outside it: {late.reason()}{rotating}; "
                  f"larger of the two corrected for {len(groups)} wordings tested p={p:.3g}")
        # each route that passes on its own offers its members (_wording_offers)
        named = (None if holding is None else
                 lambda kept, kind=kind, token=token: holding(kind, token, kept))
        if by_arrival <= stats.alpha:
            _wording_offers(by_arrival, cuts, _later_alike(ranked[gb.feature], first_seen, members, usable,
                                                           _member_levels(stats)),
                            reason, gb.feature, candidates, "first seen", named)
        if by_rotation <= stats.alpha:
            _wording_offers(by_rotation, cuts, _rotating_alike(ranked[gb.feature], rotated, members, usable,
                                                               _member_levels(stats)),
                            reason, gb.feature, candidates, holding=named)


#: per behaviour cut's extreme holders, each level ``L2`` of the second test (rotation, arrival),
#: the holders beyond it and whether the level is against the entities as extreme (True) or
#: against every entity (False)
Beyond = Callable[[np.ndarray], list[tuple[float, frozenset[int], bool]]]


def _by_rank(rank: cohorts_mod.Ranked) -> np.ndarray:
    """The usable entities of ``rank`` in its descending order."""
    ids = np.flatnonzero(rank.position >= 0)
    order = np.empty(rank.descending.size, dtype=np.int64)
    order[rank.position[ids]] = ids
    return order


def _as_extreme(rank: cohorts_mod.Ranked, order: np.ndarray, extreme: np.ndarray, outside: np.ndarray
                ) -> np.ndarray:
    """The entities ``outside`` a group at least as extreme on ``rank``'s feature as the least
    extreme of its ``extreme`` entities, read off the sorted order (no pass over every entity)."""
    least = float(np.nan_to_num(rank.oriented[extreme], nan=-np.inf).min())
    alike = order[:int(np.searchsorted(-rank.descending, -least, side="right"))]
    return alike[outside[alike]]


def _levels_against(values: np.ndarray, extreme: np.ndarray, reference: np.ndarray, levels: tuple[float, ...]
                    ) -> list[tuple[float, frozenset[int]]]:
    """Per distinct rank ``k`` = floor(level (r + 1)) of the levels, as cohorts.extremes reads
    them: (``k / (r + 1)``, the ``extreme`` entities above the ``k``-th largest of the
    ``reference``'s ``r`` values). NaN values are no values."""
    ref = values[reference]
    ref = -np.sort(-ref[~np.isnan(ref)])
    mine = values[extreme]
    judged, mine = extreme[~np.isnan(mine)], mine[~np.isnan(mine)]
    r = ref.size
    if r == 0 or mine.size == 0:
        return []
    return [(k / (r + 1), frozenset(judged[mine > ref[k - 1]].tolist()))
            for k in cohorts_mod.level_ranks(r, levels)]


def _rotating_alike(rank: cohorts_mod.Ranked, rotated: dict[str, cohorts_mod.Ranked],
                    members: np.ndarray, usable: np.ndarray, levels: tuple[float, ...]) -> Beyond:
    """Which of a wording group's extreme holders rotate through networks, at each level ``L2``,
    against two references: every entity outside the group, and the entities outside it that
    behave as they do (those at least as extreme on ``rank``'s feature as the least extreme of
    them, as :func:`_later_than_alike` matches arrival). Heavy users reach the service from more
    networks than casual ones, so against the whole population an organic holder extreme on
    behaviour rotates more often than ``L2`` and the two cuts' chances do not multiply; against
    the entities as extreme it rotates at ``L2`` by exchangeability, whatever the correlation, and
    they do (:func:`_wording_offers`). The matched reference is smaller, so its levels are
    coarser: both are offered."""
    if not rotated:
        return lambda extreme: []
    population = next(iter(rotated.values()))
    everyone = [(k / (r + 1), frozenset(judged[above].tolist()), False)
                for k, r, judged, above in cohorts_mod.extremes(population, members, levels)]
    matched = _beyond_alike(rank, population.oriented, members, usable, levels)
    return lambda extreme: everyone + matched(extreme) if extreme.size else []


def _later_alike(rank: cohorts_mod.Ranked, first_seen: np.ndarray, members: np.ndarray, usable: np.ndarray,
                 levels: tuple[float, ...]) -> Beyond:
    """Which of a wording group's extreme holders were first seen late, at each level ``L2``,
    against the entities outside the group as extreme as they are (the reference of the arrival
    test, :func:`_later_than_alike`): by exchangeability with them an organic holder is that late
    with chance ``L2``."""
    return _beyond_alike(rank, first_seen, members, usable, levels)


def _beyond_alike(rank: cohorts_mod.Ranked, values: np.ndarray, members: np.ndarray, usable: np.ndarray,
                  levels: tuple[float, ...]) -> Beyond:
    """Per set of a group's extreme holders, which are beyond each level of ``values`` (larger
    is further) against the entities outside the group as extreme on ``rank``'s feature."""
    outside = usable.copy()
    outside[members] = False
    order = _by_rank(rank)

    def beyond(extreme: np.ndarray) -> list[tuple[float, frozenset[int], bool]]:
        if extreme.size == 0:
            return []
        reference = _as_extreme(rank, order, extreme, outside)
        return [(level, held, True) for level, held in _levels_against(values, extreme, reference, levels)]

    return beyond


def _wording_offers(p: float, cuts: list[tuple[int, int, np.ndarray, np.ndarray]],
                    shown: Beyond, reason: str, feature: str,
                    candidates: dict[str, list[Candidate]], second: str = "distinct subnets",
                    holding: Callable[[tuple[int, ...]], Restriction] | None = None) -> None:
    """A wording group's member offers, each distinct set once at its cheapest: at each member level
    ``L`` (``cuts``: cohorts.extremes), the holders extreme on ``feature`` that are also beyond a
    level ``L2`` on what the group's second test was (``second``; ``shown`` gives the levels and
    who is beyond each): first seen late (:func:`_later_alike`) or rotating
    (:func:`_rotating_alike`), at ``p`` per member plus the organic holders expected among them.
    Against every entity, the extreme holders not beyond ``L2`` estimate the organic ones among
    those that are (``L2 / (1 - L2)`` each), added to ``L / (1 - L)`` per holder not extreme.
    Against the entities as extreme, an organic holder is kept with chance ``L`` x ``L2``, and the
    organic holders among the extreme are estimated twice, by the holders not extreme (``L / (1 -
    L)`` each) and by the extreme holders not beyond ``L2`` (``1 / (1 - L2)`` each): the larger of
    the two, times ``L2``, is what the kept cost. Never every extreme holder at the first estimate
    alone: the holders of a public prompt whose words set what its users ask for ("reply with a
    single valid JSON object") are all extreme on behaviour, so none is left to estimate them. By
    rotation, at tag detector-2026-12-05j, 13 organic holders of that prompt were offered beside 25
    rotating campaign ones; by arrival, at tag detector-2026-12-06f, 19 beside 23 campaign ones
    whose arrivals made the group late. The second estimate prices them.

    ``holding(kept)``: of the kept entities that are organisations, the accounts whose requests
    hold the wording where not all do (Finding.only); an offer acts on those accounts only. An
    organisation is one entity, judged on its accounts' mean behaviour, and holds the wording when
    one of its accounts asks in it: at organic x10, an office organisation of 34 accounts, one of
    which asked six prompts with the framing n-gram a campaign used, was blocked whole."""
    offers: dict[tuple[int, ...], tuple[float, float, int, float, int, bool]] = {}
    for k, r, judged, above in cuts:
        level = k / (r + 1)
        extreme_ids = judged[above]
        extreme = tuple(int(e) for e in extreme_ids)
        others = int(judged.size - len(extreme))
        for level2, rotating, matched in shown(extreme_ids):
            kept = tuple(e for e in extreme if e in rotating)
            if len(kept) < 2:
                continue
            hidden = len(extreme) - len(kept)
            organic = level / (1 - level) * others
            if matched:
                organic = max(organic, hidden / (1 - level2)) * level2
            else:
                organic += level2 / (1 - level2) * hidden
            cost = p * len(kept) + organic
            if kept not in offers or cost < offers[kept][0]:
                offers[kept] = (cost, level, others, level2, hidden, matched)
    for kept, (cost, level, others, level2, hidden, matched) in offers.items():
        note = (f"{len(kept)} holders above the top {level:.3g} of the other entities on {feature}, beside {others} "
                f"that are not (so {level / (1 - level) * others:.3g} organic holders expected among them by "
                f"chance)")
        if matched:
            note += (f"; of those above it, the {len(kept)} also above the top {level2:.3g} on {second} "
                     f"among the entities as extreme, beside {hidden} that are not (so "
                     f"{cost - p * len(kept):.3g} organic holders expected among the kept)")
        elif hidden:
            note += (f"; of those above it, the {len(kept)} also above the top {level2:.3g} on {second}, "
                     f"beside {hidden} that are not (so {level2 / (1 - level2) * hidden:.3g} more)")
        only = holding(kept) if holding is not None else ()
        if only:
            named = sum(len(a) for _, a in only)
            note += (f"; of {len(only)} organisation{'s' if len(only) > 1 else ''} among them, only the {named} "
                     f"account{'s' if named > 1 else ''} whose requests hold it")
        for action in ACTIONS:
            candidates[action].append(Candidate(p, "wording", SHARED_WORDING.name, reason, note, kept, cost,
                                                only=only))


@dataclass(frozen=True)
class Later:
    """Whether a group's extreme entities were first seen later than the entities that behave as
    they do: two statistics of one null (the group exchangeable with them in arrival), the count
    above the reference's ``k``-th latest at each level and the rank sum, Bonferroni over the two.
    The count sees a burst among the latest arrivals; the rank sum a group spread over the
    window's second half, which no single level separates from the reference's late tail."""

    count: cohorts_mod.GroupBehaviour | None
    ranks: nulls.RankSum

    @property
    def p_corrected(self) -> float:
        count = self.count.p_corrected if self.count is not None else 1.0
        return float(min(1.0, 2.0 * min(count, self.ranks.p_value)))

    def reason(self) -> str:
        count = self.count.reason() if self.count is not None else "no extreme arrival counted"
        return f"{count}; {self.ranks.reason()}; the smaller of the two corrected for both p={self.p_corrected:.3g}"


def _later_than_alike(rank: cohorts_mod.Ranked, members: np.ndarray, counted: tuple[int, ...],
                      values: np.ndarray, usable: np.ndarray, levels: tuple[float, ...],
                      name: str = "first_seen") -> Later:
    """Whether a group's ``counted`` entities (its extreme ones on ``rank``'s feature) were first
    seen later than the entities outside the group that behave alike: those at least as extreme on
    that feature as the least extreme counted entity (:class:`Later`). Against the whole
    population a public tool's new users, or benchmark runners after a model release, look late
    (casual users were there from the start); against the entities as extreme as they are they
    arrive as the tool's other heavy users do. The reference is matched to the group, so a group
    made more extreme is compared with fewer, more extreme entities: the test loses power, never
    validity. ``values`` is when each entity was first seen, or any other value where larger is
    further (``name``: the networks reached), tested the same way."""
    inside = np.zeros(values.size, dtype=bool)
    inside[members] = True
    counted_ids = np.asarray(counted, dtype=np.int64)
    oriented = np.nan_to_num(rank.oriented, nan=-np.inf)
    alike = usable & ~inside & (oriented >= oriented[counted_ids].min())
    reference = values[alike]
    mine = values[counted_ids]
    ranks = nulls.rank_sum(mine[~np.isnan(mine)], reference[~np.isnan(reference)])
    alike[counted_ids] = True
    arrival = cohorts_mod.ranked({name: (np.where(alike, values, np.nan), "above")})
    return Later(cohorts_mod.group_behaviour(arrival, counted_ids, levels), ranks)


#: a cohort's members after a check, the reason and the cost that say so (None: too few remain)
Checked = tuple[tuple[int, ...], str, float] | None


@dataclass(eq=False, slots=True)
class _Refined:
    """The cohort's members after the profile and tie checks, its reason and its cost (chance
    members that survive the checks, plus every member if the window is null), computed on the
    first call. One object per offer, not a closure: a full-scale scan offers tens of thousands of
    windows, and each closure's cells are objects the garbage collector walks."""

    c: cohorts_mod.Cohort
    profile: cohorts_mod.ProfileCheck | None
    ties: TieCheck
    done: tuple[Checked] | None = None

    def __call__(self) -> Checked:
        if self.done is None:
            kept = self.profile(self.c) if self.profile is not None else self.c
            kept = self.ties(kept) if kept is not None else None
            self.done = (None if kept is None else (kept.members, kept.reason(), _cost(kept)),)
        return self.done[0]


@dataclass(eq=False, slots=True)
class _Placed:
    """The cohort's members tied in place (TieCheck.placed), its reason and its cost, computed on
    the first call."""

    c: cohorts_mod.Cohort
    ties: TieCheck
    done: tuple[Checked] | None = None

    def __call__(self) -> Checked:
        if self.done is None:
            c, kept = self.c, self.ties.placed(self.c)
            self.done = (None if kept is None else (
                kept.members, f"{kept.reason()}; {len(kept.members)} of its {c.extreme} extreme entities tied to "
                f"the others in place (addresses, payment), as a share {kept.survival / c.survival:.3g} of the "
                f"judged entities outside it are: its chance members charged at that share",
                _cost(kept)),)
        return self.done[0]


def _cost(c: cohorts_mod.Cohort) -> float:
    """A cohort window's expected false positives: its chance members (Cohort.chance_members), plus
    all its extremes if the window is null; the campaign's own members are not charged beyond a
    typical window's arrivals, so a bigger burst never costs more."""
    return c.chance_members + c.p_corrected * c.extreme


def _behaving_blocks(blocks: list[blocks_mod.Block], tables: list[blocks_mod.KindTable], behaviour: dict[str, tuple[np.ndarray, str]], stats: Statistics,
                     n: int, excluded: frozenset[int], candidates: dict[str, list[Candidate]],
                     rotation: dict[str, tuple[np.ndarray, str]] | None = None,
                     group_nulls: dict[str, cohorts_mod.GroupNull] | None = None,
                     reuse: _Reuse | None = None, first_seen: np.ndarray | None = None) -> None:
    """Blocks whose seed holders are also extreme in behaviour, with every member tied in one of
    the block's two families and itself extreme on the behaviour the block was found on: a
    co-located group that behaves like the population (an office) does not pass, and in a block
    the size of a cloud provider's network, where a campaign makes the holders' behaviour extreme,
    the organic users tied to it by a common client string or company card do not either. A
    member's level of extremeness is priced: the tied members that do not reach it estimate the
    organic ones among the tied, each of which reaches it by chance with that probability. Against
    the population of groups, a block is tested as the groups stood before its first holder was
    seen (``first_seen``; cohorts.GroupNull); its holders tied in a place also against the groups
    of that place's tokens (:func:`_tied_in_place`)."""
    if not behaviour:
        return
    unworded = {f: v for f, v in behaviour.items() if f not in CLIENT_SHAPED and f not in WORDED
                and f != COMBINED_FEATURE}
    if unworded:
        unworded[COMBINED_FEATURE] = (_combined(unworded), "above")
    if reuse is None or reuse.excluded != excluded:
        reuse = _Reuse(excluded, ties=reuse.ties if reuse is not None else None)
    if reuse.ties is None:
        reuse.ties = _Ties(tables)
    if not reuse.rankings:
        reuse.rankings = {"every": cohorts_mod.ranked(behaviour, excluded),
                          "words_free": cohorts_mod.ranked(unworded, excluded),
                          "rotated": cohorts_mod.ranked(rotation or {}, excluded)}
    every, words_free, rotated = (reuse.rankings[k] for k in ("every", "words_free", "rotated"))
    rare_cut = {t.kind: t.rare_max_degree for t in tables}
    if group_nulls is None:
        group_nulls = _group_nulls(tables, stats)
    # a population (an autonomous system: a network operator's customers), or a seed over the
    # kind's rare cut, is not a place: its holders differ from everyone else in composition (a
    # cloud provider's network hosts the heavy batch jobs and backends), so their behaviour is no
    # evidence about a group; such a block stays co-location (monitor), and is no look of this
    # test (which blocks are tested depends on their seeds only, never on behaviour)
    blocks = [b for b in blocks if b.seed_kind not in POPULATIONS and b.holders <= rare_cut.get(b.seed_kind, 0)]
    looks = _kind_shares([b.seed_kind for b in blocks])
    behaving: list[tuple[blocks_mod.Block, cohorts_mod.GroupBehaviour, float, cohorts_mod.Ranked]] = []
    for b in blocks:
        families = {FAMILY_OF[b.seed_kind], *b.family.split("+")}
        # holders of one wording or client share what its words ask for (WORDED: the holders of a
        # public "helpful assistant" prompt whose users ask for reasoning) and what the software
        # sets (CLIENT_SHAPED); a group co-located in one family beyond the seed shares its place's
        # software and tools' wording whatever the families (a reseller's end users share its
        # backend's address, client and max_tokens): only what neither sets is evidence
        judged_on = words_free if "client" in families or b.beyond_seed < 2 else every
        if "network" not in families:
            # a group that shares no place on the network, each member rotating through many
            judged_on = {**judged_on, **rotated}
        if not judged_on:
            continue
        # every feature the block is extreme on is a test of its own (each corrected for every
        # look): a campaign rotating exits and asking at volume is most surprising on its subnets,
        # where half its members stand out, and on its volume, where nearly all do
        seeded = np.asarray(b.seeded, dtype=np.int64)
        placed: float | None = None  # the tied holders' test against their places' groups, once per block
        for gb in cohorts_mod.group_behaviours(judged_on, seeded, tuple(stats.cohort_levels),
                                               group_nulls.get(b.seed_kind), within=stats.alpha / looks[b.seed_kind],
                                               memo=reuse.looks, before=_first_arrival(first_seen, seeded)):
            p = max(b.p_corrected, float(nulls.bonferroni(gb.p_corrected, looks[b.seed_kind])))
            if p > stats.alpha:
                break
            if b.beyond_seed < 2 and 2 * len(set(b.tied) & set(gb.members)) < len(gb.members):
                # co-located in one family only, the block is one operation only where most of its
                # extreme holders are tied in it: the holders of a public JSON-extraction prompt (app
                # backends, heavier than the population) held one company's five backends on a subnet
                # of their own, 5 of the 111 extreme holders
                continue
            # and its holders tied in a place, as a group against the groups of that place's
            # tokens: heavy developers behind one VPN exit are extreme together as often as the
            # groups of one exit are, whatever prompt they hold (intersection-union: the larger p)
            if placed is None:
                placed = _tied_in_place(b, judged_on, group_nulls, stats, looks, first_seen, reuse.looks)
            p = max(p, placed)
            if p > stats.alpha:
                continue
            behaving.append((b, gb, p, judged_on[gb.feature]))
    # the entities alike outside a block that its ties are matched against: none a behaving block
    # ties or the cohorts found (a campaign's other cells, tied to this one's holders by its card)
    unheld = np.ones(n, dtype=bool)
    unheld[[e for b, _, _, _ in behaving for e in b.tied]] = False
    unheld[list(excluded)] = False
    reference = _TieReference(reuse.ties, unheld)
    for b, gb, p, rank in behaving:
        _block_members(b, gb, p, rank, stats, n, candidates, reuse.members, reference)


def _tied_in_place(b: blocks_mod.Block, judged_on: dict[str, cohorts_mod.Ranked],
                   group_nulls: dict[str, cohorts_mod.GroupNull], stats: Statistics, looks: dict[str, float],
                   first_seen: np.ndarray | None, memo: dict | None = None) -> float:
    """The corrected p-value of a block's tied holders' behaviour against the groups of each place
    kind that tied them (``Block.kinds`` beyond the seed that are places, with a group null), the
    largest over those kinds; 0 where none applies (the block's own test stands alone). The
    block's seed holders are tested against the groups of the seed's kind; a place's groups (an
    office's egress, a VPN provider's exit) hold teams that are heavy together, which the seed's
    groups need not show. ``memo``: the looks kept across passes (cohorts.group_behaviours)."""
    kinds = [k for k in b.kinds if k != b.seed_kind and _is_place(k) and k in group_nulls]
    tied = np.asarray(b.tied, dtype=np.int64)
    before = _first_arrival(first_seen, tied)
    worst = 0.0
    for kind in kinds:
        gb = cohorts_mod.group_behaviour(judged_on, tied, tuple(stats.cohort_levels), group_nulls[kind],
                                         before=before, memo=memo)
        q = 1.0 if gb is None else float(nulls.bonferroni(gb.p_corrected, looks[b.seed_kind]))
        worst = max(worst, q)
        if worst > stats.alpha:
            break
    return worst


def _kind_shares(kinds: list[str]) -> dict[str, float]:
    """Per seed kind, what one of its blocks' p-values is multiplied by: a weighted Bonferroni
    (Holm 1979; Genovese, Roeder and Wasserman 2006) giving each kind that seeds a tested block an
    equal share of the level, split evenly over that kind's blocks. The weights sum to one, so the
    family-wise level holds as plain Bonferroni's does; they follow from which blocks the
    co-location test found, never from behaviour. Kinds seed blocks in very different numbers for
    reasons of their own (every busy time bin seeds one, a template a few), and an even split over
    blocks would let the many small blocks of one kind take the level from the few of another."""
    count = Counter(kinds)
    return {kind: float(len(count) * m) for kind, m in count.items()}


@dataclass
class _Reuse:
    """What a pass of :func:`evaluate` computes that the next pass reuses while the reference
    (``excluded``) stays the same and only the group nulls are refitted: the behaviour rankings,
    each group's looks and individual p-values (cohorts.group_behaviours' memo) and each behaving
    block's member sets per (share, level) (:func:`_block_members`), which depend on its
    p-value only through their cost."""

    excluded: frozenset[int]
    rankings: dict[str, dict[str, cohorts_mod.Ranked]] = field(default_factory=dict)
    looks: dict = field(default_factory=dict)
    members: dict = field(default_factory=dict)
    ties: _Ties | None = None  # the blocks' ties (:class:`_Ties`): the same for every pass


def _block_members(b: blocks_mod.Block, gb: cohorts_mod.GroupBehaviour, p: float, rank: cohorts_mod.Ranked,
                   stats: Statistics, n: int, candidates: dict[str, list[Candidate]],
                   memo: dict | None = None, reference: _TieReference | None = None) -> None:
    """A behaving block's member offers on one feature it is extreme on (``rank``), per action.

    A member shows the behaviour the block was found on: tied alone is co-location, which organic
    users of one cloud or one client share (tokens cluster by network and software beyond what
    BiCM's independence allows). Those genuinely co-located users are tied for real, so the tie's
    chance cost does not cover them: each tied organic member is extreme at a member level L with
    probability L, and the tied members that are not extreme estimate how many organic members
    were tied (those that are: L / (1 - L) of them). A block the campaign made extreme at a loose
    level thus keeps its organic staff only at that level's price; stricter levels keep fewer of
    them, at a fraction of it. Member levels run down to the reference's resolution (level 0:
    above its largest value). A member's tie in a block of two families is also matched
    (``reference``: :meth:`_TieReference.matched`)."""
    memo = {} if memo is None else memo
    # only a two-family block's ties are matched (a one-family block's are to its own tokens)
    key = (id(b), gb.feature, id(rank), reference.key if reference is not None and b.beyond_seed > 1 else None)
    if key not in memo:
        # the block and ranking kept, so that their ids are not reused while cached
        memo[key] = (b, rank, _member_sets(b, rank, stats, n, reference))
    reason = f"{b.reason()}; behaviour: {gb.reason()}" if any(s[4] for s in memo[key][2].values()) else ""
    for action, sets in memo[key][2].items():
        count, t, level, others, kept = sets
        cost = p * count + b.holders * t * level + level / (1 - level) * others
        for members, at in kept:
            # a stricter threshold costs less and may keep the same members: each distinct set
            # of members is offered once, at the cheapest (threshold, level) that keeps it (the
            # first of equal costs)
            i = at[int(np.argmin(cost[at]))]
            lv, kin = float(level[i]), int(others[i])
            candidates[action].append(Candidate(
                p, "block", BICM.name, reason,
                f"{len(members)} members each tied in {'one of the two' if b.beyond_seed > 1 else b.family} "
                f"(member p <= {float(t[i]):.3g}) and among those "
                f"above the top {lv:.3g} of the reference on {gb.feature}, beside {kin} tied members "
                f"that are not (so {lv / (1 - lv) * kin:.3g} organic members expected among the kept by chance)",
                members, float(cost[i])))


def _member_sets(b: blocks_mod.Block, rank: cohorts_mod.Ranked, stats: Statistics, n: int,
                 reference: _TieReference | None = None
                 ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                      list[tuple[tuple[int, ...], np.ndarray]]]]:
    """Per action, a behaving block's candidate member sets on one feature (``rank``): over every
    (share, level) in share-major order that keeps at least two members, (kept count, threshold
    t, level, tied members not extreme, and each distinct member set with the positions that
    keep it, in order of first appearance). With a ``reference``, each member's tie p-value at a
    level is at least its matched rate there (:meth:`_TieReference.matched`)."""
    out: dict = {}
    levels = _member_levels(stats) if FAMILY_OF[b.seed_kind] == "account" else (0.0, *stats.cohort_levels)
    cuts = cohorts_mod.extremes(rank, np.asarray(b.seeded, dtype=np.int64), levels)
    if not cuts:
        return out
    tied_ids = np.asarray(b.tied, dtype=np.int64)
    member_p = np.asarray(b.member_p, dtype=np.float64)
    # which tied members are judged (the seed holders' judged entities, the same at every level)
    # and, per level, which are extreme, in the tied members' order
    judged_ids = cuts[0][2]
    order = np.argsort(judged_ids, kind="stable")
    at = np.minimum(np.searchsorted(judged_ids[order], tied_ids), judged_ids.size - 1)
    judged = judged_ids[order][at] == tied_ids
    level_of = np.asarray([k / (r + 1) for k, r, _, _ in cuts])
    extreme = np.stack([judged & above[order][at] for _, _, _, above in cuts])
    shares = np.asarray(sorted(stats.block_member_shares), dtype=np.float64)
    combo_level = np.tile(level_of, shares.size)
    combo_extreme = np.tile(extreme, (shares.size, 1))
    not_extreme = judged & ~combo_extreme
    if reference is not None and b.beyond_seed > 1:
        member_p = np.tile(reference.matched(b, rank, [k for k, _, _, _ in cuts], member_p), (shares.size, 1))
    else:
        member_p = np.broadcast_to(member_p, (combo_level.size, member_p.size))
    for action in ACTIONS:
        allowed = getattr(stats.budget, action) * n
        # a holder tied by chance (under BiCM its links depend on its degree only, not on what it
        # asks for) is kept only if also extreme at L: holders x t x L of them are expected, so
        # the threshold at each level spends the share's budget
        t = (allowed / (shares[:, None] * b.holders * level_of[None, :])).reshape(-1)
        tied = member_p <= t[:, None]
        chosen = tied & combo_extreme
        count = np.count_nonzero(chosen, axis=1)
        enough = np.flatnonzero(count >= 2)
        others = np.count_nonzero(tied[enough] & not_extreme[enough], axis=1)
        positions: dict[bytes, list[int]] = {}
        for j, i in enumerate(enough.tolist()):
            positions.setdefault(chosen[i].tobytes(), []).append(j)
        kept = [(tuple(tied_ids[chosen[enough[js[0]]]].tolist()), np.asarray(js, dtype=np.int64))
                for js in positions.values()]
        out[action] = (count[enough], t[enough], combo_level[enough], others, kept)
    return out


class _TieReference:
    """The entities a behaving block's member ties are matched against: those ``unheld`` (no
    behaving block ties them, no cohort found them), outside the block and as extreme as the
    level a member is kept at.

    A member's tie p-value is BiCM's: how surprising its co-holding with the block's holders is
    given how many tokens it holds and how common they are. Tokens cluster beyond that where what
    a user asks for sets them: a public JSON-extraction prompt is held by app backends, heavy on
    every behaviour, and a campaign relaying such customers holds it too, so a heavy developer on
    a carrier's /24 the campaign rotated through was tied to it at p = 0.0055 while 13 of the 247
    entities outside as heavy were tied as strongly (x10 held-out store of tag
    detector-2026-12-07a, where four such developers were kept). Among the entities outside as
    extreme, the share tied to the block's holders at least as strongly as the member estimates
    that tie's chance directly; the member's p-value is the larger of the two. Where no entity
    outside is tied that strongly it stays BiCM's, and it only ever rises: a member is never kept
    at a stricter threshold than before, and a member tied more strongly is matched at a smaller
    share, so a stronger tie never loses it. The ties themselves (:class:`_Ties`) do not depend
    on which entities are unheld, and are computed once per block and scan."""

    def __init__(self, ties: _Ties, unheld: np.ndarray) -> None:
        self.ties = ties
        self.unheld = unheld
        self.key = hashlib.sha256(np.packbits(unheld).tobytes()).hexdigest()

    def matched(self, b: blocks_mod.Block, rank: cohorts_mod.Ranked, ks: list[int], member_p: np.ndarray
                ) -> np.ndarray:
        """Per level (the ``k``-th largest outside the block, as cohorts.extremes), per tied member
        of ``b``: the larger of its ``member_p`` and the share of the unheld entities outside the
        block at least as extreme as the ``k``-th largest there (by value, so that entities of
        equal value are in or out together, whatever their numbering) that are tied to its seed
        holders at least as strongly as it is."""
        outside, values = self.ties.descending(b, rank)
        tied, strengths, mine = self.ties.of(b)
        out = np.empty((len(ks), member_p.size))
        for i, k in enumerate(ks):
            # the outside entities at least as extreme as the k-th: values descend along ``outside``
            within = outside[:int(np.searchsorted(-values, -values[k - 1], side="right"))]
            within = within[self.unheld[within]]
            ties = np.sort(strengths[np.isin(tied, within)])
            share = (np.searchsorted(ties, mine, side="right") / within.size if within.size
                     else np.zeros(mine.size))
            out[i] = np.maximum(member_p, share)
        return out


class _Ties:
    """Per behaving block, once per scan: how strongly each entity holding one of its seed holders'
    tokens, and each tied member, is tied to them (:meth:`strength`), and per ranking the block's
    outside entities in descending order."""

    def __init__(self, tables: list[blocks_mod.KindTable]) -> None:
        self.tables = tables
        self._by_token: dict[str, sparse.csc_matrix] = {}
        self._of: dict[int, tuple[blocks_mod.Block, np.ndarray, np.ndarray, np.ndarray]] = {}
        self._order: dict[int, tuple[cohorts_mod.Ranked, np.ndarray]] = {}

    def _kinds(self, b: blocks_mod.Block) -> list[blocks_mod.KindTable]:
        """The kinds a member's tie is taken over (blocks._family_detail): the block's two
        families' kinds, less the populations that did not make it surprising."""
        families = set(b.family.split("+"))
        return [t for t in self.tables if t.family in families and (t.kind not in POPULATIONS or t.kind in b.kinds)]

    def strength(self, b: blocks_mod.Block, entities: np.ndarray) -> np.ndarray:
        """Per entity of ``entities`` (ascending): its tie to the block's seed holders, as a
        member's is taken (the smallest over the block's kinds, each times its family's kinds:
        blocks._family_detail); 1 where untied."""
        kinds = Counter(t.family for t in self.tables)
        seeded = np.asarray(b.seeded, dtype=np.int64)
        out = np.ones(entities.size)
        for t in self._kinds(b):
            tied, p = blocks_mod.ties_to(t, entities, seeded)
            at = np.searchsorted(entities, tied)
            out[at] = np.minimum(out[at], np.minimum(1.0, p * kinds[t.family]))
        return out

    def of(self, b: blocks_mod.Block) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(the entities outside the block holding a token its seed holders hold in one of its
        kinds, ascending; their ties; the tied members' ties): every other entity is untied."""
        if id(b) not in self._of:
            seeded = np.asarray(b.seeded, dtype=np.int64)
            holders = [np.zeros(0, dtype=np.int64)]
            for t in self._kinds(b):
                if t.kind not in self._by_token:
                    self._by_token[t.kind] = sparse.csc_matrix(t.incidence)
                holders.append(blocks_mod.co_holders(t, self._by_token[t.kind], seeded))
            found = distinct(np.concatenate(holders))
            found = found[~np.isin(found, seeded)]
            # the block kept, so that its id is not reused while cached
            self._of[id(b)] = (b, found, self.strength(b, found),
                               self.strength(b, np.asarray(b.tied, dtype=np.int64)))
        return self._of[id(b)][1:]

    def descending(self, b: blocks_mod.Block, rank: cohorts_mod.Ranked) -> tuple[np.ndarray, np.ndarray]:
        """The usable entities outside the block in ``rank``'s descending order, and their values."""
        if id(rank) not in self._order:
            usable = np.flatnonzero(rank.position >= 0)
            order = np.empty(usable.size, dtype=np.int64)
            order[rank.position[usable]] = usable
            self._order[id(rank)] = (rank, order)
        order = self._order[id(rank)][1]
        outside = order[~np.isin(order, np.asarray(b.seeded, dtype=np.int64))]
        return outside, rank.oriented[outside]


def _without(group_nulls: dict[str, cohorts_mod.GroupNull], validated: frozenset[int]
             ) -> dict[str, cohorts_mod.GroupNull]:
    """Each group null refitted without the ``validated`` entities (kinds that share one pooled
    null keep sharing it)."""
    ids = np.fromiter(sorted(validated), dtype=np.int64, count=len(validated))
    refitted: dict[int, cohorts_mod.GroupNull] = {}

    def refit(null: cohorts_mod.GroupNull) -> cohorts_mod.GroupNull:
        if id(null) not in refitted:
            fitted = null.without(ids)
            if null.broader is not None:  # a broader null several kinds share stays shared
                fitted.broader = refit(null.broader)
            refitted[id(null)] = fitted
        return refitted[id(null)]

    return {kind: refit(null) for kind, null in group_nulls.items()}


def _member_levels(stats: Statistics) -> tuple[float, ...]:
    """The levels a validated wording group's holders, or a behaving block's members where its seed
    is an account token (a card, a sign-up burst), may be kept at, ascending: 0 (above the
    reference's largest value), the test levels and the policy's looser member levels. A campaign
    rotating through residential exits per session reaches the service from more networks than
    the population's median, not from more than its top fifth; kept only at the test levels, each
    of its holders below the top fifth was priced as an organic holder. The holders of one card are
    one customer or one operation; the holders of one /24 or one prompt can be strangers, each
    kept on a tie of its own that co-located organic users have too, and at 0.5 their behaviour
    says little about them (at full scale two developers in a cloud /24 beside the campaign, signed
    up in its hours and above the median, were blocked with it): those blocks stay at the test
    levels (:func:`_member_sets`)."""
    return tuple(sorted({0.0, *stats.cohort_levels, *stats.member_levels}))


def _first_arrival(first_seen: np.ndarray | None, members: np.ndarray) -> float:
    """When the first of a group's judged ``members`` was seen (``first_seen`` is NaN for an entity
    never judged; inf: none is): the instant its group null's groups are taken as they stood
    (cohorts.GroupNull)."""
    if first_seen is None:
        return np.inf
    seen = first_seen[members]
    seen = seen[np.isfinite(seen)]
    return float(seen.min()) if seen.size else np.inf


def _group_nulls(tables: list[blocks_mod.KindTable], stats: Statistics, first_seen: np.ndarray | None = None
                 ) -> dict[str, cohorts_mod.GroupNull]:
    """Per place kind, the holder groups its behaving blocks are tested against (cohorts.GroupNull):
    the distinct holder sets of its rare tokens with at least ``min_block_holders`` holders. A
    kind with fewer than ``group_null_min_groups`` of its own is fitted on its family's groups,
    and with too few there on the groups of every place kind outside the network family (the
    groups of one address or subnet share their place's networks by construction, so they are
    no population for a group that does not: on a development store, mobile carriers' shared
    addresses put 23% of their holders in the top tenth on distinct subnets). Each is fitted as it
    stood before the tested group's first member was seen (``first_seen``, per entity), and
    points to the broader populations (the family's, then every place kind's on its side of the
    network) that stand in where too few of its groups had formed by then (GroupNull.fitted_for)."""
    columns: dict[str, sparse.csc_matrix] = {}
    for table in tables:
        if table.kind in POPULATIONS or not table.incidence.nnz:
            continue
        matrix = table.incidence.tocsc()
        matrix.sort_indices()
        seen: set[tuple[int, ...]] = set()
        keep = []
        for column in np.flatnonzero(np.diff(matrix.indptr) >= stats.min_block_holders):
            holders = tuple(matrix.indices[matrix.indptr[column]:matrix.indptr[column + 1]].tolist())
            if holders not in seen:
                seen.add(holders)
                keep.append(column)
        if keep:
            columns[table.kind] = matrix[:, keep]
    pooled: dict[tuple[str, ...], cohorts_mod.GroupNull] = {}

    def over(kinds: tuple[str, ...], label: str) -> cohorts_mod.GroupNull:
        if kinds not in pooled:
            pooled[kinds] = cohorts_mod.GroupNull(sparse.hstack([columns[k] for k in kinds], format="csc"), label,
                                                  first_seen, stats.group_null_min_groups)
        return pooled[kinds]

    enough = stats.group_null_min_groups
    out = {}
    for kind in columns:
        family = tuple(sorted(k for k in columns if FAMILY_OF[k] == FAMILY_OF[kind]))
        network = FAMILY_OF[kind] == "network"
        elsewhere = tuple(sorted(k for k in columns if (FAMILY_OF[k] == "network") == network))
        # the narrowest population with enough groups, then each broader one (GroupNull.broader)
        chain = []
        if columns[kind].shape[1] >= enough:
            chain.append(over((kind,), f"{KINDS[kind].wording} holders"))
        if family != (kind,) and sum(columns[k].shape[1] for k in family) >= enough:
            chain.append(over(family, f"holders of one {FAMILY_OF[kind]} token"))
        if elsewhere not in ((kind,), family) or not chain:
            chain.append(over(elsewhere, "holders of one network token" if network
                              else "holders of one place token outside the network"))
        for narrow, broad in zip(chain, chain[1:]):
            narrow.broader = broad
        out[kind] = chain[0]
    return out


def _co_located_members(found: list[cohorts_mod.Cohort], tables: list[blocks_mod.KindTable], level: float,
                        min_members: int = 3) -> list[cohorts_mod.Cohort]:
    """The cohorts with their members checked for ties to the rest of the cohort (:class:`TieCheck`)."""
    check = TieCheck(tables, level, min_members)
    return [kept for kept in map(check, found) if kept is not None]


#: the families whose shared tokens put accounts in one place: the networks they connect from and
#: the payment they use (TieCheck.placed), less the kinds whose holders are populations (an
#: autonomous system's unrelated customers)
PLACES = ("network", "account")


def _is_place(kind: str) -> bool:
    """Whether holding one of ``kind``'s tokens puts entities in one place (:data:`PLACES`)."""
    return FAMILY_OF[kind] in PLACES and kind not in POPULATIONS


def _beyond_chance(tied: int, members: int, level: float) -> bool:
    """Whether ``tied`` of ``members`` tied at ``level`` is more than Binomial(members, level) gives."""
    from scipy import stats as sstats

    return bool(sstats.binom.sf(tied - 1, members, level) <= level)


class TieCheck:
    """A cohort's members checked for ties to the rest of the cohort.

    A cohort need share nothing; but when its members are tied to each other (their rare tokens
    held by other members more than BiCM allows) far more often than chance gives, it is one
    co-located operation, and an extreme entity that arrived in its window tied to none of them is
    the window's chance arrival, not a member. A member's tie is the smallest p-value of its ties
    to the cohort over every kind (blocks.ties_to), times the kinds. The check applies when more
    members are tied at ``level`` than Binomial(X, ``level``) gives; it only removes members, so
    the window's p-value and cost are those of all its extreme entities. A cohort left with fewer
    than ``min_members`` is dropped (None). Each member set is checked once.

    A co-located cohort extreme on a feature its place sets (``shared_by_place``) is dropped:
    one place, not a cohort. On :data:`ROTATION` only where it is co-located in place too (the
    same binomial check over the place kinds, :data:`PLACES` less the populations): the networks
    a proxy pool rotates its accounts through are not a place they share."""

    def __init__(self, tables: list[blocks_mod.KindTable], level: float, min_members: int = 3,
                 shared_by_place: frozenset[str] = frozenset(), judged: np.ndarray | None = None,
                 component_members: int = 5) -> None:
        self.kinds = [t for t in tables if t.incidence.nnz]
        #: the entities a tie component of members tied in place needs (:meth:`placed`): a campaign's size
        self.component_members = component_members
        self.level, self.min_members, self.shared_by_place = level, min_members, shared_by_place
        self.kept: dict[tuple[int, ...], tuple[int, ...] | None] = {}  # windows often share their members
        self.placed_kept: dict[tuple[int, ...], tuple[tuple[int, ...], int, int] | None] = {}
        self.by_column: dict[str, sparse.csc_matrix] = {}  # each place kind's incidence by token, once
        entities = tables[0].incidence.shape[0] if tables else 0
        #: the entities a chance member is one of: those whose features are judged
        self.judged = np.ones(entities, dtype=bool) if judged is None else np.asarray(judged, dtype=bool)

    def __call__(self, c: cohorts_mod.Cohort) -> cohorts_mod.Cohort | None:
        if c.members not in self.kept:
            members = np.asarray(c.members, dtype=np.int64)
            best, best_place, places = np.ones(members.size), np.ones(members.size), 0
            for table in self.kinds:
                tied_entities, p = blocks_mod.ties_to(table, members, members)
                placed = _is_place(table.kind)
                places += placed
                if tied_entities.size:
                    at = np.minimum(np.searchsorted(tied_entities, members), tied_entities.size - 1)
                    mine = np.where(tied_entities[at] == members, p[at], 1.0)
                    best = np.minimum(best, mine)
                    if placed:
                        best_place = np.minimum(best_place, mine)
            tied = best * len(self.kinds) <= self.level
            co_located = _beyond_chance(int(tied.sum()), members.size, self.level)
            in_place = places > 0 and _beyond_chance(int(np.count_nonzero(best_place * places <= self.level)),
                                                     members.size, self.level)
            self.kept[c.members] = (tuple(int(m) for m in members[tied]), in_place) if co_located else None
        found = self.kept[c.members]
        if found is None:
            return c
        keep, in_place = found
        if c.feature in self.shared_by_place and (in_place or c.feature not in ROTATION):
            # a co-located group is extreme together on what its place sets (an office behind one
            # hosted egress: its hosted share, its subnets, its hours): one place, not a cohort. A
            # group rotating through networks is one place only where it is tied in place (its
            # addresses, its payment): a campus's users share its subnets; a proxy pool's accounts,
            # tied by their client and the providers the pool rents from, share no address
            return None
        return replace(c, members=keep) if len(keep) >= self.min_members else None

    def placed(self, c: cohorts_mod.Cohort) -> cohorts_mod.Cohort | None:
        """The cohort's members tied to the rest of it in place (:data:`PLACES`: not the software
        they run, which its other users share, nor a clock, which a window's arrivals share by
        arriving together), where more are than Binomial(X, ``level``) gives, with its chance
        members priced by the tie: an organic entity extreme by chance in the window is kept only
        if tied to the members too, as often as the judged entities outside the cohort are (the
        share of them tied to its members at ``level``, plus one in the count; judged, as a chance
        member is, since busier accounts hold more tokens). Outside the window are also the
        campaign's other members, tied to it: the share only overstates the chance. None where too
        few are tied, and for a window on what the client software sets (CLIENT_SHAPED): a team
        onboarded in one week in an office of its own, each member with the team's tool, is
        extreme together there by construction. A member counts only where its tie component
        among the tied members (joined by the place tokens they share) reaches
        ``component_members`` entities, a campaign's size: teammates that arrive together, each
        extreme by chance, tie each other and no one of the operation."""
        if c.feature in self.shared_by_place or c.feature in CLIENT_SHAPED:
            return None
        if c.members not in self.placed_kept:
            self.placed_kept[c.members] = self._place_ties(np.asarray(c.members, dtype=np.int64))
        found = self.placed_kept[c.members]
        if found is None:
            return None
        keep, tied_outside, outside = found
        share = (1.0 + tied_outside) / (1.0 + outside)
        return replace(c, members=keep, survival=c.survival * share)

    def _place_ties(self, members: np.ndarray) -> tuple[tuple[int, ...], int, int] | None:
        """(the members tied to the others in place, the judged entities outside tied to them, the
        judged entities outside), or None where no more are tied than chance gives."""
        place = [t for t in self.kinds if _is_place(t.kind)]
        if not place:
            return None
        best = np.ones(members.size)
        outside_best: dict[int, float] = {}
        for table in place:
            tied_entities, p = blocks_mod.ties_to(table, members, members)
            if tied_entities.size:
                at = np.minimum(np.searchsorted(tied_entities, members), tied_entities.size - 1)
                best = np.minimum(best, np.where(tied_entities[at] == members, p[at], 1.0))
            # the entities outside holding a token a member holds, and their ties to the members
            if table.kind not in self.by_column:
                self.by_column[table.kind] = sparse.csc_matrix(table.incidence)
            holders = blocks_mod.co_holders(table, self.by_column[table.kind], members)
            holders = holders[~np.isin(holders, members) & self.judged[holders]]
            if holders.size:
                out_entities, out_p = blocks_mod.ties_to(table, holders, members)
                for e, q in zip(out_entities.tolist(), out_p.tolist()):
                    outside_best[e] = min(q, outside_best.get(e, 1.0))
        tied = best * len(place) <= self.level
        if not _beyond_chance(int(tied.sum()), members.size, self.level):
            return None
        kept = members[tied]
        # a member's tie component among the tied members: teammates that arrived together tie
        # each other only, apart from the operation
        holders: dict[tuple[str, int], list[int]] = {}
        for table in place:
            for m, token in zip(*(v.tolist() for v in blocks_mod.held_by(table.incidence, kept))):
                holders.setdefault((table.kind, token), []).append(m)
        components = _components([tuple(h) for h in holders.values()] + [(int(m),) for m in kept])
        keep = tuple(sorted(m for c in components if len(c) >= self.component_members for m in c))
        if len(keep) < self.min_members:
            return None
        tied_outside = sum(1 for q in outside_best.values() if q * len(place) <= self.level)
        return keep, tied_outside, int(np.count_nonzero(self.judged)) - int(np.count_nonzero(self.judged[members]))


@dataclass(frozen=True)
class Candidate:
    """One test result offered to the budget for one action."""

    p: float  # corrected p-value
    test: str  # block or cohort
    null: str
    reason: str
    note: str  # how its members were chosen, appended to the reason
    entities: tuple[int, ...]
    cost: float  # expected false positives accepting it costs
    #: the members checked further, with the reason and the cost that say so, or None when too few
    #: remain; run only when the result comes up with members not yet taken (the checks cost a pass
    #: over the entities, and most windows of a large campaign hold nobody new). Its members are a
    #: subset of ``entities``; its cost is at most ``cost`` and at least ``least_cost``.
    refine: Callable[[], Checked] | None = None
    least_cost: float = 0.0
    #: the result's corrected p-value without the members another accepted result holds (a cohort
    #: window's count less them), or None: it is accepted for its other members only while that
    #: stays at most alpha
    residual: Callable[[np.ndarray], float] | None = None
    joins: tuple[int, ...] = ()  # Finding.joins
    #: results offered as nested sets of one test (each holds those below it and costs at least
    #: as much: a campaign's associates and those of them behaving in the tail) share a key; what
    #: accepting several of them costs is the largest one's cost, so each is charged only what it
    #: adds to what the nest was charged already ("": a nest of its own)
    nest: str = ""
    #: whether the result holds every member of its nest's other results (what the discount
    #: needs). A cohort window's members checked on their profile and those tied in place are
    #: both within its every extreme entity but not within each other: each is charged in full
    #: and counted towards the nest, and the whole window is charged what it adds to them
    holds_nest: bool = True
    only: Restriction = ()  # Finding.only


def _within_budget(candidates: dict[str, list[Candidate]], n: int, policy: Policy,
                   owned: list[tuple[str, str, np.ndarray]] = (), associates: Associates | None = None
                   ) -> list[Finding]:
    """Per action, from the strongest action down: the test results in order of their corrected
    p-value, accepted while the false positives they cost together stay within the action's
    budget (``budget[action] x N``). Results at or below ``statistics.certain_p`` are equally
    strong (no multiplicity a scan corrects for comes near it, and at full scale hundreds of
    windows reach p = 0 in floating point), as are results of equal p-value: among them the next
    accepted is the one cheapest per entity not yet taken, where an expected false positive buys
    the most new entities (the greedy rule for weighted set cover). The same wave seen on several
    features, widths and views is many results with almost the same members; taken strongest
    first, each paid its full cost for a handful of new members, and a full-scale scan spent its
    throttle budget on windows at p = 0 before blocks at p = 1e-47 that cost a thousandth as much
    per account came up. Ordering by cost per entity across p-values (a local false discovery
    rate) covered a little more of the development strategies, but it prefers small windows, whose chance
    members are costed at the one feature that chose them: on adaptive-2026 at scale 0.005 it
    throttled two benchmark researchers, each extreme beyond every earlier arrival in a window of
    7 and 11, where strongest first throttled none. An entity takes the strongest action a result
    accepted for it reaches; a result whose entities all hold a stronger action already costs
    nothing more. Remaining ties are broken by the result's description (tokens, windows,
    features: never account names).

    ``owned``: the holder sets of tokens with one owner (:func:`_owned`); at
    ``statistics.owner_action`` each is offered whole where accepted results hold some of its
    holders (:func:`_owner_offers`), after that action's results; then, at
    ``statistics.associate_action``, each campaign's associates (:class:`Associates`)."""
    budget, certain = policy.statistics.budget, policy.statistics.certain_p
    taken = np.zeros(n, dtype=bool)  # entities an accepted result holds, at this action or a stronger one
    findings: list[Finding] = []
    arrays: dict[int, np.ndarray] = {}  # each result's entities as an array, once for every action offering it

    def strength(c: Candidate) -> float:
        return max(c.p, certain)

    for action in ACTIONS:
        allowed = getattr(budget, action) * n
        spent = 0.0
        charged: dict[str, float] = {}  # per nest of results, what its accepted ones were charged
        # monitor restricts nobody: its results are evidence at their full cost
        most = policy.statistics.finding_fdr if action != "monitor" else np.inf
        ranked = sorted(candidates[action], key=lambda c: (strength(c), c.test, c.null, c.reason, c.entities))

        def owners(action: str = action) -> Iterator[list[Candidate]]:
            # the owners' offers, made once this action's results are in
            if action == policy.statistics.owner_action and owned:
                yield sorted(_owner_offers(owned, findings, policy.campaign.min_members),
                             key=lambda c: (c.cost, c.reason))
            if action == policy.statistics.associate_action and associates is not None:
                yield sorted(associates.offers(findings, policy.campaign.min_members, policy.statistics.alpha),
                             key=lambda c: (c.p, c.cost, c.reason))

        strengths = (list(tied) for _, tied in itertools.groupby(ranked, key=strength))
        for tied in itertools.chain(strengths, owners()):
            for c, entities, reason, cost, new, whole in _cheapest_first(tied, taken, lambda: allowed - spent,
                                                                         arrays, policy.statistics.alpha, most,
                                                                         charged):
                spent += cost
                if c.nest:
                    charged[c.nest] = charged.get(c.nest, 0.0) + cost
                taken[list(entities)] = True
                # the finding keeps the result's whole cost: its members' expected false share
                # (an owner offer prices its holders by it) is not what a nest's discount left
                findings.append(Finding(action, c.test, c.null, c.p, allowed,
                                        f"{reason}{'; ' + c.note if c.note else ''}; accepting it costs {cost:.3g} "
                                        f"expected false positives ({cost / new:.3g} per entity it adds), "
                                        f"{spent:.3g} of the {action} budget {allowed:.3g} "
                                        f"({getattr(budget, action):g} x {n} entities)", tuple(entities),
                                        whole, c.joins, c.only))
    return findings


def _owned(tables: list[blocks_mod.KindTable], relayed: np.ndarray | None = None
           ) -> list[tuple[str, str, np.ndarray]]:
    """(kind, token, holder entities) of every token held by two entities or more whose kind has
    one owner (``Kind.alone``: a card). The ``relayed`` entities (a reseller's end users,
    resellers.py) hold their reseller's card by construction: the reseller is the owner, and its
    customers are not one another's accounts, so they are no holders here."""
    out = []
    for t in tables:
        if not KINDS[t.kind].alone:
            continue
        for matrix, tokens in ((t.incidence, t.tokens), (t.seeds_above_cut, t.seed_tokens_above_cut)):
            columns = sparse.csc_matrix(matrix)
            columns.sort_indices()
            for j in np.flatnonzero(np.diff(columns.indptr) >= 2).tolist():
                holders = columns.indices[columns.indptr[j]:columns.indptr[j + 1]].astype(np.int64)
                if relayed is not None:
                    holders = holders[~relayed[holders]]
                if holders.size >= 2:
                    out.append((t.kind, tokens[j], holders))
    return out


def _owner_offers(owned: list[tuple[str, str, np.ndarray]], findings: list[Finding], min_members: int,
                  whole: bool = False) -> list[Candidate]:
    """A token with one owner (a card) whose holders accepted results hold at throttle or stronger
    is the campaign's: its other holders (accounts kept for cover, too quiet to judge, or behaving
    like anyone) are the owner's other accounts. All of them are wrongly restricted only if every
    held holder is, so an offer costs the least expected false share of its held holders (each
    result's cost per entity) times the holders it adds. Only the holders of results whose group
    is a campaign's size count: a group capped at monitor lends nobody an action. ``whole``: each
    offer charged for every holder, the held ones too (offered beside the results that hold them,
    it may be accepted before them and take their holders: :func:`_with_owners`). An entity a
    result holds on some of its accounts only (``Finding.only``: an organisation one of whose
    accounts asked in a campaign's wording) is not a held holder: the evidence names that
    account's requests, not the organisation's card."""
    strong = [f for f in findings if f.action != "monitor"]
    if not strong:
        return []
    size = {e: len(g) for g in _components([f.grouped for f in strong]) for e in g}
    price: dict[int, tuple[float, float]] = {}  # entity -> (false share, p) of its cheapest result
    for f in strong:
        share = f.cost / max(len(f.entities), 1)
        # an organisation held on some of its accounts only was not found to be the owner
        named = {e for e, _ in f.only}
        for e in f.entities:
            if e in named or size[e] < min_members:
                continue
            if e not in price or (share, f.p_corrected) < price[e]:
                price[e] = (share, f.p_corrected)
    offers = []
    for kind, token, holders in owned:
        held = [price[e] for e in holders.tolist() if e in price]
        if not held or len(held) == holders.size:
            continue
        share, p = min(held)
        added = holders.size - len(held)
        charged = holders.size if whole else added
        offers.append(Candidate(
            p, "owner", ONE_OWNER.name,
            f"owner: {len(held)} of the {holders.size} entities holding the {KINDS[kind].wording} {token!r} are "
            f"held at throttle or stronger (the strongest at p={p:.3g})",
            f"a {KINDS[kind].wording} has one owner, so its {added} other holders are the owner's accounts; all "
            f"are wrong only if every held holder is ({share:.3g} expected false share at the least, times "
            f"{'every holder, ' if whole else ''}{charged})",
            tuple(holders.tolist()), share * charged))
    return offers


def _with_owners(candidates: dict[str, list[Candidate]], findings: list[Finding], n: int, policy: Policy,
                 owned: list[tuple[str, str, np.ndarray]]) -> tuple[dict[str, list[Candidate]], list[Finding]]:
    """The budget run again with the first run's owner offers among the results, at their
    strength (the p-value of the strongest result holding one of their holders) and charged for
    every holder. Offered only after an action's results (they need held holders), they get what
    the weakest windows left of the budget, though a card's holders cost a small share of what a
    window's chance members cost per entity: at organic x1 a campaign on five cards of its own
    had its windows spend the throttle budget before four of the five cards' owners came up.
    Charged for every holder, an offer stands on the evidence of the results that hold its held
    holders (each validated at its p-value, whether or not this run accepts it), not on their
    acceptance. Returns the candidates with the offers among them, for the associates' run."""
    action = policy.statistics.owner_action
    if action == "monitor" or not owned:
        return candidates, findings
    offered = _owner_offers(owned, findings, policy.campaign.min_members, whole=True)
    if not offered:
        return candidates, findings
    extended = {a: list(c) + (offered if a == action else []) for a, c in candidates.items()}
    return extended, _within_budget(extended, n, policy, owned)


@dataclass(frozen=True)
class Associates:
    """What a campaign's associates are found from (detect/associates.py): the kind tables, each
    entity's earliest creation (epoch seconds, NaN unknown; every account counts, judged or not:
    an associate is typically too quiet to be judged), and the ``relayed`` entities (a reseller's
    end users hold their reseller's address and client by construction: never associates)."""

    tables: list[blocks_mod.KindTable]
    created: np.ndarray
    relayed: np.ndarray
    hours: tuple[float, ...]
    judged: np.ndarray | None = None  # entities with an account at the judging minimum of exchanges
    #: per entity, the population tail share of its combined behaviour score (1: not judged), and
    #: the levels at which associates behaving in that tail are offered on their own
    #: (associates.behaving); None: none are
    tail: np.ndarray | None = None
    levels: tuple[float, ...] = ()

    def offers(self, findings: list[Finding], min_members: int, alpha: float) -> list[Candidate]:
        """One offer per campaign (a group of accepted results at throttle or stronger of at least
        ``min_members`` entities, associates left out: they make no campaign) and pair of ties
        whose associates are significant at ``alpha`` (corrected over every pair of ties of every
        campaign), costing the organic entities expected among them and joining the campaign's
        members. Eligible: entities no result at throttle or stronger holds, no reseller's end
        user."""
        strong = [f for f in findings if f.action != "monitor"]
        groups = [g for g in _components([f.entities for f in strong if f.test != "associate"])
                  if len(g) >= min_members]
        if not groups:
            return []
        eligible = ~self.relayed
        eligible[[e for f in strong for e in f.entities]] = False
        campaigns = [np.asarray(sorted(g), dtype=np.int64) for g in sorted(groups, key=min)]
        found = associates_mod.associations(self.tables, self.created, campaigns, eligible, self.hours, alpha,
                                            self.judged)
        if self.tail is not None:
            found = found + associates_mod.behaving(found, self.tail, eligible, self.levels)
        # an association and its associates behaving in the tail are one nest of offers
        return [Candidate(a.p_corrected, "associate", INDEPENDENT_TIES.name, a.reason(), "", a.entities, a.expected,
                          joins=a.members, nest=f"associates {a.members[0]} {a.first.name} {a.second.name}")
                for a in found]


def _with_associates(candidates: dict[str, list[Candidate]], findings: list[Finding], n: int, policy: Policy,
                     owned: list[tuple[str, str, np.ndarray]], associates: Associates) -> list[Finding]:
    """The budget run again with the campaigns' associates offered among the other results, at
    their strength: offered only after the results (they need a campaign), they would get what
    the weakest windows left of the budget, though their evidence is as strong as a campaign's
    own. The offers are those of the first run's campaigns, its associates eligible again (they
    are offered anew, not kept); the second run offers none after its results (the same tests
    would be looked at twice). It is kept only if, for every accepted offer, the campaign's
    members the second run holds by other results are one group of at least
    ``campaign.min_members`` entities, which the offer then joins; otherwise the first run's
    findings stand."""
    stats = policy.statistics
    first = [f for f in findings if f.test != "associate"]
    offered = associates.offers(first, policy.campaign.min_members, stats.alpha)
    if not offered:
        return findings
    extended = {a: list(c) + (offered if a == stats.associate_action else []) for a, c in candidates.items()}
    again = _within_budget(extended, n, policy, owned)
    strong = [f for f in again if f.action != "monitor" and f.test != "associate"]
    group_of = {e: i for i, g in enumerate(_components([f.entities for f in strong])) for e in g}
    size = Counter(group_of.values())
    out = []
    for f in again:
        if f.test == "associate":
            held = sorted(e for e in f.joins if e in group_of)
            groups = {group_of[e] for e in held}
            if len(groups) != 1 or size[groups.pop()] < policy.campaign.min_members:
                return findings
            f = replace(f, joins=tuple(held))
        out.append(f)
    return out


def _entity_index(feats: pa.Table, entity_of: dict[str, int]) -> np.ndarray:
    """Per row of ``feats`` (an account), its entity."""
    return np.array([entity_of[a] for a in feats.column("account_id").to_pylist()], dtype=np.int64)


def _cheapest_first(tied: list[Candidate], taken: np.ndarray, left: Callable[[], float],
                    arrays: dict[int, np.ndarray] | None = None, alpha: float = 1.0,
                    most_per_entity: float = np.inf, charged: dict[str, float] | None = None
                    ) -> Iterator[tuple[Candidate, tuple[int, ...], str, float, int, float]]:
    """Results of one strength, each yielded (with its members, reason and what accepting it is
    charged after its checks, how many of its members are not yet taken, and its whole cost)
    when it is the cheapest per entity not yet ``taken`` and its cost fits what is ``left`` of the
    budget. Lazy greedy: a result's cost per new entity only grows as others are taken, so a
    result popped from the heap whose recomputed price is still at most the next one's is the
    cheapest. A result is first priced at its cost before its member checks (an upper bound), and
    the checks run when it comes to the top (they cost a pass over the entities, and a large
    campaign offers tens of thousands of windows, most holding nobody new). A result with a
    ``residual`` some of whose members are taken comes up only while it stays significant
    without them (at most ``alpha``): a window that a campaign made significant, with the
    campaign held by a stronger or cheaper result, is no evidence about its other members. A
    result whose cost per entity not yet taken exceeds ``most_per_entity`` (its expected false
    share of what it adds) is dropped: accepting it would add more doubt than evidence. A result
    of a nest (``Candidate.nest``) that holds the nest's other results (``Candidate.holds_nest``)
    is charged what it adds to what ``charged`` says the nest was charged already; its key in the
    heap stays a lower bound of its price (a nest's offers share one p-value, so they come up in
    one heap, and the whole taken after a subset that was cheaper per entity costs at least as
    much per entity it adds as it did per entity before)."""
    arrays = {} if arrays is None else arrays  # by id of the entities tuple: the actions share one
    charged = {} if charged is None else charged
    for c in tied:
        if id(c.entities) not in arrays:
            arrays[id(c.entities)] = np.asarray(c.entities, dtype=np.int64)
    members = [arrays[id(c.entities)] for c in tied]

    def fresh(i: int) -> int:  # the result's members not yet taken
        return members[i].size - int(np.count_nonzero(taken[members[i]]))

    heap: list[tuple[float, int]] = [(c.cost / fresh(i), i) for i, c in enumerate(tied) if fresh(i)]
    heapq.heapify(heap)
    known: dict[int, Checked] = {}
    while heap:
        _, i = heapq.heappop(heap)
        c = tied[i]
        # a residual only grows as more is taken: a result that fails it is dropped for good,
        # before its member checks run
        if c.residual is not None and c.residual(taken) > alpha:
            continue
        # what the result's nest was charged already, where the result holds the nest's others
        paid = charged.get(c.nest, 0.0) if c.nest and c.holds_nest else 0.0
        if i not in known:
            if c.refine is not None and c.least_cost - paid > min(left(), most_per_entity * fresh(i)):
                continue
            known[i] = (c.entities, c.reason, c.cost) if c.refine is None else c.refine()
            if known[i] is not None:
                members[i] = np.asarray(known[i][0], dtype=np.int64)
        if known[i] is None:
            continue
        entities, reason, whole = known[i]
        cost = whole
        if paid > 0:
            cost = max(0.0, whole - paid)
            reason = f"{reason}; its nest of offers was charged {paid:.3g} already"
        new = fresh(i)
        if not new or cost > left():
            continue
        price = cost / new
        if price > most_per_entity:
            continue  # a price only grows as more is taken: dropped for good
        if heap and price > heap[0][0]:
            heapq.heappush(heap, (price, i))
            continue
        yield c, entities, reason, cost, new, whole


def _entity_features(feats: pa.Table, entity_of: dict[str, int], n: int, min_exchanges: int
                     ) -> tuple[dict[str, tuple[np.ndarray, str]], dict[str, np.ndarray], np.ndarray]:
    """Per entity: each signal's feature (mean over its judged accounts; NaN if none), its
    arrival times (earliest creation and first request of its judged accounts, epoch seconds) and
    whether it is judged (one of its accounts reached ``min_exchanges``).

    A reseller's end user (an entity ``<account>::<end user>``, detect/resellers.py) is judged on
    how much it asks and gets only (BEHAVIOUR_FEATURES less CLIENT_SHAPED and WORDED): its address,
    client string, max_tokens, tools and the system prompt that words its requests are the
    reseller's backend's, shared by every end user by construction."""
    accounts = feats.column("account_id").to_pylist()
    ent = np.array([entity_of[a] for a in accounts], dtype=np.int64)
    exchanges = np.array(feats.column("exchanges").to_pylist(), dtype=float)
    judged = exchanges >= min_exchanges
    counts = np.bincount(ent[judged], minlength=n).astype(float)
    relayed = np.array([ENTITY_SEPARATOR in (a or "") for a in accounts], dtype=bool)
    out: dict[str, tuple[np.ndarray, str]] = {}
    # the arrival attributes are tested against, so features that are functions of them are not
    for s in SIGNALS:
        if s.feature in ARRIVAL_FEATURES or s.feature not in feats.column_names:
            continue
        values = np.array([np.nan if v is None else float(v) for v in feats.column(s.feature).to_pylist()])
        if s.feature not in BEHAVIOUR_FEATURES or s.feature in CLIENT_SHAPED or s.feature in WORDED:
            values[relayed] = np.nan
        ok = judged & ~np.isnan(values)
        sums = np.bincount(ent[ok], weights=values[ok], minlength=n)
        num = np.bincount(ent[ok], minlength=n).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[s.feature] = (np.where(num > 0, sums / np.maximum(num, 1), np.nan), s.direction)
    if out:
        out[COMBINED_FEATURE] = (_combined(out), "above")
    attributes = {}
    for name in ("created_at", "first_seen"):
        first = _earliest(feats, name, ent, n)
        first[counts == 0] = np.nan
        attributes[name] = first
    return out, attributes, counts > 0


def _earliest(feats: pa.Table, column: str, ent: np.ndarray, n: int) -> np.ndarray:
    """Per entity, the earliest time in ``column`` over its accounts (rows of ``feats`` mapped to
    entities by ``ent``), epoch seconds; NaN where none is known."""
    seconds = np.array([np.nan if v is None else v.timestamp() for v in feats.column(column).to_pylist()])
    first = np.full(n, np.inf)
    ok = ~np.isnan(seconds)
    np.minimum.at(first, ent[ok], seconds[ok])
    first[np.isinf(first)] = np.nan
    return first


def _observation(feats: pa.Table, ent: np.ndarray, n: int, first_seen: np.ndarray,
                 as_of: datetime | None, horizons_hours: tuple[float, ...]) -> cohorts_mod.Observation | None:
    """Per entity (``ent``: per row of ``feats``), when it was first seen and when its first
    account was judged (cohorts.Observation); None without a ``judged_at`` feature."""
    if "judged_at" not in feats.column_names:
        return None
    first = _earliest(feats, "judged_at", ent, n)
    if as_of is None:
        last = [v.timestamp() for v in feats.column("last_seen").to_pylist() if v is not None]
        clock = max(last) if last else 0.0
    else:
        clock = as_of.timestamp()
    return cohorts_mod.Observation(first_seen, first, clock, tuple(horizons_hours))


def _combined(features: dict[str, tuple[np.ndarray, str]]) -> np.ndarray:
    """Per entity, ``-sum_f log u_f``: Fisher's statistic of its tail shares ``u_f`` (cohorts.tail_shares,
    over every entity, in each feature's suspicious direction). A fixed, symmetric function of
    all entities' values, so ranking it against a window's earlier arrivals is as valid as ranking
    any one feature; it grows with every feature's extremeness, so a stronger tell never lowers it.
    The features are not independent, so it is a score to rank, not a p-value. NaN for an entity
    no feature judges."""
    names = sorted(features)
    values = np.vstack([features[f][0] for f in names])
    logs = np.vstack([np.log(np.clip(cohorts_mod.tail_shares(features[f][0], features[f][1]), 1e-12, 1.0))
                      for f in names])
    combined = -logs.sum(axis=0)
    combined[np.isnan(values).all(axis=0)] = np.nan
    return combined


def _components(groups: list[tuple[int, ...]]) -> list[list[int]]:
    """Connected components of entities that share a finding (union-find), in a canonical order."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for g in groups:
        for e in g[1:]:
            ra, rb = find(g[0]), find(e)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
        if g:
            find(g[0])
    out: dict[int, list[int]] = {}
    for e in parent:
        out.setdefault(find(e), []).append(e)
    return sorted((sorted(v) for v in out.values()), key=lambda v: v[0])
