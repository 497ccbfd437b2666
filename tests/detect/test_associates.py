"""A found campaign's associates: entities tied to its members in two independent families are
found when they are far more than independent ties allow, and organic entities whose ties are
independent are not."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distillguard.detect import associates, blocks, nulls
from distillguard.detect import verdicts as dv

HOUR = 3600.0


def key_table(keys: dict[str, list[str]]) -> pa.Table:
    rows = [(a, *k.split("\t", 1)) for a, ks in keys.items() for k in ks]
    return pa.table({"account_id": [r[0] for r in rows], "kind": [r[1] for r in rows], "key": [r[2] for r in rows]})


def scene(n_organic: int, n_members: int, n_associates: int, seed: int, *, client_share: float = 0.01,
          associate_client: bool = True) -> tuple[list[str], dict[str, list[str]], np.ndarray]:
    """Organic accounts with an address of their own (now and then one of a small shared pool),
    a client string from a list (the campaign's ``ua-camp`` at ``client_share``) and a sign-up
    spread over two years; campaign members on four servers, with ``ua-camp``, signed up within a
    day; associates (too quiet to be judged: every other account is) each on one member server,
    with ``ua-camp`` if ``associate_client``, signed up whenever. Returns the account names
    (sorted), their keys and their creation times."""
    rng = np.random.default_rng(seed)
    keys: dict[str, list[str]] = {}
    created: dict[str, float] = {}
    for i in range(n_organic):
        a = f"org-{i:05d}"
        ip = f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" if rng.random() > 0.1 else f"172.16.0.{rng.integers(50)}"
        ua = "ua-camp" if rng.random() < client_share else f"ua-{int(rng.integers(1, 30))}"
        keys[a] = [f"ip\t{ip}", f"subnet\t{ip.rsplit('.', 1)[0]}.0/24", f"user_agent\t{ua}"]
        created[a] = float(rng.uniform(0, 730 * 24 * HOUR))
    for i in range(n_members):
        server = f"5.9.0.{i % 4}"
        keys[f"mem-{i:04d}"] = [f"ip\t{server}", "subnet\t5.9.0.0/24", "user_agent\tua-camp"]
        created[f"mem-{i:04d}"] = 700 * 24 * HOUR + float(rng.uniform(0, 24 * HOUR))
    for i in range(n_associates):
        server = f"5.9.0.{i % 4}"
        keys[f"ass-{i:04d}"] = [f"ip\t{server}", "subnet\t5.9.0.0/24",
                                f"user_agent\t{'ua-camp' if associate_client else 'ua-7'}"]
        created[f"ass-{i:04d}"] = float(rng.uniform(0, 730 * 24 * HOUR))
    names = sorted(keys)
    return names, keys, np.array([created[a] for a in names])


def found(names: list[str], keys: dict[str, list[str]], created: np.ndarray, alpha: float = 0.05
          ) -> list[associates.Association]:
    entity_of = {a: i for i, a in enumerate(names)}
    tables = blocks.kind_tables(key_table(keys), entity_of, len(names), 100_000)
    members = np.array([i for i, a in enumerate(names) if a.startswith("mem-")], dtype=np.int64)
    eligible = np.ones(len(names), dtype=bool)
    eligible[members] = False
    judged = np.array([not a.startswith("ass-") for a in names])
    return associates.associations(tables, created, [members], eligible, (0.25, 1.0), alpha, judged)


def held(names: list[str], result: list[associates.Association]) -> set[str]:
    return {names[e] for a in result for e in a.entities}


def test_accounts_on_a_campaigns_servers_with_its_client_are_its_associates_and_no_organic_one_is():
    """Twelve quiet accounts on the members' servers with the members' client string: tied in the
    network and the client family, where organic entities (1% with that client, none on those
    servers) hold both by chance about never."""
    names, keys, created = scene(3000, 40, 12, seed=1)
    result = found(names, keys, created)
    assert held(names, result) == {a for a in names if a.startswith("ass-")}
    best = min(result, key=lambda a: a.p_corrected)
    assert {best.first.family, best.second.family} == {"network", "client"}
    assert best.expected < 0.1 and best.p_corrected < 1e-10
    assert "'5.9.0." in best.reason() and "'ua-camp'" in best.reason()


def test_one_tie_alone_makes_nobody_an_associate():
    """The same accounts with a client string of their own: on the members' servers only (one
    family, an address and its /24 are not independent), so nobody is offered."""
    names, keys, created = scene(3000, 40, 12, seed=2, associate_client=False)
    assert found(names, keys, created) == []


def test_ties_of_one_family_are_never_paired():
    names, keys, created = scene(500, 20, 6, seed=3)
    entity_of = {a: i for i, a in enumerate(names)}
    tables = blocks.kind_tables(key_table(keys), entity_of, len(names), 100_000)
    members = np.array([i for i, a in enumerate(names) if a.startswith("mem-")], dtype=np.int64)
    eligible = np.ones(len(names), dtype=bool)
    eligible[members] = False
    result = associates.associations(tables, created, [members], eligible, (0.25, 1.0), 1.0)
    assert result and all(a.first.family != a.second.family for a in result)


def test_a_sign_up_near_a_members_is_a_tie_in_the_time_family():
    """Quiet accounts created within minutes of members, with the members' client string, are
    found by the sign-up tie; an organic account created the same hour but with another client is
    not."""
    names, keys, created = scene(3000, 40, 0, seed=4)
    members_at = created[[i for i, a in enumerate(names) if a.startswith("mem-")]]
    keys.update({f"ass-s{i:03d}": ["ip\t192.168.9.%d" % i, "user_agent\tua-camp"] for i in range(10)})
    keys["late-organic"] = ["ip\t192.168.8.1", "user_agent\tua-3"]
    extra = {f"ass-s{i:03d}": members_at[i] + 300.0 for i in range(10)} | {"late-organic": members_at[0] + 60.0}
    old = dict(zip(names, created))
    names = sorted(keys)
    created = np.array([extra.get(a, old.get(a)) for a in names])
    result = found(names, keys, created)
    assert held(names, result) == {f"ass-s{i:03d}" for i in range(10)}
    assert any(a.first.family == "time" or a.second.family == "time" for a in result)


def test_neighbours_who_sign_up_in_the_campaigns_hours_are_priced_as_such_its_own_accounts_are_not():
    """A campaign signs up its members at 09:00-09:30 on 60 days in a row from servers on one /24.
    60 organic neighbours on that /24 (addresses of their own) sign up at 09:00-10:00 on days
    spread over two years, as people of one region do; everyone else at any hour. Against the
    entities at large a sign-up within 15 minutes of a member's is rare, so the neighbours who
    happen to sign up on a campaign day look like associates by the /24 and the sign-up, priced
    as near impossible; within the /24's other holders, the campaign's sign-ups moved by whole
    weeks catch neighbours as often, and the offer is priced at an organic account or more. Ten accounts on the
    members' servers, created minutes after members, are associates by the servers and the
    sign-up at a price the placebo leaves low: no other holder of the servers."""
    rng = np.random.default_rng(8)
    keys: dict[str, list[str]] = {}
    created: dict[str, float] = {}
    day = 24 * HOUR
    for i in range(3000):
        ip = f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"
        keys[f"org-{i:05d}"] = [f"ip\t{ip}", f"subnet\t{ip.rsplit('.', 1)[0]}.0/24", f"user_agent\tua-{i % 29}"]
        created[f"org-{i:05d}"] = float(rng.uniform(0, 730 * day))
    for i in range(60):
        keys[f"nbr-{i:04d}"] = [f"ip\t5.9.0.{10 + i}", "subnet\t5.9.0.0/24", f"user_agent\tua-{i % 29}"]
        created[f"nbr-{i:04d}"] = float(rng.integers(0, 730)) * day + 9 * HOUR + float(rng.uniform(0, HOUR))
    members_at = []
    for i in range(100):
        keys[f"mem-{i:04d}"] = [f"ip\t5.9.0.{i % 4}", "subnet\t5.9.0.0/24", "user_agent\tua-camp"]
        created[f"mem-{i:04d}"] = (600 + i % 60) * day + 9 * HOUR + float(rng.uniform(0, HOUR / 2))
        members_at.append(created[f"mem-{i:04d}"])
    for i in range(10):
        keys[f"ass-{i:04d}"] = [f"ip\t5.9.0.{i % 4}", "subnet\t5.9.0.0/24", f"user_agent\tua-{i % 29}"]
        created[f"ass-{i:04d}"] = members_at[i] + 120.0
    names = sorted(keys)
    at = np.array([created[a] for a in names])
    result = found(names, keys, at)
    by_ties = {(a.first.name, a.second.name): a for a in result}
    servers = by_ties[("ip", "created0.25h")]
    assert held(names, [servers]) == {f"ass-{i:04d}" for i in range(10)}
    assert servers.expected < 0.1
    subnet = by_ties[("subnet", "created0.25h")]
    neighbours = {a for a in held(names, [subnet]) if a.startswith("nbr-")}
    assert neighbours  # neighbours who signed up on a campaign day, near a member
    mu, _ = subnet.independent
    assert mu < 0.2 and subnet.expected >= max(1.0, 5 * mu)  # organic neighbours expected among them
    assert "moved by whole weeks" in subnet.reason()


@pytest.mark.parametrize("seed", range(3))
def test_more_associates_never_weaken_the_evidence(seed):
    """Monotonicity: one more associate on the members' servers with their client never raises
    the best corrected p-value, and everyone found before is still found."""
    names, keys, created = scene(2000, 30, 6, seed=10 + seed)
    before = found(names, keys, created)
    more, more_keys, more_created = scene(2000, 30, 7, seed=10 + seed)
    after = found(more, more_keys, more_created)
    assert min(a.p_corrected for a in after) <= min(a.p_corrected for a in before)
    assert held(names, before) <= held(more, after)


def test_associates_do_not_depend_on_how_entities_are_numbered():
    names, keys, created = scene(1500, 25, 8, seed=21)
    entity_of = {a: i for i, a in enumerate(names)}
    order = np.random.default_rng(0).permutation(len(names))
    shuffled = {a: int(order[i]) for a, i in entity_of.items()}
    back = {e: a for a, e in shuffled.items()}

    def run(of: dict[str, int]) -> set[tuple[str, str, frozenset[str]]]:
        tables = blocks.kind_tables(key_table(keys), of, len(names), 100_000)
        members = np.array(sorted(of[a] for a in names if a.startswith("mem-")), dtype=np.int64)
        eligible = np.ones(len(names), dtype=bool)
        eligible[members] = False
        at = np.empty(len(names))
        for a, e in of.items():
            at[e] = created[entity_of[a]]
        inverse = {e: a for a, e in of.items()}
        return {(r.first.name, r.second.name, frozenset(inverse[e] for e in r.entities))
                for r in associates.associations(tables, at, [members], eligible, (0.25, 1.0), 0.05)}

    assert run(entity_of) == run(shuffled) != set()
    assert back  # the mapping is a bijection by construction


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), organic=st.integers(50, 600), members=st.integers(2, 30),
       tied=st.integers(0, 15), share=st.floats(0.0, 0.6))
def test_every_associate_is_eligible_and_tied_in_two_families(seed, organic, members, tied, share):
    """Whatever the scene: an association's entities are eligible, each tied by both of its ties,
    the ties are of two families, its corrected p-value is at least its own and at most the
    level, and its expectation is positive."""
    names, keys, created = scene(organic, members, tied, seed=seed, client_share=share)
    entity_of = {a: i for i, a in enumerate(names)}
    tables = blocks.kind_tables(key_table(keys), entity_of, len(names), 100_000)
    member_ids = np.array([i for i, a in enumerate(names) if a.startswith("mem-")], dtype=np.int64)
    eligible = np.random.default_rng(seed).random(len(names)) < 0.9
    eligible[member_ids] = False
    for a in associates.associations(tables, created, [member_ids], eligible, (0.25, 1.0), 0.05):
        chosen = np.asarray(a.entities)
        assert eligible[chosen].all() and a.first.tied[chosen].all() and a.second.tied[chosen].all()
        assert a.first.family != a.second.family
        assert a.p_value <= a.p_corrected <= 0.05 and a.expected > 0


@pytest.mark.parametrize("pi_a,pi_b", [(0.01, 0.02), (0.2, 0.005), (0.5, 0.5), (0.001, 0.9)])
def test_the_null_is_calibrated_over_replicates(pi_a, pi_b):
    """Calibration: over 2,000 populations of 2,000 entities whose two ties are independent
    (rates ``pi_a``, ``pi_b``), the share of replicates whose count tied in both has a p-value
    at most 0.05 stays within 0.05 (lower Clopper-Pearson bound), and the mean expectation is
    at least the mean count (the cost is not an underestimate)."""
    rng = np.random.default_rng(7)
    rejected, counts, expected = 0, 0, 0.0
    eligible = np.ones(2000, dtype=bool)
    for _ in range(2000):
        a = associates.Tie("a", "network", "a", rng.random(2000) < pi_a)
        b = associates.Tie("b", "client", "b", rng.random(2000) < pi_b)
        x, _, _, mu, p = associates.expected_both(a, b, eligible)
        rejected += p <= 0.05
        counts, expected = counts + x, expected + mu
    assert nulls.clopper_pearson(rejected, 2000)[0] <= 0.05
    assert expected >= counts


def test_the_budget_offers_associates_at_their_strength_and_keeps_the_campaign():
    """Offered among the results (not after them), associates as strong as the campaign's own
    evidence are accepted before a weaker window that would have spent the budget; the campaign
    keeps its members."""
    names, keys, created = scene(3000, 40, 12, seed=5)
    entity_of = {a: i for i, a in enumerate(names)}
    n = len(names)
    tables = blocks.kind_tables(key_table(keys), entity_of, n, 100_000)
    members = tuple(i for i, a in enumerate(names) if a.startswith("mem-"))
    campaign = dv.Candidate(1e-20, "cohort", "w", "campaign", "", members, 0.01)
    weak = dv.Candidate(1e-3, "cohort", "w", "weak window", "",
                        tuple(i for i, a in enumerate(names) if a.startswith("org-"))[:5], 0.29)
    policy = dv.Policy()
    candidates = {**{a: [] for a in dv.ACTIONS}, "throttle": [campaign, weak]}
    helper = dv.Associates(tables, created, np.zeros(n, dtype=bool), (0.25, 1.0))
    first = dv._within_budget(candidates, n, policy, (), helper)
    assert [f.reason.split(";")[0] for f in first if f.action == "throttle"] == ["campaign", "weak window"]
    again = dv._with_associates(candidates, first, n, policy, (), helper)
    tests = [f.test for f in again if f.action == "throttle"]
    assert tests[0] == "cohort" and "associate" in tests
    caught = {names[e] for f in again if f.action == "throttle" for e in f.entities}
    assert {a for a in names if a.startswith(("ass-", "mem-"))} <= caught


def test_a_resellers_end_users_and_held_entities_are_never_associates():
    """End users of a reseller hold its backend's address and client by construction, and an
    entity a result already holds needs no association: neither is offered."""
    names, keys, created = scene(3000, 40, 12, seed=6)
    entity_of = {a: i for i, a in enumerate(names)}
    n = len(names)
    tables = blocks.kind_tables(key_table(keys), entity_of, n, 100_000)
    members = tuple(i for i, a in enumerate(names) if a.startswith("mem-"))
    quiet = [i for i, a in enumerate(names) if a.startswith("ass-")]
    relayed = np.zeros(n, dtype=bool)
    relayed[quiet[:4]] = True
    findings = [dv.Finding("throttle", "cohort", "w", 1e-20, 1.0, "campaign", members, 0.01),
                dv.Finding("throttle", "cohort", "w", 1e-9, 1.0, "another", tuple(quiet[4:6]), 0.01)]
    judged = np.array([not a.startswith("ass-") for a in names])
    offers = dv.Associates(tables, created, relayed, (0.25, 1.0), judged).offers(findings, 5, 0.05)
    offered = {e for c in offers for e in c.entities}
    assert offered == set(quiet[6:])
    assert all(c.test == "associate" and c.cost > 0 for c in offers)


def test_no_campaign_of_campaign_size_offers_nothing():
    names, keys, created = scene(500, 4, 6, seed=8)
    entity_of = {a: i for i, a in enumerate(names)}
    tables = blocks.kind_tables(key_table(keys), entity_of, len(names), 100_000)
    members = tuple(i for i, a in enumerate(names) if a.startswith("mem-"))
    findings = [dv.Finding("throttle", "cohort", "w", 1e-20, 1.0, "small", members, 0.01),
                dv.Finding("monitor", "cohort", "w", 1e-20, 1.0, "watched", tuple(range(40)), 0.01)]
    helper = dv.Associates(tables, created, np.zeros(len(names), dtype=bool), (0.25, 1.0))
    assert helper.offers(findings, 5, 0.05) == []


def test_associates_join_their_campaign_and_are_not_capped_as_a_group_of_their_own():
    """Three associates (fewer than a campaign's size) are grouped with the campaign they were
    found for: one campaign id, at throttle, and they make no campaign of their own whose
    associates would be sought in turn."""
    names, keys, created = scene(3000, 40, 3, seed=9)
    entity_of = {a: i for i, a in enumerate(names)}
    n = len(names)
    tables = blocks.kind_tables(key_table(keys), entity_of, n, 100_000)
    members = tuple(i for i, a in enumerate(names) if a.startswith("mem-"))
    judged = np.array([not a.startswith("ass-") for a in names])
    helper = dv.Associates(tables, created, np.zeros(n, dtype=bool), (0.25, 1.0), judged)
    campaign = dv.Candidate(1e-20, "cohort", "w", "campaign", "", members, 0.01)
    policy = dv.Policy()
    findings = dv._within_budget({**{a: [] for a in dv.ACTIONS}, "throttle": [campaign]}, n, policy, (), helper)
    (associate,) = [f for f in findings if f.test == "associate"]
    assert {names[e] for e in associate.entities} == {"ass-0000", "ass-0001", "ass-0002"}
    assert set(associate.joins) == set(members)
    evidence = dv.Evidence(names, {i: [a] for i, a in enumerate(names)}, findings, {}, frozenset(), [], [])
    verdicts = evidence.by_account(5)
    assert {verdicts[a][0] for a in ("ass-0000", "ass-0001", "ass-0002")} == {"throttle"}
    assert len({verdicts[a][1] for a in names if a.startswith(("ass-", "mem-"))}) == 1
    assert helper.offers(findings, 5, 0.05) == []


def behaviour_scene(seed: int, client_tail: float | None = None) -> tuple[list[str], list[associates.Association],
                                                                          np.ndarray, np.ndarray]:
    """The servers-and-client scene (3,000 organic, 40 members, 12 associates) with a behaviour
    tail share per entity: organic entities uniform, the first six associates in the top 0.1%,
    the other six like anyone (0.5); twenty organic entities also reach the members' servers
    (so both ties have other holders to estimate a rate from); the organic holders of the
    members' client at ``client_tail`` if given (a client whose users all behave in the tail).
    Returns the names, the associations, the tail shares and the eligible entities."""
    names, keys, created = scene(3000, 40, 12, seed=seed)
    for i in range(20):
        keys[f"org-{i:05d}"] += [f"ip\t5.9.0.{i % 4}", "subnet\t5.9.0.0/24"]
    rng = np.random.default_rng(seed)
    tail = rng.uniform(0.0, 1.0, len(names))
    for i, a in enumerate(names):
        if a.startswith("ass-"):
            tail[i] = 0.001 if int(a[4:]) < 6 else 0.5
        elif client_tail is not None and "user_agent\tua-camp" in keys[a]:
            tail[i] = client_tail
    eligible = np.array([not a.startswith("mem-") for a in names])
    return names, found(names, keys, created), tail, eligible


def test_associates_that_behave_in_the_tail_are_offered_on_their_own_for_less():
    """Six of twelve associates behave in the population's top 0.1%: at level 0.002 they alone
    are kept, each association's expectation times the rate at which the entities tied by one of
    its ties only behave that way (the larger tie's, with one pseudo-entity in the tail, at least
    the level); the six that behave like anyone are at no level below theirs."""
    names, result, tail, eligible = behaviour_scene(31)
    assert result
    kept = associates.behaving(result, tail, eligible, (0.002, 0.01, 0.05))
    strict = [k for k in kept if k.behaviour[0] == 0.002]
    assert strict and all({names[e] for e in k.entities} == {f"ass-{i:04d}" for i in range(6)} for k in strict)
    for k in kept:
        level, rate, within, tied = k.behaviour
        a = next(a for a in result if (a.first.name, a.second.name) == (k.first.name, k.second.name))
        both = a.first.tied & a.second.tied
        rates = [(np.count_nonzero(t.tied & eligible & ~both & (tail <= level)) + 1)
                 / (np.count_nonzero(t.tied & eligible & ~both) + 1) for t in (a.first, a.second)]
        assert rate == pytest.approx(max(level, *rates)) and k.expected == pytest.approx(a.expected * rate)
        assert tied == len(a.entities) and k.p_corrected == a.p_corrected
        assert all(tail[e] <= level for e in k.entities) and k.expected < a.expected
        assert "combined behaviour" in k.reason()


def test_a_tie_whose_other_holders_behave_in_the_tail_too_buys_nothing():
    """Where every organic holder of the members' client behaves in the tail as well (a client
    built for heavy use), behaving in the tail says nothing about an associate: the rate within
    the client's other holders is near one and the kept associates cost about what the whole
    association does."""
    _, result, tail, eligible = behaviour_scene(32, client_tail=0.0005)
    kept = [k for k in associates.behaving(result, tail, eligible, (0.002,))
            if "client" in (k.first.family, k.second.family)]
    assert kept and all(k.behaviour[1] > 0.9 for k in kept)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 1000), who=st.integers(0, 11), start=st.floats(0.003, 0.3), to=st.floats(0.0, 1.0))
def test_behaving_further_in_the_tail_never_makes_an_associate_costlier(seed, who, start, to):
    """Monotonicity: an associate at tail share ``start`` (between levels) moved further into the
    tail (to ``start x to``) is kept at every level it was kept at before, and the cheapest offer
    holding it costs no more."""
    names, result, tail, eligible = behaviour_scene(seed % 7 + 40)
    target = names.index(f"ass-{who:04d}")
    levels = (0.002, 0.01, 0.05, 0.2)

    def offers(t: np.ndarray) -> tuple[float, set[float]]:
        held = [k for k in associates.behaving(result, t, eligible, levels) if target in k.entities]
        return min((k.expected for k in held), default=np.inf), {k.behaviour[0] for k in held}

    before = tail.copy()
    before[target] = start
    after = tail.copy()
    after[target] = start * to
    cost_before, levels_before = offers(before)
    cost_after, levels_after = offers(after)
    kept_before = {level for level in levels if level >= start}
    kept_after = {level for level in levels if level >= start * to}
    assert kept_before <= kept_after
    assert cost_after <= cost_before
    # a level is offered unless it keeps no one more than the level below it
    assert levels_before <= kept_before and levels_after <= kept_after
    assert min(kept_before, default=None) in levels_before | {None}


def test_the_budget_is_offered_behaving_associates_when_the_tail_is_known():
    """Given the tail shares, the budget is offered every association and, besides, its
    associates behaving in the tail, cheaper, joining the same campaign, in one nest with the
    association they were kept from (and in no other association's nest)."""
    names, result, tail, eligible = behaviour_scene(33)
    n = len(names)
    entity_of = {a: i for i, a in enumerate(names)}
    _, keys, created = scene(3000, 40, 12, seed=33)
    for i in range(20):
        keys[f"org-{i:05d}"] += [f"ip\t5.9.0.{i % 4}", "subnet\t5.9.0.0/24"]
    tables = blocks.kind_tables(key_table(keys), entity_of, n, 100_000)
    members = tuple(i for i, a in enumerate(names) if a.startswith("mem-"))
    findings = [dv.Finding("throttle", "cohort", "w", 1e-20, 1.0, "campaign", members, 0.01)]
    judged = np.array([not a.startswith("ass-") for a in names])
    plain = dv.Associates(tables, created, np.zeros(n, dtype=bool), (0.25, 1.0), judged).offers(findings, 5, 0.05)
    both = dv.Associates(tables, created, np.zeros(n, dtype=bool), (0.25, 1.0), judged, tail,
                         (0.002, 0.05)).offers(findings, 5, 0.05)
    assert len(both) > len(plain) and {c.reason for c in plain} <= {c.reason for c in both}
    cheaper = [c for c in both if "combined behaviour" in c.reason]
    assert cheaper and min(c.cost for c in cheaper) < min(c.cost for c in plain)
    assert all(set(c.joins) == set(members) for c in cheaper)
    whole = {c.nest: c for c in plain}
    assert len(whole) == len(plain) and "" not in whole  # a nest per association
    for c in cheaper:
        assert set(c.entities) < set(whole[c.nest].entities) and c.cost < whole[c.nest].cost
