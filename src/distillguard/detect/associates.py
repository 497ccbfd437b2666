"""Associates of a found campaign: entities tied to its members in two independent families.

A campaign found by its behaviour (the cohort, wording and block tests) may keep accounts that
behave like anyone: created with the others and sending a casual user's traffic through the
campaign's servers, too quiet to be judged. What ties such an account to the campaign is the
campaign's own infrastructure, not its behaviour: it holds a token the members hold (their
address, their client string, ...) or signed up within minutes of one of them. One such tie is
what an organic account also shows now and then (a reassigned cloud address, a popular client,
a sign-up the same hour); two ties in families that are independent for organic accounts are
rarely shown together by chance.

The null: for an organic entity, being tied in one family is independent of being tied in
another (an address and a client string, a client string and a sign-up time). Each tie's rate
is estimated crosswise, among the eligible entities *not* tied in the other family: the
campaign's associates, tied in both, are left out of both estimates, so they do not make their
own ties look common, and associates tied in one family only make that family's rate larger
(conservative). With ``E`` eligible entities, ``A`` tied in the first family and ``B`` in the
second,

    pi_1 = (|A \\ B| + 1) / (|E \\ B| + 1),   pi_2 = (|B \\ A| + 1) / (|E \\ A| + 1),
    mu = |E| pi_1 pi_2,

is the number of organic entities expected tied in both: what accepting the whole set costs in
expected false positives, which the policy's budget charges. Whether there are associates at
all is Fisher's exact test of ``X = |A and B|`` given ``|A|`` and ``|B|`` (the hypergeometric
tail: under the null the entities tied in both are a random draw), corrected for every pair of
ties and every campaign looked at (Bonferroni).

A sign-up tie is also estimated within the other tie, by placebo: the campaign's sign-up
instants moved by whole weeks (``PLACEBO_WEEKS``: the same weekday and hour, so the same local
rhythm), the share of the entities tied in the other family, not tied at the true instants,
that signed up that close to the moved ones (shrunk towards the crosswise rate by one
pseudo-entity: :func:`placebo_rate`). Neighbours on a residential /24 sign up in the
same region's hours, more often together than the eligible entities at large: three organic
accounts on the subnets a campaign rotated through signed up within 15 minutes of its members
where the crosswise rate expected 0.059 of them (x5 held-out store of tag
detector-2026-12-07a). The larger of the two expectations is the cost, and the larger of Fisher's
p-value and the binomial tail of ``X`` among the ``|A|`` at the placebo rate is the p-value:
the associates must be surprising under both nulls.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import sparse, stats

from distillguard.detect.blocks import KindTable
from distillguard.detect.evidence import KINDS

#: the family a sign-up-time tie belongs to: the clock kinds' (evidence.Kind.test_family "time")
CREATION_FAMILY = "time"
#: tokens named as examples in a reason, per tie
EXAMPLES = 3
#: the whole weeks a campaign's sign-up instants are moved by to estimate a sign-up tie's rate
#: within another tie (module docstring)
PLACEBO_WEEKS = (-8, -7, -6, -5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6, 7, 8)
WEEK = 7 * 24 * 3600.0


@dataclass(frozen=True)
class Tie:
    """Which entities are tied to one campaign in one way: holding one of its members' tokens of
    a kind, or signing up within ``hours`` of one of its members."""

    name: str  # the kind, or ``created<hours>h``
    family: str
    wording: str
    tied: np.ndarray  # bool per entity
    #: the kind's table and the members' tokens in it (columns of its incidence and of its tokens
    #: above the rare cut); None for a sign-up tie
    table: KindTable | None = None
    held: tuple[np.ndarray, np.ndarray] | None = None
    #: for a sign-up tie: the campaign's sign-up instants it is near (sorted), how near (seconds)
    #: and every entity's creation (epoch seconds, NaN unknown), from which it is moved
    #: (:func:`placebo_rate`)
    signups: tuple[np.ndarray, float, np.ndarray] | None = None

    def examples(self, entities: np.ndarray) -> list[str]:
        """The members' tokens that ``entities`` hold most, most held first (ties by text)."""
        if self.table is None or self.held is None:
            return []
        counts: dict[str, int] = {}
        for matrix, tokens, held in ((self.table.incidence, self.table.tokens, self.held[0]),
                                     (self.table.seeds_above_cut, self.table.seed_tokens_above_cut, self.held[1])):
            if held.size:
                sums = np.asarray(sparse.csr_matrix(matrix)[entities][:, held].sum(axis=0)).ravel()
                for j in np.flatnonzero(sums).tolist():
                    counts[tokens[held[j]]] = counts.get(tokens[held[j]], 0) + int(sums[j])
        return sorted(counts, key=lambda t: (-counts[t], t))[:EXAMPLES]


@dataclass(frozen=True)
class Association:
    """A campaign's associates in one pair of ties, with the null's expectation and p-value."""

    members: tuple[int, ...]  # the campaign's member entities
    first: Tie
    second: Tie
    entities: tuple[int, ...]  # eligible entities tied in both
    eligible: int
    first_share: float  # pi_1: the first tie's rate among the eligible entities without the second
    second_share: float
    expected: float  # mu: organic entities expected in both
    p_value: float  # the larger of Fisher's exact p-value and the placebo's binomial one
    p_corrected: float  # x every pair of ties and campaign looked at
    #: for a sign-up tie: (its placebo rate within the other tie's eligible holders, how many
    #: those are, the organic entities that rate expects in both, the binomial p-value)
    placebo: tuple[float, int, float, float] | None = None
    independent: tuple[float, float] | None = None  # (organic expected, Fisher's p) if independent
    #: for associates kept for their behaviour (:func:`behaving`): (the population tail share of
    #: the combined behaviour score each is at or beyond, the share of the entities tied by one of
    #: the two ties only that is, those entities, and the associates the pair of ties holds)
    behaviour: tuple[float, float, int, int] | None = None

    def reason(self) -> str:
        held = np.asarray(self.entities, dtype=np.int64)
        mu, fisher = self.independent if self.independent is not None else (self.expected, self.p_value)
        out = (f"associates: {len(self.entities)} entities that no result holds are tied to a campaign of "
               f"{len(self.members)} entities by {_what(self.first, held)} and by {_what(self.second, held)}; of the "
               f"{self.eligible} entities eligible, {self.first_share:.3g} are tied by the first without the second and "
               f"{self.second_share:.3g} by the second without the first, so {mu:.3g} would hold both "
               f"if the two were independent; Fisher's exact p={fisher:.3g}")
        if self.placebo is not None:
            rate, within, expected, p = self.placebo
            out += (f"; of the eligible entities tied by the other and not by the sign-up, {rate:.3g} signed up as "
                    f"close to the campaign's sign-ups moved by whole weeks, so {expected:.3g} of the {within} tied "
                    f"by the other would hold both by chance (binomial p={p:.3g}); the larger of each")
        out += f", corrected for the pairs of ties and campaigns p={self.p_corrected:.3g}"
        if self.behaviour is not None:
            level, rate, within, tied = self.behaviour
            out += (f"; {len(self.entities)} of the {tied} tied in both are in the top {level:.3g} of the population "
                    f"on combined behaviour; of the {within} entities tied by one of the two only, with one more "
                    f"in the tail, {rate:.3g} are (the larger of the two ties, and at least the population's "
                    f"{level:.3g}), so {self.expected:.3g} organic entities are expected among them")
        return out


def _what(t: Tie, entities: np.ndarray) -> str:
    examples = t.examples(entities)
    if not examples:
        return t.wording
    return f"its members' {t.wording} ({', '.join(repr(e) for e in examples)})"


def ties(tables: list[KindTable], created: np.ndarray, members: np.ndarray, hours: tuple[float, ...],
         judged: np.ndarray | None = None) -> list[Tie]:
    """Every way an entity can be tied to the campaign whose member entities are ``members``:
    per kind (``evidence.Kind.associates``), holding one of the campaign's tokens; per width in
    ``hours``, a creation time (``created``, epoch seconds, NaN unknown) that close to one of the
    campaign's sign-ups.

    A token is the campaign's when its members outnumber its other holders whose behaviour was
    ``judged`` (bool per entity; None: every entity): an office's address, a campus's sign-up
    hour or a popular client is held by people seen behaving like anyone, and a harvester among
    them makes its colleagues no associates; a campaign's server is held by its members and by
    accounts too quiet to judge. A sign-up counts as the campaign's the same way, over the
    entities created within the width of it. A token held by one entity alone ties nobody, one
    held by more than half of them is not in the tables."""
    n = created.size
    is_member = np.zeros(n, dtype=bool)
    is_member[members] = True
    others = ~is_member if judged is None else (judged & ~is_member)
    out = []
    for t in tables:
        if not KINDS[t.kind].associates:
            continue
        tied = np.zeros(n, dtype=bool)
        held = []
        for matrix in (sparse.csr_matrix(t.incidence), sparse.csr_matrix(t.seeds_above_cut)):
            columns = np.unique(matrix[members].indices)
            if columns.size:
                sub = matrix[:, columns]
                inside = np.asarray(sub[members].sum(axis=0)).ravel()
                outside = np.asarray(sub[np.flatnonzero(others)].sum(axis=0)).ravel()
                columns = columns[inside > outside]
            held.append(columns)
            if columns.size:
                tied |= np.diff(matrix[:, columns].tocsr().indptr) > 0
        if tied.any():
            out.append(Tie(t.kind, t.family, KINDS[t.kind].wording, tied, t, (held[0], held[1])))
    signups = created[members]
    signups = np.sort(signups[~np.isnan(signups)])
    outside_at = np.sort(created[others & ~np.isnan(created)])
    for h in hours:
        width = h * 3600.0
        inside = np.searchsorted(signups, signups + width, "right") - np.searchsorted(signups, signups - width)
        outside = (np.searchsorted(outside_at, signups + width, "right")
                   - np.searchsorted(outside_at, signups - width))
        own = signups[inside > outside]
        if own.size == 0:
            continue
        out.append(Tie(f"created{h:g}h", CREATION_FAMILY, f"a sign-up within {h:g} h of one of its members'",
                       _near(created, own, width), signups=(own, width, created)))
    return out


def _near(created: np.ndarray, instants: np.ndarray, width: float) -> np.ndarray:
    """Per entity: created (epoch seconds, NaN unknown) within ``width`` of one of ``instants``
    (sorted, not empty)."""
    at = np.clip(np.searchsorted(instants, created), 1, instants.size) - 1
    nearest = np.minimum(np.abs(created - instants[at]),
                         np.abs(created - instants[np.minimum(at + 1, instants.size - 1)]))
    return ~np.isnan(created) & (nearest <= width)


def placebo_rate(signup: Tie, other: Tie, eligible: np.ndarray, prior: float) -> float:
    """Among the ``n`` eligible entities tied by ``other`` but not by ``signup``, the share that
    signed up as close to the campaign's sign-ups moved by whole weeks
    (``PLACEBO_WEEKS``), over every move that keeps every moved instant within the creations
    seen (a move past the last one, or before the first, could catch nobody), with one
    pseudo-entity tied at the ``prior`` rate (the sign-up tie's crosswise rate): the rate is
    ``(hits + prior x moves) / ((n + 1) x moves)``, the prior where no move or no entity is left.
    The entities tied at the true instants are left out: where the campaign signs up at the same
    hours every day, its own associates are tied at the moved instants too."""
    own, width, created = signup.signups
    base = np.flatnonzero(eligible & other.tied & ~signup.tied)
    seen = created[~np.isnan(created)]
    first, last = (float(seen.min()), float(seen.max())) if seen.size else (np.inf, -np.inf)
    moves = [w * WEEK for w in PLACEBO_WEEKS if own[0] + w * WEEK >= first and own[-1] + w * WEEK <= last]
    if not moves or base.size == 0:
        return prior
    hits = sum(int(np.count_nonzero(_near(created[base], own + w, width))) for w in moves)
    return (hits + prior * len(moves)) / ((base.size + 1) * len(moves))


def expected_both(a: Tie, b: Tie, eligible: np.ndarray) -> tuple[int, float, float, float, float]:
    """(X, pi_1, pi_2, mu, p) for ties ``a`` and ``b`` among the ``eligible`` entities: the
    rates estimated crosswise with one pseudo-entity (module docstring: a tie most entities
    show leaves few to estimate the other's rate from, and the pseudo-entity keeps that rate at
    least one in those few rather than none), and Fisher's exact p-value of ``X`` given both
    ties' counts (the hypergeometric tail: valid whatever the rates, where the Poisson tail of
    ``mu``, whose estimate falls as ``X`` rises, is not once the ties are common)."""
    in_a, in_b = a.tied & eligible, b.tied & eligible
    n_eligible, n_a, n_b = int(eligible.sum()), int(in_a.sum()), int(in_b.sum())
    x = int(np.count_nonzero(in_a & in_b))
    pi_a = (n_a - x + 1) / (n_eligible - n_b + 1)
    pi_b = (n_b - x + 1) / (n_eligible - n_a + 1)
    p = float(stats.hypergeom.sf(x - 1, n_eligible, n_a, n_b)) if x else 1.0
    return x, pi_a, pi_b, n_eligible * pi_a * pi_b, p


def associations(tables: list[KindTable], created: np.ndarray, campaigns: list[np.ndarray], eligible: np.ndarray,
                 hours: tuple[float, ...], alpha: float, judged: np.ndarray | None = None) -> list[Association]:
    """The associates of each campaign (an array of member entities) among the ``eligible``
    entities (bool; none of them a member), in every pair of ties (:func:`ties`, with ``judged``)
    from different families whose corrected p-value is at most ``alpha``. Deterministic:
    campaigns and ties are taken in their given order, and nothing depends on how entities are
    numbered beyond the ties themselves."""
    n_eligible = int(eligible.sum())
    looked: list[tuple[np.ndarray, Tie, Tie, np.ndarray, float, float, float, float,
                       tuple[float, int, float, float] | None]] = []
    for members in campaigns:
        found = ties(tables, created, members, hours, judged)
        for i, a in enumerate(found):
            for b in found[i + 1:]:
                if a.family == b.family:
                    continue  # an address and its /24, a sign-up hour and a sign-up window: not independent
                x, pi_a, pi_b, mu, p = expected_both(a, b, eligible)
                placebo = None
                for signup, other, prior in ((a, b, pi_a), (b, a, pi_b)):
                    if x and signup.signups is not None:
                        # within the other tie's holders, at the placebo rate
                        within = int(np.count_nonzero(other.tied & eligible))
                        rate = placebo_rate(signup, other, eligible, prior)
                        placebo = (rate, within, within * rate, float(stats.binom.sf(x - 1, within, rate)))
                looked.append((members, a, b, np.flatnonzero(a.tied & b.tied & eligible), pi_a, pi_b, mu, p, placebo))
    looks = len(looked)
    out = []
    for members, a, b, both, pi_a, pi_b, mu, p, placebo in looked:
        expected, worst = (mu, p) if placebo is None else (max(mu, placebo[2]), max(p, placebo[3]))
        corrected = min(1.0, worst * looks)
        if both.size and corrected <= alpha:
            out.append(Association(tuple(members.tolist()), a, b, tuple(both.tolist()), n_eligible, pi_a, pi_b,
                                   expected, worst, corrected, placebo, (mu, p)))
    return out


def behaving(found: list[Association], tail: np.ndarray, eligible: np.ndarray, levels: tuple[float, ...]
             ) -> list[Association]:
    """The associates of each association that also behave in the population's tail: per level
    ``l`` in ``levels``, those whose ``tail`` (the population tail share of the combined
    behaviour score; 1 for an entity not judged) is at most ``l``, when there are any.

    The null: among the organic entities tied in both, behaving in the tail is at most as
    common as among the entities tied by one of the two only, whichever is more so, and at
    least as common as in the population (``l``). Behaviour is not independent of every tie
    (holders of one system prompt ask alike, API clients send more than a chat window), so the
    rate is estimated within each tie's other holders, with one pseudo-entity in the tail as the
    crosswise rates have (:func:`expected_both`: a tie with few other holders leaves the rate at
    one in those few, not at none): ``max(l, (hits_a + 1) / (holders_a + 1), (hits_b + 1) /
    (holders_b + 1))``. The organic entities expected among the kept associates are the
    association's expectation times that rate; the p-value stays the association's (the subset
    is chosen from associates already found). The offers of one association are nested (a
    higher level keeps everyone a lower one does, at a rate at least as high): the budget
    charges a nest what its largest accepted offer costs (``verdicts.Candidate.nest``). A
    harvester tied to a campaign by its infrastructure behaves like one; an office colleague of
    a harvester does not."""
    out = []
    for a in found:
        both = a.first.tied & a.second.tied
        # each tie's other holders' tail shares: the rate at a level is a count below it
        others = [tail[t.tied & eligible & ~both] for t in (a.first, a.second)]
        held = np.asarray(a.entities, dtype=np.int64)
        last = 0
        for level in sorted(levels):  # a set kept at a lower level costs no more there
            kept = held[tail[held] <= level]
            if kept.size == last:
                continue
            last = kept.size
            rates = [(int(np.count_nonzero(o <= level)) + 1) / (o.size + 1) for o in others]
            k = int(np.argmax(rates))
            rate = max(level, rates[k])
            out.append(replace(a, entities=tuple(kept.tolist()), expected=a.expected * rate,
                               behaviour=(level, rate, others[k].size, held.size)))
    return out
