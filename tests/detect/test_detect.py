"""The calibrated tests of detect/: their nulls hold, stronger tells never weaken them, and names,
order and repetition change nothing."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest

from distillguard.detect import blocks, cohorts, evidence, nulls
from distillguard.detect import verdicts as dv
from distillguard.detect.policy import Policy
from distillguard.detect.signals import SIGNALS

T0 = datetime(2026, 4, 22, tzinfo=timezone.utc)
FEATURES = [s.feature for s in SIGNALS if s.feature not in ("account_age_days", "pivot_hours")]


def population(n: int, seed: int) -> tuple[list[str], dict[str, list[str]], dict[str, list[str]]]:
    """``n`` organic accounts: each with its own card, one or two IPs out of a large pool, a user
    agent from a skewed list and session slots of its own (heterogeneous degrees, no structure)."""
    rng = np.random.default_rng(seed)
    accounts = [f"acct-{seed}-{i:05d}" for i in range(n)]
    keys: dict[str, list[str]] = {a: [] for a in accounts}
    for i, a in enumerate(accounts):
        keys[a].append(f"payment\tcard-{seed}-{i}")
        for ip in rng.integers(0, 20 * n, rng.integers(1, 3)):
            keys[a].append(f"ip\t10.{ip // 65536}.{ip // 256 % 256}.{ip % 256}")
        keys[a].append(f"user_agent\tua-{min(int(rng.zipf(1.6)), 400)}")
        for slot in rng.integers(0, 5000, rng.integers(1, 6)):
            keys[a].append(f"sync\t{slot}")
    return accounts, keys, {}


def key_table(keys: dict[str, list[str]]) -> pa.Table:
    rows = [(a, *k.split("\t", 1)) for a, ks in keys.items() for k in ks]
    return pa.table({"account_id": [r[0] for r in rows], "kind": [r[1] for r in rows], "key": [r[2] for r in rows]})


def feature_table(accounts: list[str], seed: int, created: dict[str, datetime] | None = None,
                  extreme: set[str] = frozenset(), orgs: dict[str, str] | None = None,
                  harvest: set[str] = frozenset()) -> pa.Table:
    """Features drawn independently per account; ``extreme`` accounts far out on the share of hosted
    traffic, ``harvest`` accounts 3 standard deviations out on every behaviour feature (what a
    campaign asks for: verdicts.BEHAVIOUR_FEATURES)."""
    rng = np.random.default_rng(seed + 1)
    n = len(accounts)
    created = created or {}
    cols: dict[str, list] = {
        "account_id": accounts,
        "organization_id": [(orgs or {}).get(a) for a in accounts],
        "exchanges": [100] * n,
        "created_at": [created.get(a, T0 + timedelta(hours=float(rng.uniform(0, 24 * 40)))) for a in accounts],
    }
    cols["first_seen"] = [c + timedelta(hours=1) for c in cols["created_at"]]
    for s in SIGNALS:
        if s.feature in FEATURES and s.feature not in cols:
            values = rng.normal(0.0, 1.0, n)
            sign = 1.0 if s.direction == "above" else -1.0
            cols[s.feature] = [float(v + (sign * 10.0 if a in extreme and s.feature == "hosted_share" else 0.0)
                                     + (sign * 3.0 if a in harvest and s.feature in dv.BEHAVIOUR_FEATURES else 0.0))
                               for a, v in zip(accounts, values)]
    return pa.table(cols)


def throttled(evidence: dv.Evidence) -> dict[str, str]:
    return {a: act for a, (act, _, _) in evidence.by_account(5).items() if act in ("throttle", "block")}


def sharing_nothing(accounts: list[str], keys: dict[str, list[str]], name: str, size: int) -> list[str]:
    """``size`` accounts that share nothing: each its own card and address; returns their ids
    (added to ``accounts``/``keys``)."""
    members = [f"{name}-{i}" for i in range(size)]
    for i, m in enumerate(members):
        accounts.append(m)
        keys[m] = [f"payment\t{name}-card-{i}", f"ip\t198.51.100.{i}"]
    return members


def with_values(feats: pa.Table, feature: str, values: dict[str, float]) -> pa.Table:
    """``feats`` with ``feature`` set to ``values`` for the accounts named there."""
    column = feats.column(feature).to_pylist()
    return feats.set_column(feats.column_names.index(feature), feature, pa.array(
        [values.get(a, v) for a, v in zip(feats.column("account_id").to_pylist(), column)]))


def test_bicm_expected_degrees_equal_the_observed_ones():
    rng = np.random.default_rng(0)
    rows = rng.integers(1, 8, 3000)
    cols = np.bincount(rng.integers(0, rows.sum() // 3, rows.sum()))
    model = nulls.fit_bicm(rows, cols)
    p = model.link_probability(np.arange(len(model.x)), np.arange(len(model.y)))
    assert model.converged
    np.testing.assert_allclose((p * model.col_counts).sum(axis=1), model.row_degrees, rtol=1e-4)
    np.testing.assert_allclose((p * model.row_counts[:, None]).sum(axis=0), model.col_degrees, rtol=1e-4)


def test_poisson_tail_is_exact_and_one_for_nothing_observed():
    assert nulls.poisson_sf(0, 3.0) == 1.0
    assert nulls.poisson_sf(1, 0.1) == pytest.approx(1 - np.exp(-0.1))
    assert nulls.poisson_sf(3, 0.5) == pytest.approx(1 - np.exp(-0.5) * (1 + 0.5 + 0.125))


def test_benjamini_hochberg_counts_the_hypotheses_not_tested():
    q_candidates_only = nulls.benjamini_hochberg(np.array([1e-4, 0.01]), total=2)
    q_all_pairs = nulls.benjamini_hochberg(np.array([1e-4, 0.01]), total=10_000)
    assert (q_all_pairs >= q_candidates_only).all()
    assert q_all_pairs[0] == pytest.approx(1.0)


def test_clopper_pearson_bound_covers_the_observed_rate():
    assert nulls.clopper_pearson_upper(0, 3000) == pytest.approx(1 - 0.05 ** (1 / 3000), rel=1e-6)
    lo, hi = nulls.clopper_pearson(5, 100)
    assert lo < 0.05 < hi


@pytest.mark.slow  # 20 replicates of 600 accounts: about 8 s
def test_on_populations_drawn_from_the_null_no_action_is_taken_beyond_the_budget():
    """Calibration: populations with no structure give a finding at throttle in at most the
    budget's share of replicates (here 20 replicates of 600 accounts, budget 1e-4 per entity:
    0.06 expected false throttles per replicate)."""
    hits = 0
    replicates = 20
    for seed in range(replicates):
        accounts, keys, _ = population(600, seed)
        evidence = dv.evaluate(key_table(keys), feature_table(accounts, seed), Policy())
        hits += bool(throttled(evidence))
    assert hits <= nulls.clopper_pearson(1, replicates, 0.99)[1] * replicates  # at most a chance one


def campaign(accounts: list[str], keys: dict[str, list[str]], size: int, shared_ips: int, shared_slots: int,
             seed: int) -> list[str]:
    """A campaign of ``size`` accounts on one card rotating over ``shared_ips`` addresses and
    ``shared_slots`` session slots; returns its account ids (added to ``accounts``/``keys``)."""
    rng = np.random.default_rng(seed + 99)
    members = [f"acct-{seed}-c{i:04d}" for i in range(size)]
    for m in members:
        accounts.append(m)
        keys[m] = ["payment\tcampaign-card"]
        keys[m] += [f"ip\t203.0.113.{i}" for i in rng.choice(shared_ips, min(3, shared_ips), replace=False)]
        keys[m] += [f"sync\tc{i}" for i in rng.choice(shared_slots, min(3, shared_slots), replace=False)]
        keys[m].append("user_agent\tua-1")
    return members


def test_a_campaign_sharing_a_card_addresses_and_schedule_is_throttled_and_customers_are_not():
    accounts, keys, _ = population(800, 7)
    members = campaign(accounts, keys, 40, shared_ips=20, shared_slots=20, seed=7)
    evidence = dv.evaluate(key_table(keys), feature_table(accounts, 7, harvest=set(members)), Policy())
    flagged = throttled(evidence)
    assert len(set(members) & set(flagged)) >= 0.9 * len(members)
    assert not set(flagged) - set(members)
    assert all("p=" in r and "null" in r and "budget" in r for a in members[:3] for r in evidence.by_account(5)[a][2])


def test_the_other_accounts_on_a_campaigns_card_are_throttled_as_its_owners_and_nobody_elses_are():
    """A card has one owner: accounts the campaign keeps for cover on its card, too quiet to judge
    or behaving like anyone, are the owner's accounts and are throttled with it, each at the
    held holders' expected false share. Customers on cards of their own are not, and with
    ``owner_action: monitor`` the cover accounts are only watched."""
    accounts, keys, _ = population(800, 7)
    members = campaign(accounts, keys, 40, shared_ips=20, shared_slots=20, seed=7)
    cover = [f"acct-7-cover{i:02d}" for i in range(12)]
    for i, a in enumerate(cover):
        accounts.append(a)
        keys[a] = ["payment\tcampaign-card", f"ip\t192.0.2.{i}"]
    feats = feature_table(accounts, 7, harvest=set(members))
    quiet = set(cover[:6])  # under the judging minimum of exchanges
    feats = with_values(feats, "exchanges", {a: 5 for a in quiet})
    evidence = dv.evaluate(key_table(keys), feats, Policy())
    flagged = throttled(evidence)
    assert set(cover) <= set(flagged) and len(set(members) & set(flagged)) >= 0.9 * len(members)
    assert not set(flagged) - set(members) - set(cover)
    reasons = evidence.by_account(5)[cover[0]][2]
    assert any("one owner" in r and "payment method" in r and "budget" in r for r in reasons)
    watched = dv.evaluate(key_table(keys), feats, Policy.model_validate({"statistics": {"owner_action": "monitor"}}))
    assert not set(cover) & set(throttled(watched))


def test_a_resellers_end_users_are_no_holders_of_its_card():
    """A reseller's end users (entities ``account::end user``) share its card by construction: the
    reseller owns it, and a campaign among its customers lends the other customers nothing.
    Tokens of kinds without one owner are not owned at all."""
    keys = {"relay::u1": ["payment\tco-card", "ip\t3.0.0.9"], "relay::u2": ["payment\tco-card", "ip\t3.0.0.9"],
            "relay::u3": ["payment\tco-card", "ip\t3.0.0.9"],
            "own-a": ["payment\tshared", "ip\t3.0.0.7"], "own-b": ["payment\tshared", "ip\t3.0.0.7"]}
    names = sorted(keys)
    entity_of = {a: i for i, a in enumerate(names)}
    tables = blocks.kind_tables(key_table(keys), entity_of, len(names), 10_000)
    relayed = np.array([dv.ENTITY_SEPARATOR in a for a in names])
    owned = {(kind, token): tuple(names[e] for e in holders) for kind, token, holders in dv._owned(tables, relayed)}
    assert owned == {("payment", "shared"): ("own-a", "own-b")}
    assert ("payment", "co-card") in {(k, t) for k, t, _ in dv._owned(tables)}


def test_a_cards_other_holders_are_offered_at_the_least_false_share_of_its_held_holders():
    """An offer adds a card's holders that no accepted result holds, at the cheapest held
    holder's expected false share each; a card whose holders are all held, or held by no
    result, or only by a group smaller than a campaign, offers nothing."""
    found = [dv.Finding("throttle", "cohort", "w", 1e-9, 1.0, "r", tuple(range(10)), 0.05),
             dv.Finding("block", "block", "b", 1e-12, 1.0, "r", tuple(range(8, 18)), 0.001),
             dv.Finding("throttle", "block", "b", 1e-6, 1.0, "r", (40, 41), 0.0)]
    owned = [("payment", "shared", np.asarray([3, 9, 50, 51, 52])), ("payment", "held", np.asarray([1, 2])),
             ("payment", "alone", np.asarray([60, 61])), ("payment", "small", np.asarray([40, 70]))]
    (offer,) = dv._owner_offers(owned, found, min_members=5)
    assert offer.entities == (3, 9, 50, 51, 52) and offer.test == "owner"
    assert offer.cost == pytest.approx(0.001 / 10 * 3) and offer.p == 1e-12  # entity 9: the block's share


def test_an_offer_made_beside_the_results_is_charged_for_every_holder():
    found = [dv.Finding("block", "block", "b", 1e-12, 1.0, "r", tuple(range(8, 18)), 0.001)]
    owned = [("payment", "shared", np.asarray([9, 50, 51, 52]))]
    (added,) = dv._owner_offers(owned, found, min_members=5)
    (whole,) = dv._owner_offers(owned, found, min_members=5, whole=True)
    assert added.cost == pytest.approx(0.0001 * 3) and whole.cost == pytest.approx(0.0001 * 4)
    assert "every holder" in whole.note and "every holder" not in added.note


def test_a_cards_owner_is_weighed_with_the_results_not_after_what_they_leave():
    """Owner offers come after an action's results, so windows that cost a tenth of an expected
    false positive per ten accounts can spend the budget before a card's other holders, at a
    twentieth of that, come up. The budget run again with the first run's offers among the
    results (each charged for every holder, the held ones too) takes the card's holders before
    the dearer window, and spends no more than the budget."""
    n = 3000  # throttle budget 1e-4 x 3000 = 0.3
    policy = Policy()
    window = dv.Candidate(1e-18, "cohort", "w", "a window", "", tuple(range(10)), 0.05)
    dearer = dv.Candidate(1e-10, "cohort", "w", "a dearer window", "", tuple(range(100, 110)), 0.24)
    candidates = {a: [] for a in dv.ACTIONS}
    candidates["throttle"] = [window, dearer]
    owned = [("payment", "card", np.asarray([0, *range(20, 39)]))]
    first = dv._within_budget(candidates, n, policy, owned)
    assert {f.test for f in first if f.action == "throttle"} == {"cohort"}  # the owner came up too late
    extended, again = dv._with_owners(candidates, first, n, policy, owned)
    throttled = {e for f in again if f.action == "throttle" for e in f.entities}
    assert {0, *range(20, 39)} <= throttled and not throttled & set(range(100, 110))
    assert sum(f.cost for f in again if f.action == "throttle") <= 1e-4 * n
    assert any(c.test == "owner" for c in extended["throttle"])
    watched = Policy.model_validate({"statistics": {"owner_action": "monitor"}})
    assert dv._with_owners(candidates, first, n, watched, owned) == (candidates, first)


@pytest.mark.slow  # several large populations
def test_a_stronger_tell_never_lowers_the_evidence():
    """Monotonicity: fewer addresses and slots for the same campaign (more shared tokens per pair)
    never raise its best corrected p-value nor shrink what is throttled."""
    best, caught = [], []
    for pool in (60, 30, 15, 8):
        accounts, keys, _ = population(600, 11)
        members = campaign(accounts, keys, 30, shared_ips=pool, shared_slots=pool, seed=11)
        evidence = dv.evaluate(key_table(keys), feature_table(accounts, 11, harvest=set(members)), Policy())
        mine = [f.p_corrected for f in evidence.findings if set(f.entities) & {evidence.entities.index(
            f"account:{m}") for m in members}]
        best.append(min(mine, default=1.0))
        caught.append(len(set(members) & set(throttled(evidence))))
    assert best == sorted(best, reverse=True)
    assert caught == sorted(caught)


def renamed(table: pa.Table, mapping: dict[str, str]) -> pa.Table:
    i = table.column_names.index("account_id")
    return table.set_column(i, "account_id", pa.array([mapping[a] for a in table.column("account_id").to_pylist()]))


def test_verdicts_do_not_depend_on_how_accounts_are_named_or_ordered():
    accounts, keys, _ = population(500, 3)
    members = campaign(accounts, keys, 25, shared_ips=10, shared_slots=10, seed=3)
    k, f = key_table(keys), feature_table(accounts, 3, harvest=set(members))
    rng = np.random.default_rng(5)
    mapping = {a: f"zz-{h}" for a, h in zip(accounts, rng.permutation(len(accounts)))}
    order = rng.permutation(k.num_rows)
    before = throttled(dv.evaluate(k, f, Policy()))
    after = throttled(dv.evaluate(renamed(k, mapping).take(order), renamed(f, mapping).take(
        rng.permutation(f.num_rows)), Policy()))
    assert before and {mapping[a]: v for a, v in before.items()} == after


def test_the_same_input_gives_the_same_findings():
    accounts, keys, _ = population(400, 4)
    members = campaign(accounts, keys, 20, shared_ips=10, shared_slots=10, seed=4)
    k, f = key_table(keys), feature_table(accounts, 4, harvest=set(members))
    one, two = dv.evaluate(k, f, Policy()), dv.evaluate(k, f, Policy())
    assert one.findings == two.findings and one.by_account(5) == two.by_account(5)


def test_a_burst_whose_accounts_differ_on_every_other_feature_is_kept_whole_at_the_windows_full_cost():
    """The profile check is an offer, not a gate: a campaign arriving together, each account
    extreme on the one feature the window is found on, some of them far out on the others and
    some ordinary (paraphrased prompts, volumes drawn per account), is kept whole, every chance
    extreme of the window's organic arrivals charged."""
    accounts, keys, _ = population(2000, 9)
    members = sharing_nothing(accounts, keys, "burst", 24)
    burst = {m: T0 + timedelta(days=20, minutes=11 * i) for i, m in enumerate(members)}
    feats = feature_table(accounts, 9, burst)
    rng = np.random.default_rng(9)
    own = "cot_elicitation_share"
    feats = with_values(feats, own, dict(zip(members, rng.uniform(4.0, 6.0, len(members)).tolist())))
    far = np.arange(len(members)) % 12 < 7  # spread through the burst
    for f in dv.BEHAVIOUR_FEATURES:  # 14 far out on every other behaviour, 10 ordinary, each its own way
        if f != own:
            sign = 1.0 if next(s.direction for s in SIGNALS if s.feature == f) == "above" else -1.0
            feats = with_values(feats, f, dict(zip(members, (sign * np.where(
                far, rng.uniform(3.0, 5.0, far.size), rng.uniform(-1.0, 0.0, far.size))).tolist())))
    flagged = throttled(dv.evaluate(key_table(keys), feats, Policy()))
    assert len(set(members) & set(flagged)) >= 22 and len(set(flagged) - set(members)) <= 1


@pytest.mark.slow  # two populations of 4,000 accounts: about 7 s
def test_a_shared_nothing_campaign_arriving_together_is_a_cohort_and_spread_out_it_is_not():
    accounts, keys, _ = population(4000, 8)
    members = sharing_nothing(accounts, keys, "stealth", 30)
    burst = {m: T0 + timedelta(days=20, minutes=7 * i) for i, m in enumerate(members)}
    spread = {m: T0 + timedelta(days=1.3 * i) for i, m in enumerate(members)}
    together = throttled(dv.evaluate(key_table(keys), feature_table(accounts, 8, burst, set(members)), Policy()))
    apart = throttled(dv.evaluate(key_table(keys), feature_table(accounts, 8, spread, set(members)), Policy()))
    # the window's chance members (n * pi, within the budget of 1e-4 x 4,030 entities) are accepted
    # by construction: at most one here
    assert len(set(members) & set(together)) >= 20 and len(set(together) - set(members)) <= 1
    assert not apart


@pytest.mark.slow  # four populations of 4,000 accounts: about 14 s
def test_a_bigger_burst_never_weakens_a_cohort():
    """A bigger burst of accounts that are extreme the same way gets a smaller best p-value and
    never fewer of its accounts throttled (the campaign's own members are not charged as chance)."""
    best, caught = [], []
    for size in (10, 20, 40, 80):
        accounts, keys, _ = population(4000, 9)
        members = [f"stealth-{i}" for i in range(size)]
        accounts += members
        for i, m in enumerate(members):
            keys[m] = [f"payment\ts-{i}"]
        burst = {m: T0 + timedelta(days=10, minutes=3 * i) for i, m in enumerate(members)}
        feats = feature_table(accounts, 9, burst, set(members))
        entity_of = {a: i for i, a in enumerate(sorted(accounts))}
        values, attributes, _ = dv._entity_features(feats, entity_of, len(accounts), 20)
        windows = cohorts.window_tests(values, attributes, Policy().statistics.cohort_levels,
                                       Policy().statistics.cohort_windows_hours)
        best.append(min(c.p_corrected for c in windows))
        flagged = throttled(dv.evaluate(key_table(keys), feats, Policy()))
        caught.append(len(set(members) & set(flagged)))
    assert best == sorted(best, reverse=True)
    assert caught == sorted(caught) and caught[0] == 10


def test_a_declared_organisation_is_one_entity_so_its_team_is_not_a_campaign():
    accounts, keys, _ = population(600, 12)
    team = [f"team-{i}" for i in range(20)]
    for m in team:
        accounts.append(m)
        keys[m] = ["payment\tteam-card", "ip\t192.0.2.10", "ip\t192.0.2.11", "sync\tteam-standup"]
    orgs = {m: "org-acme" for m in team}
    evidence = dv.evaluate(key_table(keys), feature_table(accounts, 12, orgs=orgs), Policy())
    assert not set(throttled(evidence)) & set(team)


def test_the_rare_cut_follows_the_pair_budget_not_a_fixed_degree():
    degrees = np.array([2] * 100 + [50] * 3 + [2000])
    assert blocks.rare_cut(degrees, 100) == 2
    assert blocks.rare_cut(degrees, 100 + 3 * 1225) == 50
    assert blocks.rare_cut(degrees, 10**7) == 2000


def test_tail_shares_count_ties_against_the_entity():
    shares = cohorts.tail_shares(np.array([1.0, 1.0, 0.0, np.nan]), "above")
    assert list(shares) == [2 / 3, 2 / 3, 1.0, 1.0]


def verdict_rows(rows: list[tuple[str, str]], as_of: datetime) -> pa.Table:
    from distillguard.store.verdicts import VERDICT_SCHEMA

    return pa.table({"account_id": [a for a, _ in rows], "action": [x for _, x in rows],
                     "score": [0.5] * len(rows), "campaign_id": [None] * len(rows),
                     "reasons": [[f"why {a}"] for a, _ in rows], "as_of": [as_of] * len(rows)},
                    schema=VERDICT_SCHEMA)


def test_an_earlier_throttle_is_kept_while_evidence_stays_and_lifted_when_it_is_gone():
    from distillguard.detect import history

    earlier = verdict_rows([("a", "throttle"), ("b", "block"), ("c", "throttle"), ("d", "monitor")], T0)
    now = verdict_rows([("a", "monitor"), ("b", "allow"), ("c", "allow"), ("d", "allow")], T0 + timedelta(days=1))
    kept = history.carried(now, earlier, evidenced={"a", "b", "d"}, as_of=T0 + timedelta(days=1), lookback_days=30)
    actions = dict(zip(kept.column("account_id").to_pylist(), kept.column("action").to_pylist()))
    assert actions == {"a": "throttle", "b": "block", "c": "allow", "d": "allow"}
    assert kept.column("reasons").to_pylist()[0][0].startswith("held from the scan as of")
    stale = history.carried(now, earlier, {"a", "b"}, T0 + timedelta(days=40), lookback_days=30)
    assert stale.column("action").to_pylist() == now.column("action").to_pylist()


@pytest.mark.slow  # several large populations
def test_recall_does_not_fall_as_the_same_population_grows():
    """Scale: the same population and campaign at 1x, 2x and 4x (customers and campaign accounts
    alike) are caught at a share that does not fall beyond its binomial interval."""
    shares = []
    for scale in (1, 2, 4):
        accounts, keys, _ = population(300 * scale, 21)
        members = campaign(accounts, keys, 15 * scale, shared_ips=8 * scale, shared_slots=8 * scale, seed=21)
        flagged = throttled(dv.evaluate(key_table(keys), feature_table(accounts, 21, harvest=set(members)), Policy()))
        caught = len(set(members) & set(flagged))
        assert not set(flagged) - set(members)
        shares.append((caught, len(members)))
    for (k0, n0), (k1, n1) in zip(shares, shares[1:]):
        # the larger scale's interval reaches the smaller scale's: recall did not fall beyond chance
        assert nulls.clopper_pearson(k1, n1, 0.95)[1] >= nulls.clopper_pearson(k0, n0, 0.95)[0]


def test_a_hold_never_outlives_the_lookback_of_its_finding_and_spares_allowlisted_accounts():
    from distillguard.detect import history

    found = verdict_rows([("a", "throttle"), ("b", "throttle")], T0)
    day20 = history.carried(verdict_rows([("a", "monitor"), ("b", "monitor")], T0 + timedelta(days=20)), found,
                            {"a", "b"}, T0 + timedelta(days=20), 30, capped=frozenset({"b"}))
    assert day20.column("action").to_pylist() == ["throttle", "monitor"]
    held = day20.set_column(5, "as_of", pa.array([T0 + timedelta(days=20)] * 2, pa.timestamp("us", tz="UTC")))
    day35 = history.carried(verdict_rows([("a", "monitor"), ("b", "monitor")], T0 + timedelta(days=35)), held,
                            {"a", "b"}, T0 + timedelta(days=35), 30)
    assert day35.column("action").to_pylist() == ["monitor", "monitor"]


def test_a_group_smaller_than_a_campaign_counts_entities_and_is_capped_at_monitor():
    """An organisation of ten accounts and one outside account are two entities: below a campaign's
    five, so monitor at most; a monitor-level cohort touching the outsider joins no group."""
    team = [f"t{i}" for i in range(10)]
    evidence = dv.Evidence(
        ["org:acme", "account:x", "account:y", "account:z", "account:w", "account:v"],
        {0: team, 1: ["x"], 2: ["y"], 3: ["z"], 4: ["w"], 5: ["v"]},
        [dv.Finding("throttle", "block", "BiCM", 1e-9, 0.5, "r", (0, 1), 0.01),
         dv.Finding("monitor", "cohort", "binomial window", 1e-3, 50.0, "m", (1, 2, 3, 4, 5), 0.5)])
    actions = {a: act for a, (act, _, _) in evidence.by_account(5).items()}
    assert set(actions.values()) == {"monitor"} and len(actions) == 15


def test_late_arrivals_judged_because_they_are_fast_are_no_cohort_in_an_observation_view():
    """Organic users arrive at a steady pace and send at rates independent of when they came; an
    account is judged once it has sent the judging minimum. Just before a scan only the heavy
    recent arrivals are judged, so a window there is all heavy users against earlier arrivals
    judged however slowly: a cohort by selection. In the observation views every entity is
    judged alike (first seen at least H before the scan, judged within H), and the same
    population holds no cohort; a real burst of heavy arrivals still is one. (Without the views
    the rate null alone clears these windows too: the heavy users keep their pace.)"""
    rng = np.random.default_rng(5)
    n, day, minimum = 4000, 86400.0, 20
    start = 1.7e9
    first_seen = start + np.sort(rng.uniform(0, 28 * day, n))
    as_of = start + 28 * day
    per_day = np.exp(rng.normal(1.5, 1.3, n))  # exchanges a day: heavy users are few
    judged_at = first_seen + minimum / per_day * day
    volume = np.where(judged_at <= as_of, per_day * rng.lognormal(0, 0.1, n), np.nan)
    features = {"volume": (volume, "above")}
    levels, widths = Policy().statistics.cohort_levels, (24.0, 168.0)
    arrivals = {"first_seen": first_seen}
    observation = cohorts.Observation(first_seen, np.where(judged_at <= as_of, judged_at, np.nan), as_of)
    assert not cohorts.window_tests(features, arrivals, levels, widths, alpha=0.01, observation=observation)
    # a burst of 30 heavy accounts in one day, ten days before the scan, is a cohort in its view
    burst = rng.choice(np.flatnonzero((first_seen > as_of - 11 * day) & (first_seen < as_of - 10 * day)), 30,
                       replace=False)
    heavy = volume.copy()
    heavy[burst] = 400.0
    judged = observation.judged_at.copy()
    judged[burst] = first_seen[burst] + 3600.0
    found = cohorts.window_tests({"volume": (heavy, "above")}, arrivals, levels, widths, alpha=0.01,
                                 observation=cohorts.Observation(first_seen, judged, as_of))
    assert found and set(burst.tolist()) <= set().union(*(c.members for c in found))
    assert all(c.horizon > 0 and "hours before the scan" in c.reason() for c in found)


def test_each_window_is_judged_against_exactly_the_entities_that_arrived_before_it():
    """The vectorised window scan equals testing every window alone: with fewer entities than
    reference snapshots, a window's reference is every earlier arrival less the excluded ones, its
    ranks follow from the levels, and its p-value is the larger of its count of extremes'
    beta-binomial tail and the binomial one of the rate null (the reference's extremes in the
    later half of its span, from the midpoint of its first and last arrivals, excluded ones
    counted in the span only)."""
    from scipy import stats

    rng = np.random.default_rng(21)
    n = 50
    values = np.round(rng.normal(size=n), 1)
    values[rng.choice(n, 4, replace=False)] = np.nan
    seconds = 1.7e9 + np.round(rng.uniform(0, 6 * 3600, n) / 900) * 900
    excluded = frozenset(int(e) for e in rng.choice(n, 5, replace=False))
    levels, widths = (0.05, 0.2), (1.0, 3.0)
    found = cohorts.window_tests({"f": (values, "above")}, {"first_seen": seconds}, levels, widths, min_extreme=2,
                                 excluded=excluded)
    expected = set()
    judged = [i for i in range(n) if not np.isnan(values[i])]
    for width in widths:
        span = width * 3600
        for offset in (0.0, 0.5):
            starts = {(np.floor(s / span - offset) + offset) * span for s in seconds}
            for start in starts:
                inside = [i for i in range(n) if start <= seconds[i] < start + span and not np.isnan(values[i])]
                earlier = sorted((values[i] for i in range(n) if seconds[i] < start and not np.isnan(values[i])
                                  and i not in excluded), reverse=True)
                r = len(earlier)
                for k in sorted({max(1, int(level * (r + 1))) for level in levels}) if r else []:
                    members = tuple(sorted(i for i in inside if values[i] > earlier[k - 1]))
                    if len(inside) >= 2 and len(members) >= 2:
                        # and the rate null: the reference's extremes in the later half of its span
                        x = len(members)
                        last, first = max(seconds[i] for i in judged if seconds[i] < start), min(seconds[judged])
                        middle = (first + last) / 2
                        paced = sum(1 for i in judged if middle <= seconds[i] < start and i not in excluded
                                    and values[i] >= earlier[k - 1])
                        rate = stats.binom.sf(x - 1, x + paced, span / (span + last - middle)) \
                            if last > middle else 1.0
                        p = max(stats.betabinom.sf(x - 1, len(inside), k, r + 1 - k), rate)
                        expected.add((width, start, k, members, round(float(p), 12)))
    assert expected and {(c.width_hours, c.start, c.rank, c.members, round(c.p_value, 12)) for c in found} == expected


def profile_case(seed: int = 3, n: int = 2000, size: int = 30):
    """A population on six features, a cohort extreme on all six, and one outsider extreme on the
    window's feature only (an organic entity that happened to arrive with the cohort)."""
    rng = np.random.default_rng(seed)
    names = [f"f{i}" for i in range(6)]
    values = {f: rng.normal(size=n) for f in names}
    cohort = list(range(size))
    outsider = size
    for f in names:
        values[f][cohort] += 3.0
    values["f0"][outsider] += 6.0
    features = {f: (v, "above") for f, v in values.items()}
    found = [cohorts.Cohort("f0", "above", 0.01, "first_seen", 24.0, 0.0, size + 5, size + 1, 0.01, 1e-20, 1e-15,
                            tuple(cohort + [outsider]))]
    return features, found, cohort, outsider


def test_a_cohort_member_must_be_as_extreme_as_the_cohort_on_the_features_that_did_not_choose_the_window():
    features, found, cohort, outsider = profile_case()
    (kept,) = cohorts.profile_members(found, features, 0.05)
    assert outsider not in kept.members and len(set(kept.members) & set(cohort)) >= 25
    assert kept.extreme == found[0].extreme and kept.p_corrected == found[0].p_corrected  # cost unchanged
    assert "left out" in kept.reason()


def test_a_window_is_charged_only_for_the_chance_members_its_check_would_keep():
    """The window's chance members are its organic arrivals extreme on its feature; the check keeps
    only those close to the cohort's profile, so the charge is the chance count times the share of
    the reference's extreme entities (the cohort's own members left out) that are that close:
    (1 + close extremes) / (1 + extremes), never 0."""
    features, found, cohort, outsider = profile_case()
    check = cohorts.ProfileCheck(features, 0.05, checks=1)
    kept = check(found[0])
    _, threshold, profile = check.close[(found[0].members, "f0")]
    logs = np.log(np.column_stack([cohorts.tail_shares(features[f][0], "above") for f in sorted(features)]))
    distance = np.maximum(0.0, logs - profile).sum(axis=1)
    extreme = (np.exp(logs[:, 0]) <= found[0].rate) & ~np.isin(np.arange(logs.shape[0]), found[0].members)
    share = (1 + (extreme & (distance < threshold)).sum()) / (1 + extreme.sum())
    assert kept.survival == pytest.approx(share) and 0 < share < 1
    assert kept.chance_members == pytest.approx(found[0].chance_members * share)
    assert f"as {share:.3g} of the reference's extreme entities would be" in kept.reason()


def test_the_survival_share_is_estimated_on_the_window_reference_not_on_the_campaign_arriving_later():
    """With arrival times, the chance members' survival is estimated on the entities the window's
    organic arrivals are exchangeable with under the null: the k most extreme of its reference (its
    first r entities in arrival order). The campaign's later arrivals, extreme and close to its
    profile by construction, are not in it, however many there are."""
    rng = np.random.default_rng(5)
    n, size, later = 2000, 30, 300
    names = [f"f{i}" for i in range(6)]
    values = {f: rng.normal(size=n) for f in names}
    cohort, after = list(range(size)), list(range(size, size + later))
    for f in names:
        values[f][cohort + after] += 3.0
    features = {f: (v, "above") for f, v in values.items()}
    seconds = np.full(n, 0.0)  # the organic population arrived first
    seconds[cohort] = 100.0
    seconds[after] = 200.0 + np.arange(later)
    r = n - size - later
    k = 20  # the window's rank: its members exceed all but 19 of the r earlier arrivals
    window = cohorts.Cohort("f0", "above", k / (r + 1), "first_seen", 24.0, 100.0, size, size, k / (r + 1), 1e-20,
                            1e-15, tuple(cohort), rank=k, reference=r)
    by_population = cohorts.ProfileCheck(features, 0.05, checks=1)(window)
    check = cohorts.ProfileCheck(features, 0.05, checks=1, attributes={"first_seen": seconds})
    by_reference = check(window)
    organic = np.setdiff1d(np.arange(n), cohort + after)
    top = organic[np.argsort(-values["f0"][organic], kind="stable")[:k]]
    assert sorted(check.reference_extremes(window)) == sorted(top)
    _, threshold, profile = check.close[(window.members, "f0")]
    logs = np.log(np.column_stack([cohorts.tail_shares(features[f][0], "above") for f in names]))
    close = (np.maximum(0.0, logs[top] - profile).sum(axis=1) < threshold).sum()
    assert by_reference.survival == pytest.approx((1 + close) / (1 + k))
    assert by_reference.survival < by_population.survival  # the later campaign inflated the population's
    assert check.least_survival(window) == pytest.approx(1 / (1 + k))
    assert check.least_survival(window) <= by_reference.survival


def test_a_reference_tied_at_its_rank_keeps_its_earliest_arrivals_and_a_stricter_rank_keeps_a_prefix():
    """Share features tie in thousands (every scripted account at 1.0): which tied entities stand
    for the reference's extremes is fixed by arrival, not by how a selection routine breaks ties,
    so the survival share, and the budget that reads it, are the same on every numpy."""
    n = 1000
    values = np.zeros(n)
    values[::3] = 1.0  # 334 entities tied at the top
    values[5] = 2.0
    seconds = np.arange(n, dtype=float)[::-1].copy()  # entity n - 1 arrived first
    features = {"share": (values, "above"), "other": (np.arange(n, dtype=float), "above")}
    check = cohorts.ProfileCheck(features, 0.05, checks=1, attributes={"first_seen": seconds})

    def window(rank: int) -> cohorts.Cohort:
        return cohorts.Cohort("share", "above", rank / n, "first_seen", 24.0, 0.0, 3, 3, rank / n, 1e-9, 1e-9,
                              (0, 1, 2), rank=rank, reference=n - 1)

    strict, loose = check.reference_extremes(window(10)), check.reference_extremes(window(40))
    earliest_tied = [e for e in range(n - 1, 0, -1) if values[e] == 1.0][:39]
    assert loose.tolist() == [5] + earliest_tied  # most extreme first, then ties by arrival
    assert strict.tolist() == loose[:10].tolist()
    assert check.reference_extremes(window(10)).tolist() == strict.tolist()  # read from the looser ranking


def test_a_member_more_extreme_on_another_feature_is_never_left_out_for_it():
    features, found, cohort, _ = profile_case()
    (before,) = cohorts.profile_members(found, features, 0.05)
    for member in cohort:
        stronger = {f: (v.copy(), d) for f, (v, d) in features.items()}
        stronger["f3"][0][member] += 5.0
        (after,) = cohorts.profile_members(found, stronger, 0.05)
        assert member not in before.members or member in after.members


def test_a_cohort_extreme_on_one_feature_only_keeps_every_extreme_member():
    """Members no closer to their profile on the other features than anyone else: the check says
    nothing, so it removes nothing."""
    rng = np.random.default_rng(8)
    n, size = 2000, 40
    features = {f"f{i}": (rng.normal(size=n), "above") for i in range(6)}
    features["f0"][0][:size] += 6.0
    found = [cohorts.Cohort("f0", "above", 0.01, "first_seen", 24.0, 0.0, size, size, 0.01, 1e-20, 1e-15,
                            tuple(range(size)))]
    (kept,) = cohorts.profile_members(found, features, 0.05)
    assert kept.members == found[0].members and kept.profiled_out == 0


def test_the_budget_goes_to_the_strongest_results_first_and_among_equals_to_the_cheapest_per_entity():
    """Three significant results, the budget fits one: the smallest p-value wins; of two results
    whose p-values are equal (both below the floating-point range), the one costing less per
    entity wins."""
    policy = Policy()
    n = 10_000  # throttle budget: 1e-4 x 10,000 = 1 expected false positive

    def accepted(candidates):
        got = dv._within_budget({**{a: [] for a in dv.ACTIONS}, "throttle": candidates}, n, policy)
        return [f.reason.split(";")[0] for f in got if f.action == "throttle"]

    big = dv.Candidate(0.0, "cohort", "w", "big window", "", tuple(range(10)), 0.9)
    tight = dv.Candidate(0.0, "cohort", "w", "tight window", "", tuple(range(100, 130)), 0.6)
    weaker = dv.Candidate(1e-6, "cohort", "w", "weaker window", "", tuple(range(200, 260)), 0.5)
    assert accepted([big, tight]) == ["tight window"]
    assert accepted([weaker, big]) == ["big window"]


def test_results_beyond_any_correction_are_taken_cheapest_per_new_entity():
    """A wave seen on two features is two windows at p = 0 with almost the same members, and a
    block at p = 1e-40 ties forty other accounts cheaply. All three are equally certain
    (statistics.certain_p): once one window is taken, the other adds one account for its full
    cost, so the budget goes to the block instead of to that account. (The order alone: no cap on
    a result's cost per entity it adds.)"""
    policy = Policy()
    policy = policy.model_copy(update={"statistics": policy.statistics.model_copy(update={"finding_fdr": 1.0})})
    n = 10_000  # throttle budget: 1 expected false positive
    wave_a = dv.Candidate(0.0, "cohort", "w", "wave on feature a", "", tuple(range(100)), 0.5)
    wave_b = dv.Candidate(0.0, "cohort", "w", "wave on feature b", "", (*range(99), 100), 0.4)
    block = dv.Candidate(1e-40, "block", "b", "block", "", tuple(range(200, 240)), 0.2)
    got = dv._within_budget({**{a: [] for a in dv.ACTIONS}, "throttle": [wave_a, wave_b, block]}, n, policy)
    assert [f.reason.split(";")[0] for f in got] == ["wave on feature b", "block"]
    assert {e for f in got for e in f.entities} == {*range(99), 100, *range(200, 240)}
    # above the certain level, strength still comes first: a weaker block waits for both windows
    weaker = dv.Candidate(1e-6, "block", "b", "weaker block", "", tuple(range(200, 240)), 0.2)
    got = dv._within_budget({**{a: [] for a in dv.ACTIONS}, "throttle": [wave_a, wave_b, weaker]}, n, policy)
    assert [f.reason.split(";")[0] for f in got] == ["wave on feature b", "wave on feature a"]


def test_a_nest_of_offers_costs_what_its_largest_accepted_one_does():
    """An association of 20 entities costing 0.15 and the 16 of them behaving in the tail costing
    0.05, one nest: the subset is taken first (cheaper per entity), then the whole for the 0.10 it
    adds, 0.15 in all (each finding keeps its own cost, 0.05 and 0.15). Charged in full twice, the whole would cost 0.0375 per entity it adds, above
    the most the policy allows here (finding_fdr 0.03), and its four other entities would be lost
    for having been offered a cheaper subset as well."""
    policy = Policy()
    policy = policy.model_copy(update={"statistics": policy.statistics.model_copy(update={"finding_fdr": 0.03})})
    n = 10_000  # throttle budget: 1 expected false positive
    whole = dv.Candidate(1e-9, "associate", "t", "whole", "", tuple(range(20)), 0.15, nest="a")
    behaving = dv.Candidate(1e-9, "associate", "t", "behaving", "", tuple(range(16)), 0.05, nest="a")

    def run(candidates):
        got = dv._within_budget({**{a: [] for a in dv.ACTIONS}, "throttle": candidates}, n, policy)
        return [f for f in got if f.action == "throttle"]

    alone = run([whole])
    assert [f.reason.split(";")[0] for f in alone] == ["whole"] and alone[0].cost == pytest.approx(0.15)
    both = run([whole, behaving])
    assert [f.reason.split(";")[0] for f in both] == ["behaving", "whole"]
    assert "accepting it costs 0.1 expected" in both[1].reason and "charged 0.05 already" in both[1].reason
    assert [f.cost for f in both] == pytest.approx([0.05, 0.15])  # each result's own: its members' false share
    assert {e for f in both for e in f.entities} == set(range(20))
    # not one nest: the whole is charged in full after the subset and no longer pays for itself
    apart = run([whole, dv.Candidate(1e-9, "associate", "t", "behaving", "", tuple(range(16)), 0.05)])
    assert {e for f in apart for e in f.entities} == set(range(16))


def test_a_windows_checked_member_sets_are_charged_in_full_and_the_whole_window_only_what_it_adds():
    """A window's members checked on their profile (0..11, 0.02) and those tied in place (8..15,
    0.03) overlap without either holding the other: together they may hold the chance members of
    both, so each is charged in full; every extreme entity of the window (0..19, 0.12) holds them
    both and is charged the 0.07 it adds to them (0.12 in all, what the whole window's chance
    members are). Charged in full, the whole would cost 0.03 per entity it adds, above the most
    the policy allows here, and the window's four unchecked members would be lost."""
    policy = Policy()
    policy = policy.model_copy(update={"statistics": policy.statistics.model_copy(update={"finding_fdr": 0.02})})
    n = 10_000  # throttle budget: 1 expected false positive
    profiled = dv.Candidate(1e-9, "cohort", "w", "profiled", "", tuple(range(12)), 0.02, nest="w",
                            holds_nest=False)
    placed = dv.Candidate(1e-9, "cohort", "w", "placed", "", tuple(range(8, 16)), 0.03, nest="w", holds_nest=False)
    whole = dv.Candidate(1e-9, "cohort", "w", "whole", "", tuple(range(20)), 0.12, nest="w")

    def run(candidates):
        got = dv._within_budget({**{a: [] for a in dv.ACTIONS}, "throttle": candidates}, n, policy)
        return {f.reason.split(";")[0]: f for f in got if f.action == "throttle"}

    found = run([whole, placed, profiled])
    assert set(found) == {"profiled", "placed", "whole"}
    assert "accepting it costs 0.03 expected" in found["placed"].reason  # not discounted by the profiled
    assert "accepting it costs 0.07 expected" in found["whole"].reason
    assert {e for f in found.values() for e in f.entities} == set(range(20))
    # the whole offered apart from its checked sets is charged in full and no longer pays for itself
    apart = run([dv.Candidate(1e-9, "cohort", "w", "whole", "", tuple(range(20)), 0.12), placed, profiled])
    assert set(apart) == {"profiled", "placed"}


@pytest.mark.parametrize("seed", range(5, 10))
def test_a_group_is_judged_against_exactly_the_entities_outside_it(seed):
    """A group's count of extremes on each (feature, rank) is beta-binomial against the judged
    entities outside it, less the excluded ones (an excluded member of the group still counts in
    it); the best one is corrected for every look."""
    from scipy import stats

    rng = np.random.default_rng(seed)
    n = 60
    values = {"f": np.round(rng.normal(size=n), 1), "g": np.round(rng.normal(size=n), 1)}
    values["f"][rng.choice(n, 4, replace=False)] = np.nan
    values["g"][:3] += 2.0
    group = np.arange(10)
    excluded = frozenset({3, 20, 21, 22})
    levels = (0.05, 0.2)
    found = cohorts.group_behaviour(cohorts.ranked({f: (v, "above") for f, v in values.items()}, excluded), group,
                                    levels)
    tried = []
    for f in sorted(values):
        v = values[f]
        outside = sorted((v[i] for i in range(n) if i >= 10 and i not in excluded and not np.isnan(v[i])), reverse=True)
        mine = [v[i] for i in group if not np.isnan(v[i])]
        r = len(outside)
        for k in sorted({max(1, int(level * (r + 1))) for level in levels}):
            x = sum(m > outside[k - 1] for m in mine)
            tried.append((float(stats.betabinom.sf(x - 1, len(mine), k, r + 1 - k)) if x else 1.0, f, k, x))
    p, f, k, x = min(tried)
    assert (found.feature, found.rank, found.extreme) == (f, k, x)
    assert found.p_value == pytest.approx(p) and found.p_corrected == pytest.approx(min(1.0, p * len(tried)))


def co_located(accounts: list[str], keys: dict[str, list[str]], start: int, name: str, size: int = 40) -> list[str]:
    """``size`` accounts that share one system prompt; half of them also share addresses from a pool
    of five, the other half session slots from a pool of five: each member is tied to the group in
    one family only, the group in two."""
    rng = np.random.default_rng(start)
    members = accounts[start:start + size]
    for i, m in enumerate(members):
        keys[m] = keys[m] + [f"system_prompt\tprompt-{name}"]
        pool = [f"ip\t198.51.{start % 256}.{j}" for j in range(5)] if i % 2 else [f"sync\t{name}-{j}" for j in range(5)]
        keys[m] += list(rng.choice(pool, 3, replace=False))
    return members


def test_a_co_located_group_that_harvests_is_throttled_and_one_that_behaves_like_everyone_is_not():
    """Co-location (an office, a campus) is what the block tests find; what the group asks for tells
    a campaign from an office. Members tied to the group in one family only are throttled when
    the group is extreme on behaviour against everyone else, and never when it is ordinary."""
    accounts, keys, _ = population(1200, 11)
    campaign = co_located(accounts, keys, 0, "harvest")
    office = co_located(accounts, keys, 600, "office")
    feats = feature_table(accounts, 11)
    harvest = set(campaign)
    for f in dv.BEHAVIOUR_FEATURES:
        sign = 1.0 if next(s.direction for s in SIGNALS if s.feature == f) == "above" else -1.0
        column = [v + (3.0 * sign if a in harvest else 0.0) for a, v in zip(accounts, feats.column(f).to_pylist())]
        feats = feats.set_column(feats.column_names.index(f), f, pa.array(column))
    evidence = dv.evaluate(key_table(keys), feats, Policy())
    flagged = throttled(evidence)
    assert len(harvest & set(flagged)) >= 0.75 * len(campaign)
    assert not set(flagged) - harvest
    reasons = evidence.by_account(5)[next(a for a in campaign if a in flagged)][2]
    assert any("behaviour:" in r and "p=" in r for r in reasons)
    # without the behaviour, the same co-location alone throttles no one: no member is tied in both families
    ordinary = dv.evaluate(key_table(keys), feature_table(accounts, 11), Policy())
    assert not throttled(ordinary)


def shifted(feats: pa.Table, accounts: list[str], who: set[str], features: tuple[str, ...] | set[str]) -> pa.Table:
    """``feats`` with ``who`` moved 3 standard deviations in the suspicious direction on ``features``."""
    for f in features:
        sign = 1.0 if next(s.direction for s in SIGNALS if s.feature == f) == "above" else -1.0
        column = [v + (3.0 * sign if a in who else 0.0) for a, v in zip(accounts, feats.column(f).to_pylist())]
        feats = feats.set_column(feats.column_names.index(f), f, pa.array(column))
    return feats


def test_a_group_co_located_in_one_family_beyond_its_prompt_is_throttled_only_on_what_neither_sets():
    """Holders of one system prompt who share addresses and nothing else are co-located in one
    family beyond the seed, as a team using its own tool from its office is. Heavy use (volume,
    output per input) makes them a campaign; being extreme together on what their software or the
    prompt's words set (max_tokens, tools, reasoning asked for) does not, nor does ordinary use."""
    accounts, keys, _ = population(1200, 17)
    group = accounts[:40]
    for i, m in enumerate(group):
        keys[m] += ["system_prompt\tprompt-team", f"ip\t198.51.100.{i % 5}", f"ip\t198.51.100.{(i + 1) % 5}"]
    unworded = {f for f in dv.BEHAVIOUR_FEATURES if f not in dv.CLIENT_SHAPED and f not in dv.WORDED}
    heavy = dv.evaluate(key_table(keys), shifted(feature_table(accounts, 17), accounts, set(group), unworded), Policy())
    flagged = throttled(heavy)
    assert len(set(group) & set(flagged)) >= 0.75 * len(group) and not set(flagged) - set(group)
    reason = next(r for r in heavy.by_account(5)[next(iter(flagged))][2] if r.startswith("block"))
    assert "the one family beyond the seed" in reason and "behaviour:" in reason
    shaped = set(dv.CLIENT_SHAPED) | set(dv.WORDED)
    assert not throttled(dv.evaluate(key_table(keys), shifted(feature_table(accounts, 17), accounts, set(group), shaped),
                                     Policy()))
    assert not throttled(dv.evaluate(key_table(keys), feature_table(accounts, 17), Policy()))


def test_a_resellers_end_user_is_judged_on_how_much_it_asks_not_on_the_resellers_software_or_prompt():
    accounts = ["cust-1", "relay::u1", "relay::u2"]
    feats = feature_table(accounts, 3)
    values, _, _ = dv._entity_features(feats, {a: i for i, a in enumerate(accounts)}, 3, 20)
    for f, (v, _) in values.items():
        asked = f in dv.BEHAVIOUR_FEATURES and f not in dv.CLIENT_SHAPED and f not in dv.WORDED
        assert not np.isnan(v[0])
        assert np.isnan(v[1:]).all() != asked or f == dv.COMBINED_FEATURE, f


def test_a_co_located_cohort_keeps_the_members_tied_to_it_and_a_shared_nothing_one_keeps_all():
    """A cohort whose members share addresses far beyond chance is one co-located operation: an
    extreme entity that arrived in its window tied to none of them is left out. A cohort whose
    members share nothing keeps every member (nothing to check them against)."""
    accounts, keys, _ = population(600, 13)
    operation = accounts[:20]
    for i, m in enumerate(operation):
        keys[m] += [f"ip\t203.0.113.{(i + j) % 6}" for j in range(3)]
    outsider = accounts[300]
    entity_of = {a: i for i, a in enumerate(sorted(accounts))}
    tables = blocks.kind_tables(key_table(keys), entity_of, len(entity_of), 2_000_000)

    def cohort(members: list[str]) -> cohorts.Cohort:
        ids = tuple(sorted(entity_of[a] for a in members))
        return cohorts.Cohort("f0", "above", 0.01, "first_seen", 24.0, 0.0, len(ids) + 5, len(ids), 0.01, 1e-20,
                              1e-15, ids)

    (kept,) = dv._co_located_members([cohort(operation + [outsider])], tables, 0.05)
    assert set(kept.members) == {entity_of[a] for a in operation}
    strangers = accounts[100:121]
    (kept,) = dv._co_located_members([cohort(strangers)], tables, 0.05)
    assert set(kept.members) == {entity_of[a] for a in strangers}
    # on what its place sets (an office behind one egress is extreme together on its hosted share),
    # a co-located cohort is one place, not a cohort; strangers extreme on it still are one
    place = dv.TieCheck(tables, 0.05, shared_by_place=frozenset({"f0"}))
    assert place(cohort(operation + [outsider])) is None
    assert place(cohort(strangers)) is not None


def test_a_cohort_rotating_through_networks_is_one_place_only_where_it_is_tied_in_place():
    """A campus's users share its subnets and rotate through them: extreme together on distinct
    subnets because of the place they share, so no cohort. A proxy pool's accounts share no
    address: tied by their client string and the provider the pool rents from (an autonomous
    system, a population not a place), their rotation is what the pool gives them, and the
    cohort keeps its tied members."""
    accounts, keys, _ = population(600, 13)
    campus, pool = accounts[:20], accounts[40:60]
    for i, m in enumerate(campus):
        keys[m] += [f"ip\t203.0.113.{(i + j) % 6}" for j in range(3)]
    for i, a in enumerate(accounts):  # every account reaches the service through some provider
        keys[a].append(f"asn\t{64600 + i % 300}")
    for i, m in enumerate(pool):
        keys[m] += ["user_agent\tharvest-client/0.1", f"asn\t{64512 + i % 2}"]
    entity_of = {a: i for i, a in enumerate(sorted(accounts))}
    tables = blocks.kind_tables(key_table(keys), entity_of, len(entity_of), 2_000_000)

    def cohort(members: list[str], feature: str) -> cohorts.Cohort:
        ids = tuple(sorted(entity_of[a] for a in members))
        return cohorts.Cohort(feature, "above", 0.01, "created_at", 24.0, 0.0, len(ids) + 5, len(ids), 0.01, 1e-20,
                              1e-15, ids)

    rotation = dv.ROTATION[0]
    check = dv.TieCheck(tables, 0.05, shared_by_place=frozenset({rotation, "f0"}))
    assert check(cohort(campus, rotation)) is None
    kept = check(cohort(pool + [accounts[300]], rotation))
    assert kept is not None and entity_of[accounts[300]] not in kept.members
    assert len(kept.members) >= 15 and set(kept.members) <= {entity_of[a] for a in pool}
    # on a place feature other than rotation (hosted share, hours) any co-located group is one place
    assert check(cohort(pool, "f0")) is None


def test_a_behaving_block_throttles_its_extreme_members_and_not_the_ordinary_ones_tied_to_them():
    """A campaign inside a large co-located group (a cloud provider's network, whose organic users
    share client strings and company cards) makes the group's behaviour extreme; the organic users
    tied to the same tokens are co-located, not harvesting: one is throttled with it only as often as
    the block's cost says (each finding prices the chance extremes among its members, here under 0.1
    expected per block), so over three such groups at most two are, beside at least half of the
    harvesting accounts (each group's members are those extreme at the level its best look
    chose, so a group found at a strict level keeps fewer)."""
    ordinary, caught, harvested = 0, 0, 0
    for seed in (12, 13, 14):
        accounts, keys, _ = population(1200, seed)
        group = co_located(accounts, keys, 0, "cloud", size=80)
        harvest = set(group[::2])
        feats = shifted(feature_table(accounts, seed), accounts, harvest, dv.BEHAVIOUR_FEATURES)
        flagged = set(throttled(dv.evaluate(key_table(keys), feats, Policy())))
        assert harvest & flagged
        caught, harvested = caught + len(harvest & flagged), harvested + len(harvest)
        ordinary += len(flagged - harvest)
    assert caught >= 0.5 * harvested
    assert ordinary <= 2


def heavy_block(seed: int = 12, size: int = 80):
    """A co-located group (:func:`co_located`) extreme on every behaviour, and the block its system
    prompt seeds: (block, kind tables, behaviour features, statistics, entities)."""
    accounts, keys, _ = population(1200, seed)
    group = co_located(accounts, keys, 0, "cloud", size=size)
    for m in group:
        keys[m].append("asn\t64500")
    heavy = set(group)
    feats = feature_table(accounts, seed)
    for f in dv.BEHAVIOUR_FEATURES:
        sign = 1.0 if next(s.direction for s in SIGNALS if s.feature == f) == "above" else -1.0
        column = [v + (3.0 * sign if a in heavy else 0.0) for a, v in zip(accounts, feats.column(f).to_pylist())]
        feats = feats.set_column(feats.column_names.index(f), f, pa.array(column))
    entity_of = {a: i for i, a in enumerate(sorted(accounts))}
    stats = Policy().statistics
    tables = blocks.kind_tables(key_table(keys), entity_of, len(entity_of), stats.pair_budget)
    found, _ = blocks.block_tests(tables, stats.min_block_holders, stats.null_inflation, stats.alpha)
    (block,) = [b for b in found if b.seed_kind == "system_prompt" and b.holders == len(group)]
    values, _, _ = dv._entity_features(feats.set_column(0, "account_id", pa.array(accounts)), entity_of,
                                    len(entity_of), stats.cohort_min_exchanges)
    behaviour = {f: v for f, v in values.items() if f in dv.BEHAVIOUR_FEATURES}
    return block, tables, behaviour, stats, len(entity_of)


def offered(block: blocks.Block, tables, behaviour, stats, n: int) -> list:
    """The throttle offers :func:`verdicts._behaving_blocks` makes for ``block``."""
    candidates = {a: [] for a in dv.ACTIONS}
    dv._behaving_blocks([block], tables, behaviour, stats, n, frozenset(), candidates)
    return candidates["throttle"]


def test_the_holders_of_an_autonomous_system_are_a_population_and_their_behaviour_throttles_nobody():
    """A cloud provider's network hosts the heaviest customers (batch jobs, backends), each tied to
    its own team by a company card: its holders are extreme by composition, not as a group. A block
    of heavy holders seeded by a system prompt of their own is a behaving block; the same holders
    seeded by their autonomous system, or by a client string (a software's users), stay
    co-location."""
    import dataclasses

    block, *context = heavy_block()
    assert "asn" in evidence.POPULATIONS and "user_agent" in evidence.POPULATIONS
    assert offered(block, *context)
    assert not offered(dataclasses.replace(block, seed_kind="asn", seed_token="64500"), *context)
    assert not offered(dataclasses.replace(block, seed_kind="user_agent", seed_token="sdk/1.0"), *context)


def test_a_card_blocks_members_are_kept_as_far_out_as_they_all_are_a_subnets_only_as_far_as_the_tests_look():
    """The holders of one card are one customer or one operation: kept at the policy's looser
    member level (above the median), all of them count when all are that far out. The holders
    of one /24 can be strangers beside a campaign in a cloud, each tied by a token it happens to
    share: a member kept at 0.5 rests on its tie alone, so a subnet's block keeps only the members
    in the test levels' tail."""
    import dataclasses

    from scipy import stats as st

    block, _, _, stats, n = heavy_block()
    values = np.random.default_rng(3).normal(size=n)
    seeded = np.asarray(block.seeded)
    values[seeded] = st.norm.ppf(np.linspace(0.55, 0.78, seeded.size))  # above the median, under the top fifth
    rank = cohorts.ranked({"f": (values, "above")})["f"]

    def largest(kind: str) -> int:
        sets = dv._member_sets(dataclasses.replace(block, seed_kind=kind), rank, stats, n)
        return max((len(members) for members, _ in sets.get("throttle", (0, 0, 0, 0, []))[4]), default=0)

    assert dv.FAMILY_OF["payment"] == "account" and dv.FAMILY_OF["subnet"] == "network"
    assert largest("payment") == len(set(block.tied) & set(seeded.tolist()))
    assert largest("subnet") == 0


def test_members_tied_only_by_what_heavy_entities_outside_hold_as_well_are_not_kept():
    """A heavy group's members are tied to it by its own addresses (half of them) or by its session
    slots (the other half), which 60 heavy accounts outside it hold too: under BiCM every slot tie
    is surprising, but among the entities outside as extreme the slots are common, so only the
    members tied by the group's own addresses are kept."""
    accounts, keys, _ = population(1200, 12)
    group = co_located(accounts, keys, 0, "cloud", size=80)
    outside = accounts[600:660]
    for m in outside:
        keys[m] = keys[m] + [f"sync\tcloud-{j}" for j in range(5)]
    heavy = set(group) | set(outside)
    feats = feature_table(accounts, 12)
    for f in dv.BEHAVIOUR_FEATURES:
        sign = 1.0 if next(s.direction for s in SIGNALS if s.feature == f) == "above" else -1.0
        column = [v + (3.0 * sign if a in heavy else 0.0) for a, v in zip(accounts, feats.column(f).to_pylist())]
        feats = feats.set_column(feats.column_names.index(f), f, pa.array(column))
    entity_of = {a: i for i, a in enumerate(sorted(accounts))}
    stats, n = Policy().statistics, len(entity_of)
    tables = blocks.kind_tables(key_table(keys), entity_of, n, stats.pair_budget)
    found, _ = blocks.block_tests(tables, stats.min_block_holders, stats.null_inflation, stats.alpha)
    (block,) = [b for b in found if b.seed_kind == "system_prompt" and b.holders == len(group)]
    values, _, _ = dv._entity_features(feats.set_column(0, "account_id", pa.array(accounts)), entity_of, n,
                                       stats.cohort_min_exchanges)
    behaviour = {f: v for f, v in values.items() if f in dv.BEHAVIOUR_FEATURES}
    kept = {e for c in offered(block, tables, behaviour, stats, n) for e in c.entities}
    by_address = {entity_of[m] for i, m in enumerate(group) if i % 2}
    assert kept == by_address


def test_a_members_matched_tie_is_never_below_bicms_and_a_stronger_tie_is_never_matched_higher():
    """The matched p-value is the larger of the member's BiCM p-value and the share of the entities
    outside as extreme tied at least as strongly: it only ever raises BiCM's, and a member tied
    more strongly has no larger share."""
    block, tables, behaviour, stats, n = heavy_block()
    rng = np.random.default_rng(5)
    strengths = rng.uniform(0, 0.01, n)

    class Fixed(dv._Ties):
        def strength(self, b, entities):
            return strengths[entities]

    ties = Fixed(tables)
    rank = cohorts.ranked({"f": (rng.normal(size=n), "above")})["f"]
    member_p = rng.uniform(0, 0.005, len(block.tied))
    matched = dv._TieReference(ties, np.ones(n, dtype=bool)).matched(block, rank, [5, 50, 500], member_p)
    assert (matched >= member_p).all()
    share = dv._TieReference(ties, np.ones(n, dtype=bool)).matched(block, rank, [5, 50, 500],
                                                                   np.zeros(member_p.size))
    assert (matched == np.maximum(member_p, share)).all() and share.max() > 0
    order = np.argsort(strengths[np.asarray(block.tied)])
    assert (np.diff(share[:, order], axis=1) >= 0).all()
    unmatched = dv._TieReference(ties, np.zeros(n, dtype=bool)).matched(block, rank, [5, 50, 500], member_p)
    assert (unmatched == member_p).all()


def test_the_matched_reference_takes_entities_of_equal_value_together_whatever_their_numbering():
    """Relabelling invariance: the entities outside a block as extreme as the k-th are chosen by
    value, so two entities of equal value are both in the reference or both out, and renumbering
    the entities permutes the matched shares with the members and changes nothing else."""
    import dataclasses

    block, tables, _, _, n = heavy_block()
    rng = np.random.default_rng(6)
    values = np.round(rng.normal(size=n), 1)  # a discrete feature: many ties
    strengths = rng.uniform(0, 0.01, n)

    class Fixed(dv._Ties):  # every entity outside holds a token of the block's, tied at ``s``
        def __init__(self, tables, strengths):
            super().__init__(tables)
            self.s = strengths

        def of(self, b):
            found = np.setdiff1d(np.arange(n), np.asarray(b.seeded))
            return found, self.s[found], self.s[np.asarray(b.tied)]

    rank = cohorts.ranked({"f": (values, "above")})["f"]
    ks = [3, 40, 300]
    base = dv._TieReference(Fixed(tables, strengths), np.ones(n, dtype=bool)).matched(
        block, rank, ks, np.zeros(len(block.tied)))
    # renumber: reverse the entity ids (the block's members and seed holders with them)
    new = np.arange(n)[::-1]
    moved = dataclasses.replace(block, tied=tuple(sorted(int(new[e]) for e in block.tied)),
                                seeded=tuple(sorted(int(new[e]) for e in block.seeded)),
                                member_p=tuple(0.0 for _ in block.tied))
    old_of = np.empty(n, dtype=np.int64)
    old_of[new] = np.arange(n)
    renumbered = dv._TieReference(Fixed(tables, strengths[old_of]), np.ones(n, dtype=bool)).matched(
        moved, cohorts.ranked({"f": (values[old_of], "above")})["f"], ks, np.zeros(len(block.tied)))
    members = [int(new[e]) for e in block.tied]
    position = {e: i for i, e in enumerate(moved.tied)}
    assert np.array_equal(base, renumbered[:, [position[m] for m in members]])


def test_a_pass_that_reuses_the_previous_passes_looks_offers_what_a_fresh_pass_offers():
    """A scan's later passes refit the group nulls only: reusing the rankings, each group's looks
    and each block's member sets (verdicts._Reuse) changes nothing but the work done."""
    block, tables, behaviour, stats, n = heavy_block()
    every_group = dv._group_nulls(tables, stats)
    refitted = dv._without(every_group, frozenset(block.tied[: len(block.tied) // 3]))
    reuse = dv._Reuse(frozenset())
    first = {a: [] for a in dv.ACTIONS}
    dv._behaving_blocks([block], tables, behaviour, stats, n, frozenset(), first, group_nulls=every_group, reuse=reuse)
    assert first["throttle"] and reuse.looks and reuse.members
    again, fresh = {a: [] for a in dv.ACTIONS}, {a: [] for a in dv.ACTIONS}
    dv._behaving_blocks([block], tables, behaviour, stats, n, frozenset(), again, group_nulls=refitted, reuse=reuse)
    dv._behaving_blocks([block], tables, behaviour, stats, n, frozenset(), fresh, group_nulls=refitted)
    assert again == fresh and fresh != first  # the refitted null changes what is offered
    # a new reference (excluded entities) is not served from the old pass
    excluded = frozenset(block.tied[:2])
    moved, moved_fresh = {a: [] for a in dv.ACTIONS}, {a: [] for a in dv.ACTIONS}
    dv._behaving_blocks([block], tables, behaviour, stats, n, excluded, moved, group_nulls=refitted, reuse=reuse)
    dv._behaving_blocks([block], tables, behaviour, stats, n, excluded, moved_fresh, group_nulls=refitted)
    assert moved == moved_fresh


def test_a_tightly_tied_block_costs_far_less_than_a_share_of_the_budget_so_a_scan_can_accept_thousands():
    """A block's bystander cost is ``budget / share`` for the strictest share whose member threshold
    keeps its members. Were the menu to stop at 256, every block would cost at least 1/256 of the
    budget and no scan could accept more than 256 of them (a full-scale campaign has 625 cells)."""
    block, tables, behaviour, stats, n = heavy_block()
    cheapest = min(offered(block, tables, behaviour, stats, n), key=lambda c: c.cost)
    assert max(stats.block_member_shares) >= 4.0 ** 10
    assert cheapest.cost < stats.budget.throttle * n / 256 and len(cheapest.entities) >= block.holders // 2


def test_organic_users_tied_to_a_behaving_block_are_not_throttled_for_being_somewhat_unusual_together():
    """An office on the network a campaign uses: its staff share company cards (tied for real, not
    by chance) and, doing similar work, are all somewhat unusual (their median member is as extreme
    as a fifth of the population). The campaign makes the block extreme at a loose level, where most of the staff pass
    too; a member must be extreme at a level whose price, over the tied members that are not,
    fits the budget, so the staff stay out and the campaign's members do not."""
    accounts, keys, _ = population(1200, 12)
    group = co_located(accounts, keys, 0, "cloud", size=120)
    harvest, office = set(group[::3]), set(group) - set(group[::3])
    feats = feature_table(accounts, 12)
    for f in dv.BEHAVIOUR_FEATURES:
        sign = 1.0 if next(s.direction for s in SIGNALS if s.feature == f) == "above" else -1.0
        shift = {a: 3.0 for a in harvest} | {a: 0.4 for a in office}
        column = [v + shift.get(a, 0.0) * sign for a, v in zip(accounts, feats.column(f).to_pylist())]
        feats = feats.set_column(feats.column_names.index(f), f, pa.array(column))
    flagged = set(throttled(dv.evaluate(key_table(keys), feats, Policy())))
    assert len(harvest & flagged) >= 0.5 * len(harvest)
    assert not office & flagged


def wording_population(seed: int = 21):
    """1,200 organic accounts arriving evenly over 40 days, and four groups of 40 that each hold a
    system prompt of their own: ``harvest`` arrives in the last 10 days and is extreme on every
    behaviour, ``public`` (a public tool's prompt) is as extreme but arrives like everyone,
    ``new_app`` arrives late and behaves like everyone, ``worded`` arrives late and is extreme only
    on what the words of its prompts set (verdicts.WORDED). Returns (accounts, keys, features, groups)."""
    accounts, keys, _ = population(1200, seed)
    rng = np.random.default_rng(seed + 7)
    groups = {name: accounts[i * 100:i * 100 + 40] for i, name in enumerate(("harvest", "public", "new_app", "worded"))}
    created = {}
    for name, members in groups.items():
        for m in members:
            keys[m].append(f"system_prompt\tprompt-{name}")
            if name != "public":
                created[m] = T0 + timedelta(hours=float(rng.uniform(24 * 30, 24 * 40)))
    feats = feature_table(accounts, seed, created=created)
    shifted = {"harvest": dv.BEHAVIOUR_FEATURES, "public": dv.BEHAVIOUR_FEATURES, "worded": dv.WORDED}
    for f in dv.BEHAVIOUR_FEATURES:
        sign = 1.0 if next(s.direction for s in SIGNALS if s.feature == f) == "above" else -1.0
        out = {m for name, members in groups.items() if f in shifted.get(name, ()) for m in members}
        column = [v + (3.0 * sign if a in out else 0.0) for a, v in zip(accounts, feats.column(f).to_pylist())]
        feats = feats.set_column(feats.column_names.index(f), f, pa.array(column))
    return accounts, keys, feats, groups


def wording_inputs(accounts: list[str], keys: dict[str, list[str]], feats: pa.Table):
    """What the wording test reads, as ``evaluate`` builds it: (entity ids, statistics, kind
    tables, feature values, arrival attributes, behaviour features, wording groups)."""
    entity_of = {a: i for i, a in enumerate(sorted(accounts))}
    stats = Policy().statistics
    tables = blocks.kind_tables(key_table(keys), entity_of, len(entity_of), stats.pair_budget)
    values, attributes, _ = dv._entity_features(feats, entity_of, len(entity_of), stats.cohort_min_exchanges)
    behaviour = {f: v for f, v in values.items() if f in dv.BEHAVIOUR_FEATURES}
    return entity_of, stats, tables, values, attributes, behaviour, dv._wording_groups(tables, stats.min_block_holders)


def wording_line(evidence_: dv.Evidence, members: list[str]) -> str:
    """The wording reason of the first of ``members`` the evidence throttles."""
    flagged = throttled(evidence_)
    reasons = evidence_.by_account(5)[next(a for a in members if a in flagged)][2]
    return next(r for r in reasons if r.startswith("wording"))


def test_holders_of_one_wording_that_arrived_late_and_harvest_are_throttled_and_a_public_prompts_users_are_not():
    """Bought accounts share no card, address or clock and arrive spread over the window; the
    template they are given to ask with makes them holders of one wording. The holders are tested
    as a group, on arrival and on behaviour: a public prompt's users (present from the start), a
    new app's users (late, ordinary) and holders extreme only on what their words set are not
    throttled."""
    accounts, keys, feats, groups = wording_population()
    evidence_ = dv.evaluate(key_table(keys), feats, Policy())
    flagged = set(throttled(evidence_))
    assert len(flagged & set(groups["harvest"])) >= 0.75 * len(groups["harvest"])
    assert not flagged - set(groups["harvest"])
    line = wording_line(evidence_, groups["harvest"])
    assert "first seen later than the entities as extreme outside it" in line and "behaviour:" in line and "p=" in line
    assert evidence.SHARED_WORDING.name in line


def test_a_wording_group_is_offered_only_when_both_its_arrival_and_its_behaviour_are_surprising():
    accounts, keys, feats, groups = wording_population()
    entity_of, stats, tables, values, attributes, behaviour, wordings = wording_inputs(accounts, keys, feats)
    assert {token for _, token, _ in wordings} >= {f"prompt-{name}" for name in groups}
    candidates = {a: [] for a in dv.ACTIONS}
    dv._newcomer_wordings(wordings, behaviour, attributes["first_seen"], stats, frozenset(), candidates)
    offered_to = {e for c in candidates["throttle"] for e in c.entities}
    assert offered_to and offered_to <= {entity_of[a] for a in groups["harvest"]}
    # arriving later is a stronger tell: it never raises the group's p-value nor drops a member
    harvest = np.asarray(sorted(offered_to))
    later = attributes["first_seen"].copy()
    later[harvest] += 5 * 86400.0
    more = {a: [] for a in dv.ACTIONS}
    dv._newcomer_wordings(wordings, behaviour, later, stats, frozenset(), more)
    assert min(c.p for c in more["throttle"]) <= min(c.p for c in candidates["throttle"])
    assert {e for c in more["throttle"] for e in c.entities} >= offered_to
    # so is behaving further out: the arrival reference narrows to the entities as extreme (its
    # p-value may rise), but every member is still offered
    louder = {f: (np.where(np.isin(np.arange(v.size), harvest), v + (1.0 if d == "above" else -1.0), v), d)
              for f, (v, d) in behaviour.items()}
    more = {a: [] for a in dv.ACTIONS}
    dv._newcomer_wordings(wordings, louder, attributes["first_seen"], stats, frozenset(), more)
    assert {e for c in more["throttle"] for e in c.entities} >= offered_to


def test_the_holders_of_a_prompt_that_sets_the_answers_length_are_not_throttled_beside_a_campaign_that_holds_it():
    """A public prompt that asks for "a single valid JSON object and nothing else" sets how long
    an answer its holders get per question: its organic holders are extreme on output per input
    together, by its words. A campaign behind a proxy pool that holds it too makes the group
    surprising, and members chosen on that feature alone would be every holder (on a held-out
    store, 13 organic holders of such a prompt were throttled beside 25 campaign accounts). A
    member shows the second test's evidence too, and the extreme holders that do not show it
    price the organic ones that do by chance."""
    accounts, keys, _ = population(3000, 41)
    public, campaign = accounts[:20], accounts[100:140]
    for m in public + campaign:
        keys[m].append("system_prompt\tyou extract structured data always reply with a single json object")
    feats = shifted(feature_table(accounts, 41), accounts, set(public) | set(campaign), ("output_input_ratio",))
    feats = shifted(feats, accounts, set(campaign), ("distinct_subnets",))
    flagged = set(throttled(dv.evaluate(key_table(keys), feats, Policy())))
    assert not flagged & set(public)
    assert len(flagged & set(campaign)) >= 0.25 * len(campaign)


def hold_prompts(accounts: list[str], keys: dict[str, list[str]], groups: dict[str, list[str]]) -> None:
    """Each of ``groups`` holds a system prompt of its own, and 25 teams of four (accounts 600 to
    699) one each: the groups a wording group is compared with."""
    for name, members in groups.items():
        for m in members:
            keys[m].append(f"system_prompt\tprompt-{name}")
    for team in range(25):
        for m in accounts[600 + 4 * team:604 + 4 * team]:
            keys[m].append(f"system_prompt\tteam-{team}")


def rotating_wording_population(seed: int = 31):
    """1,200 organic accounts arriving evenly over 40 days, 25 teams of four that each hold a
    system prompt of their own, and three groups of 40 that arrive like everyone: ``pool`` (a
    campaign behind a proxy pool) is extreme on every behaviour and each member on the subnets it
    comes from, ``public`` (a public tool's users) is as extreme on behaviour and comes from its
    own networks, ``mobile`` (a phone app's users behind carriers' shared addresses) reaches the
    service from many subnets and behaves like everyone. Returns (accounts, keys, features, groups)."""
    accounts, keys, _ = population(1200, seed)
    groups = {name: accounts[i * 100:i * 100 + 40] for i, name in enumerate(("pool", "public", "mobile"))}
    hold_prompts(accounts, keys, groups)
    feats = feature_table(accounts, seed, harvest=set(groups["pool"]) | set(groups["public"]))
    rotating = set(groups["pool"]) | set(groups["mobile"])
    column = [v + (3.0 if a in rotating else 0.0) for a, v in zip(accounts, feats.column("distinct_subnets").to_pylist())]
    feats = feats.set_column(feats.column_names.index("distinct_subnets"), "distinct_subnets", pa.array(column))
    return accounts, keys, feats, groups


def test_holders_of_one_wording_that_harvest_and_each_rotate_through_networks_are_throttled_whenever_they_arrived():
    """Accounts bought one by one arrive like anyone's, so arrival says nothing about them; a proxy
    pool still makes each of them reach the service from more networks than the population and
    than groups like theirs do, which neither words nor software set. A public tool's heavy users
    (their own networks) and a phone app's users (many networks, ordinary behaviour) are not
    throttled."""
    accounts, keys, feats, groups = rotating_wording_population()
    evidence_ = dv.evaluate(key_table(keys), feats, Policy())
    flagged = set(throttled(evidence_))
    assert len(flagged & set(groups["pool"])) >= 0.75 * len(groups["pool"])
    assert not flagged - set(groups["pool"])
    line = wording_line(evidence_, groups["pool"])
    assert "rotating through networks" in line and "distinct_subnets" in line


def test_an_apps_audience_of_heavy_backends_and_rotating_phone_users_is_not_throttled_for_the_mix():
    """An app's system prompt is held by the app's backends, heavy by what the app does, and by its
    phone users, behind carriers' shared addresses and otherwise ordinary: as a group its holders
    are extreme on behaviour and rotate through networks more than the population. Heavy users
    reach the service from more networks than casual ones (here 60 other backends, each moved as
    the app's are), so its backends rotate as much as the entities as extreme as they are; a proxy
    pool's accounts rotate more than those."""
    accounts, keys, _ = population(1200, 31)
    groups = {"pool": accounts[:40], "app": accounts[100:140]}
    heavy = set(accounts[200:260])
    hold_prompts(accounts, keys, groups)
    backends, phones = groups["app"][:20], groups["app"][20:]
    feats = feature_table(accounts, 31, harvest=set(groups["pool"]) | set(backends) | heavy)
    feats = shifted(feats, accounts, set(groups["pool"]) | set(phones) | set(backends) | heavy, ("distinct_subnets",))
    feats = shifted(feats, accounts, set(groups["pool"]) | set(phones), ("distinct_subnets",))
    entity_of, stats, tables, values, attributes, behaviour, wordings = wording_inputs(accounts, keys, feats)
    found = {a: [] for a in dv.ACTIONS}
    dv._newcomer_wordings(wordings, behaviour, attributes["first_seen"], stats, frozenset(), found,
                          {"distinct_subnets": values["distinct_subnets"]}, dv._group_nulls(tables, stats))
    offered = {e for c in found["monitor"] for e in c.entities}
    assert not offered & {entity_of[a] for a in groups["app"]}
    assert len(offered & {entity_of[a] for a in groups["pool"]}) >= 0.75 * len(groups["pool"])


def test_an_organisation_one_of_whose_accounts_asks_in_a_campaigns_wording_is_restricted_on_that_account_only():
    """An organisation is one entity, judged on its accounts' mean behaviour, and holds a wording
    when one of its accounts asks in it. A heavy, rotating office organisation of six accounts, one
    of which asked in a proxy pool's template, is kept with the pool's holders: the evidence is
    that account's requests, so the other five are not restricted, nor are the four accounts that
    pay with the organisation's card (the card's owner was not found, one of its accounts was)."""
    accounts, keys, feats, groups = rotating_wording_population()
    office, card_mates = accounts[700:706], accounts[706:710]
    keys[office[0]].append("system_prompt\tprompt-pool")
    for a in office + card_mates:
        keys[a] = [k for k in keys[a] if not k.startswith("payment\t")] + ["payment\tcard-office"]
    feats = feats.set_column(feats.column_names.index("organization_id"), "organization_id",
                             pa.array(["org-office" if a in office else None for a in accounts], pa.string()))
    feats = shifted(feats, accounts, set(office), (*dv.BEHAVIOUR_FEATURES, "distinct_subnets"))
    evidence_ = dv.evaluate(key_table(keys), feats, Policy())
    flagged = set(throttled(evidence_))
    assert len(flagged & set(groups["pool"])) >= 0.75 * len(groups["pool"])
    assert office[0] in flagged
    assert not flagged & set(office[1:] + card_mates)
    assert "only the 1 account whose requests hold it" in wording_line(evidence_, [office[0]])


def test_a_rotating_groups_members_are_kept_as_far_out_as_they_all_are_not_only_as_far_as_the_tests_look():
    """Residential exits per session put every account of a pool above the population's median on
    the subnets it comes from, and only some in its top fifth: members kept at the test levels
    alone price each of the others as an organic holder, and the budget keeps a handful. At the
    policy's looser member level every member is that far out and none is priced; without it,
    fewer than half are kept."""
    from scipy import stats as st

    accounts, keys, feats, groups = rotating_wording_population()
    pool, mobile = groups["pool"], set(groups["mobile"])
    spread = dict(zip(pool[20:], st.norm.ppf(np.linspace(0.55, 0.78, len(pool) - 20))))
    column = [spread.get(a, v - 3.0 if a in mobile else v)  # here the phone app's users rotate no more than anyone
              for a, v in zip(accounts, feats.column("distinct_subnets").to_pylist())]
    feats = feats.set_column(feats.column_names.index("distinct_subnets"), "distinct_subnets", pa.array(column))
    table = key_table(keys)
    flagged = set(throttled(dv.evaluate(table, feats, Policy())))
    assert len(flagged & set(pool)) >= 0.9 * len(pool) and not flagged - set(pool)
    tight = Policy.model_validate({"statistics": {"member_levels": ()}})
    assert len(set(throttled(dv.evaluate(table, feats, tight))) & set(pool)) < 0.5 * len(pool)


def test_rotating_through_more_networks_never_raises_a_wording_groups_p_value():
    accounts, keys, feats, groups = rotating_wording_population()
    entity_of, stats, tables, values, attributes, behaviour, wordings = wording_inputs(accounts, keys, feats)
    nulls_ = dv._group_nulls(tables, stats)
    pool = np.asarray(sorted(entity_of[a] for a in groups["pool"]))

    def offers(subnets: np.ndarray) -> list[dv.Candidate]:
        found = {a: [] for a in dv.ACTIONS}
        dv._newcomer_wordings(wordings, behaviour, attributes["first_seen"], stats, frozenset(), found,
                              {"distinct_subnets": (subnets, "above")}, nulls_)
        return found["throttle"]

    subnets = values["distinct_subnets"][0]
    before = offers(subnets)
    assert before and {e for c in before for e in c.entities} <= set(pool.tolist())
    further = subnets.copy()
    further[pool] += 2.0
    after = offers(further)
    assert min(c.p for c in after) <= min(c.p for c in before)
    assert {e for c in after for e in c.entities} >= {e for c in before for e in c.entities}
    # without the rotation route the same group is not offered: it arrived like everyone
    assert not offers(np.zeros_like(subnets))


def test_recent_arrivals_that_look_regular_only_for_having_fewer_gaps_are_not_a_cohort():
    """The coefficient of variation of an account's gaps is estimated over the gaps seen so far:
    the newest arrivals have fewer and look more regular by construction, as they look younger.
    Such a feature is a function of arrival and is not tested against arrival windows."""
    accounts, keys, _ = population(1200, 23)
    feats = feature_table(accounts, 23)
    created = feats.column("created_at").to_pylist()
    latest = set(sorted(range(len(accounts)), key=lambda i: created[i])[-80:])
    column = [v - 3.0 if i in latest else v for i, v in enumerate(feats.column("gap_cv").to_pylist())]
    feats = feats.set_column(feats.column_names.index("gap_cv"), "gap_cv", pa.array(column))
    assert "gap_cv" in dv.ARRIVAL_FEATURES
    assert not throttled(dv.evaluate(key_table(keys), feats, Policy()))


def test_a_window_that_a_held_campaign_made_significant_is_no_evidence_about_its_other_members():
    """A window of 51 arrivals holds 26 extremes where 2.6 are expected: 20 of them belong to a
    campaign another result already holds. Without them the window holds 6 extremes among 31
    arrivals, no surprise at its number of looks, so its other members are not throttled on it;
    were none of them held, the window would stand as it is."""
    from scipy import stats

    members = tuple(range(26))
    n, x, k, r, looks = 51, 26, 3612, 72274, 10**4
    p = float(stats.betabinom.sf(x - 1, n, k, r + 1 - k))
    window = cohorts.Cohort("first_turn_share", "above", k / (r + 1), "first_seen", 1.0, 0.0, n, x, k / (r + 1), p,
                            min(1.0, p * looks), members, rank=k, reference=r, looks=looks)
    held = np.zeros(100, dtype=bool)
    assert window.residual(held) == window.p_corrected < Policy().statistics.alpha
    held[:20] = True
    assert window.residual(held) > Policy().statistics.alpha
    campaign = dv.Candidate(1e-40, "wording", "w", "template", "", tuple(range(20)), 1e-30)
    as_window = dv.Candidate(window.p_corrected, "cohort", "c", "window", "", members, 0.5, residual=window.residual)
    got = dv._within_budget({**{a: [] for a in dv.ACTIONS}, "throttle": [campaign, as_window]}, 10_000, Policy())
    assert {e for f in got for e in f.entities} == set(range(20))
    alone = dv._within_budget({**{a: [] for a in dv.ACTIONS}, "throttle": [as_window]}, 10_000, Policy())
    assert {e for f in alone for e in f.entities} == set(members)


def test_a_result_expected_to_add_mostly_chance_members_is_not_accepted_however_strong():
    """A window at p = 5.6e-60 costs 17.5 expected false positives, well within a budget of 25:
    once the campaign that made it significant is held, it adds 11 entities, fewer than the false
    ones it is expected to hold, and is not accepted. Adding 200 it would be (0.0875 per entity,
    within statistics.finding_fdr); at monitor, which restricts nobody, it is evidence either way."""
    n = 250_000  # throttle budget 25
    campaign = dv.Candidate(1e-100, "wording", "w", "template", "", tuple(range(1_000)), 1.0)
    window = dv.Candidate(5.6e-60, "cohort", "c", "window", "", (*range(26), *range(5_000, 5_011)), 17.5)
    wide = dv.Candidate(5.6e-60, "cohort", "c", "wide window", "", (*range(26), *range(5_000, 5_200)), 17.5)

    def acted(candidates, action="throttle"):
        got = dv._within_budget({**{a: [] for a in dv.ACTIONS}, action: candidates}, n, Policy())
        return {e for f in got for e in f.entities}

    assert acted([campaign, window]) == set(range(1_000))
    assert acted([campaign, wide]) == {*range(1_000), *range(5_000, 5_200)}
    assert acted([campaign, window], "monitor") >= set(range(5_000, 5_011))
    assert Policy().statistics.finding_fdr == 0.1


def offices_and_a_campaign(seed: int = 31, offices: int = 30, staff: int = 20, heavy: float = 2.0):
    """2,000 accounts, ``offices`` offices of ``staff`` among them: each office's staff share its
    card, hold two of its four addresses and two of its four session slots (co-located in two
    families beyond the card) and share a workload: an office's effect on volume per active day is
    drawn N(0, 1) for all of them, the first office's is ``heavy``. A campaign of 20 accounts is
    co-located the same way and 3 standard deviations out on volume and output per input.
    Returns (accounts, keys, features, offices' members, the campaign)."""
    accounts, keys, _ = population(2000, seed)
    rng = np.random.default_rng(seed + 5)
    groups = [accounts[i * staff:(i + 1) * staff] for i in range(offices + 1)]
    for j, members in enumerate(groups):
        for i, m in enumerate(members):
            keys[m] = [k for k in keys[m] if not k.startswith("payment")] + [f"payment\tcard-office-{j}"]
            keys[m] += [f"ip\t198.18.{j}.{(i + d) % 4}" for d in (0, 1)] + [f"sync\toffice-{j}-{(i + d) % 4}" for d in (0, 1)]
    *staffs, campaign = groups
    feats = shifted(feature_table(accounts, seed), accounts, set(campaign), ("exchanges_per_active_day", "output_input_ratio"))
    effect = rng.normal(0.0, 1.0, offices)
    effect[0] = heavy
    shift = {m: effect[j] for j, members in enumerate(staffs) for m in members}
    column = [v + shift.get(a, 0.0) for a, v in zip(accounts, feats.column("exchanges_per_active_day").to_pylist())]
    feats = feats.set_column(feats.column_names.index("exchanges_per_active_day"), "exchanges_per_active_day",
                             pa.array(column))
    return accounts, keys, feats, staffs, campaign


def test_an_office_heavy_together_is_one_office_among_offices_and_a_harvesting_group_is_not():
    """Staff of one office share a workload: offices differ in how heavy their staff are, and an
    office's staff are heavy together. Against the entities outside it, a heavy office's staff
    are far more often in the top fifth than exchangeable entities would be; against the
    population of groups like it (the holders of each card) it is one office among offices, and
    nobody in it is throttled. A group as co-located but far heavier than any office is."""
    accounts, keys, feats, staffs, campaign = offices_and_a_campaign()
    flagged = set(throttled(dv.evaluate(key_table(keys), feats, Policy())))
    assert not flagged & {m for members in staffs for m in members}
    assert len(flagged & set(campaign)) >= 0.75 * len(campaign)
    # the heavy office under each null: surprising one by one, ordinary among the card holders' groups
    entity_of = {a: i for i, a in enumerate(sorted(accounts))}
    stats = Policy().statistics
    tables = blocks.kind_tables(key_table(keys), entity_of, len(entity_of), stats.pair_budget)
    values, _, _ = dv._entity_features(feats, entity_of, len(entity_of), stats.cohort_min_exchanges)
    ranked = cohorts.ranked({"exchanges_per_active_day": values["exchanges_per_active_day"]})
    office = np.asarray(sorted(entity_of[m] for m in staffs[0]))
    alone = cohorts.group_behaviour(ranked, office, tuple(stats.cohort_levels))
    among = cohorts.group_behaviour(ranked, office, tuple(stats.cohort_levels), dv._group_nulls(tables, stats)["payment"])
    assert alone.p_value < 1e-8
    # fitted on the other offices and the campaign, never on the office under test
    assert among.p_value > 1e-3 and among.group.icc > 0.1 and among.group.groups == len(staffs)
    assert "intra-group correlation" in among.reason()


def test_a_group_on_its_own_cards_each_rotating_through_many_networks_is_throttled_an_office_on_its_network_is_not():
    """Holders of one prompt scaffold who share cards and nothing else, each reaching the service
    from far more subnets than anyone (a proxy pool rotated per request), behave like everyone
    else: a campaign of bought accounts asking organic-looking questions. The rotation is the
    group's tell. A group co-located on the network shares its place's networks by construction,
    so the same rotation says nothing about it."""
    accounts, keys, _ = population(1200, 23)
    pool, office = accounts[:40], accounts[600:640]
    for i, m in enumerate(pool):
        keys[m] = [k for k in keys[m] if not k.startswith("payment")] + ["scaffold\tenabled toolformer access",
                                                                          f"payment\tpool-card-{i % 2}"]
    for i, m in enumerate(office):
        keys[m] += ["scaffold\toffice tool", f"ip\t198.51.100.{i % 5}", f"ip\t198.51.100.{(i + 1) % 5}"]
    feats = shifted(feature_table(accounts, 23), accounts, set(pool) | set(office), dv.ROTATION)
    flagged = set(throttled(dv.evaluate(key_table(keys), feats, Policy())))
    assert len(flagged & set(pool)) >= 0.75 * len(pool)
    assert not flagged - set(pool)
    assert not throttled(dv.evaluate(key_table(keys), feature_table(accounts, 23), Policy()))


@pytest.mark.parametrize("seed", range(3))
def test_a_groups_p_value_is_its_best_look_under_both_nulls(seed):
    """Each (feature, level) look's p-value is the larger of its individual tail and its tail
    against the groups; the group's is the smallest of those, corrected for every look."""
    from scipy import sparse

    rng = np.random.default_rng(seed)
    n = 400
    values = {f"f{i}": rng.normal(size=n) for i in range(3)}
    groups = [rng.choice(n, int(rng.integers(3, 15)), replace=False) for _ in range(60)]
    effect = rng.normal(0.0, 1.0, len(groups))
    for g, e in zip(groups, effect):
        values["f0"][g] += e
    incidence = sparse.csc_matrix((np.ones(sum(g.size for g in groups)), np.concatenate(groups),
                                   np.r_[0, np.cumsum([g.size for g in groups])]), shape=(n, len(groups)))
    null = cohorts.GroupNull(incidence, "test groups")
    ranked = cohorts.ranked({f: (v, "above") for f, v in values.items()})
    levels = (0.01, 0.05, 0.2)
    for g in groups[:10]:
        found = cohorts.group_behaviour(ranked, g, levels, null)
        alone = cohorts.group_behaviour(ranked, g, levels)
        if found is None:
            assert alone is None
            continue
        looks = []
        for f, rank in ranked.items():
            for k, r, judged, above in cohorts.extremes(rank, g, levels):
                x = int(above.sum())
                if x:
                    ind = float(cohorts.beta_binomial_sf(x, judged.size, k, r))
                    fit = null.rates(f, rank, k / (r + 1), null.overlapping(g))
                    looks.append(max(ind, fit.tail(x, judged.size, k / (r + 1))))
        assert found.p_value == pytest.approx(min(looks), rel=1e-12)
        assert found.p_value >= alone.p_value


def test_a_group_is_fitted_against_the_groups_that_are_not_mostly_its_own_entities():
    """A campaign's template is many wordings held by almost the same accounts: those groups are
    its entities counted again, not other groups like it, and are left out of its null (they made
    a campaign of 40 accounts look like one template among templates). Groups that only share a
    few of its entities stay in."""
    from scipy import sparse

    rng = np.random.default_rng(5)
    n = 600
    values = rng.normal(size=n)
    campaign = np.arange(40)
    values[campaign] += 3.0
    organic = [rng.choice(np.arange(40, n), int(rng.integers(3, 12)), replace=False) for _ in range(40)]
    own = [np.sort(rng.choice(campaign, 30, replace=False)) for _ in range(6)]  # the template's other wordings
    bystander = np.r_[campaign[:3], np.arange(100, 110)]  # shares three of its entities
    groups = [campaign, *own, bystander, *organic]
    incidence = sparse.csc_matrix((np.ones(sum(g.size for g in groups)), np.concatenate(groups),
                                   np.r_[0, np.cumsum([g.size for g in groups])]), shape=(n, len(groups)))
    null = cohorts.GroupNull(incidence, "test groups")
    left_out = null.overlapping(campaign)
    assert left_out.tolist() == list(range(7))
    rank = cohorts.ranked({"f": (values, "above")})["f"]
    others = sparse.csc_matrix(incidence)[:, 7:]
    alone = cohorts.GroupNull(others, "the other groups").rates("f", rank, 0.1)
    fit = null.rates("f", rank, 0.1, left_out)
    assert (fit.groups, fit.mean) == (alone.groups, pytest.approx(alone.mean))
    assert fit.icc == pytest.approx(alone.icc)
    everything = null.rates("f", rank, 0.1)
    assert everything.icc > fit.icc and everything.mean > fit.mean


def test_the_groups_null_refitted_without_validated_entities_counts_them_in_no_group():
    """A campaign's other cells (its paraphrases' n-grams, its other prompts) are groups like the
    one tested, each as extreme as it is; once the scan holds their entities, the null is fitted
    as if those entities were in no group, and the groups' extreme share falls."""
    from scipy import sparse

    rng = np.random.default_rng(9)
    n = 600
    values = rng.normal(size=n)
    campaign = np.arange(60)
    values[campaign] += 3.0
    cells = [np.sort(rng.choice(campaign, 10, replace=False)) for _ in range(8)]
    organic = [rng.choice(np.arange(60, n), int(rng.integers(3, 12)), replace=False) for _ in range(40)]
    groups = [*cells, *organic]
    incidence = sparse.csc_matrix((np.ones(sum(g.size for g in groups)), np.concatenate(groups),
                                   np.r_[0, np.cumsum([g.size for g in groups])]), shape=(n, len(groups)))
    rank = cohorts.ranked({"f": (values, "above")})["f"]
    found = campaign[:30]
    refitted = cohorts.GroupNull(incidence, "test groups").without(found).rates("f", rank, 0.1)
    kept = sparse.csc_matrix(incidence).toarray()
    kept[found] = 0.0
    expected = cohorts.GroupNull(sparse.csc_matrix(kept), "test groups").rates("f", rank, 0.1)
    assert refitted.mean == pytest.approx(expected.mean) and refitted.icc == pytest.approx(expected.icc)
    everything = cohorts.GroupNull(incidence, "test groups").rates("f", rank, 0.1)
    assert refitted.mean < everything.mean


def test_a_group_is_tested_against_the_groups_as_they_stood_before_its_first_member_arrived():
    """A campaign active around the clock forms most of a small population's groups (session slots
    it fills): fitted on them, the groups' extreme share is its own. Tested as the groups stood
    before its first member arrived, each group is counted over its earlier members only, exactly
    as if the later arrivals were in no group; before the first snapshot, or with fewer than
    ``least`` groups there, the fit is over every member."""
    from scipy import sparse

    rng = np.random.default_rng(11)
    n = 800
    arrival = np.linspace(0.0, 1000.0, n)  # entity i arrives at 1000 i / (n - 1)
    values = rng.normal(size=n)
    campaign = np.arange(600, n)  # the last quarter to arrive
    values[campaign] += 3.0
    organic = [rng.choice(600, int(rng.integers(3, 12)), replace=False) for _ in range(40)]
    slots = [rng.choice(campaign, 8, replace=False) for _ in range(60)]  # the campaign's own groups
    mixed = [np.r_[rng.choice(600, 4, replace=False), rng.choice(campaign, 4, replace=False)] for _ in range(10)]
    groups = [*organic, *slots, *mixed]
    incidence = sparse.csc_matrix((np.ones(sum(g.size for g in groups)), np.concatenate(groups),
                                   np.r_[0, np.cumsum([g.size for g in groups])]), shape=(n, len(groups)))
    rank = cohorts.ranked({"f": (values, "above")})["f"]
    null = cohorts.GroupNull(incidence, "test groups", arrival, least=20)
    first = float(arrival[campaign].min())
    fit = null.rates("f", rank, 0.1, before=first)
    assert fit.before <= first
    kept = sparse.csc_matrix(incidence).toarray()
    kept[arrival >= fit.before] = 0.0
    expected = cohorts.GroupNull(sparse.csc_matrix(kept), "test groups").rates("f", rank, 0.1)
    assert (fit.groups, fit.mean, fit.icc) == (expected.groups, pytest.approx(expected.mean), pytest.approx(expected.icc))
    everything = null.rates("f", rank, 0.1)
    assert np.isinf(everything.before) and everything.mean > 2 * fit.mean
    # before any snapshot, and where a snapshot leaves fewer than ``least`` groups: every member
    assert null.rates("f", rank, 0.1, before=-1.0) == everything
    assert cohorts.GroupNull(incidence, "test groups", arrival, least=len(groups)).rates(
        "f", rank, 0.1, before=first) == everything
    # the groups left out of a fit are left out of the snapshot's too
    left_out = np.arange(5)
    fewer = null.rates("f", rank, 0.1, left_out, before=first)
    kept[:, left_out] = 0.0
    assert fewer.groups == cohorts.GroupNull(sparse.csc_matrix(kept), "t").rates("f", rank, 0.1).groups
    assert fewer.groups < fit.groups


def test_with_too_few_groups_formed_before_it_a_group_is_tested_against_a_broader_population_as_it_stood_then():
    """Where too few of its own kind's groups had formed before a group's first member arrived,
    the group is tested against the broader population of groups (GroupNull.broader) as it stood
    then, not against every member of its own kind's groups: those count a campaign's other cells
    that arrived later, whose extreme share is the campaign's own. Only where no population had
    enough groups then is every member counted."""
    from scipy import sparse

    def incidence(groups: list[np.ndarray], n: int) -> sparse.csc_matrix:
        return sparse.csc_matrix((np.ones(sum(g.size for g in groups)), np.concatenate(groups),
                                  np.r_[0, np.cumsum([g.size for g in groups])]), shape=(n, len(groups)))

    rng = np.random.default_rng(5)
    n = 800
    arrival = np.linspace(0.0, 1000.0, n)
    values = rng.normal(size=n)
    campaign = np.arange(600, n)
    values[campaign] += 3.0
    # the narrow kind: 5 early organic groups and 40 of the campaign's cells (later arrivals)
    narrow_groups = [*(rng.choice(600, 6, replace=False) for _ in range(5)),
                     *(rng.choice(campaign, 6, replace=False) for _ in range(40))]
    broad_groups = [*narrow_groups, *(rng.choice(600, 6, replace=False) for _ in range(40))]
    narrow = cohorts.GroupNull(incidence(narrow_groups, n), "narrow", arrival, least=20)
    broad = cohorts.GroupNull(incidence(broad_groups, n), "broad", arrival, least=20)
    rank = cohorts.ranked({"f": (values, "above")})["f"]
    tested = campaign[:30]
    first = float(arrival[tested].min())
    # alone, the narrow null falls back to every member: the campaign's cells make it strict
    alone, label = narrow.fitted_for(tested, "f", rank, 0.1, before=first)
    assert label == "narrow" and np.isinf(alone.before) and alone == narrow.rates("f", rank, 0.1,
                                                                                  narrow.overlapping(tested))
    narrow.broader = broad
    fit, label = narrow.fitted_for(tested, "f", rank, 0.1, before=first)
    assert label == "broad" and fit.before <= first
    assert fit == broad.rates("f", rank, 0.1, broad.overlapping(tested), before=first)
    assert fit.mean < alone.mean / 2
    # refitted without validated entities, the chain is refitted too
    refitted = narrow.without(campaign[:10])
    assert refitted.broader is not None and refitted.broader is not broad
    # with no snapshot before the group, every member of the narrow kind's groups
    assert narrow.fitted_for(tested, "f", rank, 0.1, before=-1.0)[1] == "narrow"


def test_each_seed_kind_takes_an_equal_share_of_the_behaving_blocks_level():
    """Behaving blocks are corrected by a weighted Bonferroni: every seed kind with a tested block
    gets an equal share of alpha, split evenly over its blocks, so the weights sum to one whatever
    the mix (many time-bin blocks cannot take the level from a few templates' blocks)."""
    kinds = ["sync"] * 286 + ["ip"] * 19 + ["system_prompt"] * 3 + ["payment"] * 2
    looks = dv._kind_shares(kinds)
    assert sum(1.0 / looks[k] for k in kinds) == pytest.approx(1.0)
    assert looks["system_prompt"] == 4 * 3 and looks["sync"] == 4 * 286
    assert dv._kind_shares(["ip"] * 7) == {"ip": 7.0}  # one kind: plain Bonferroni


@pytest.mark.parametrize("seed", range(3))
def test_every_feature_a_group_is_extreme_on_is_a_test_of_its_own(seed):
    """group_behaviours returns the best look of each feature whose corrected p-value is within
    the bound asked for (each corrected for every look, as the single best is), most surprising
    first; its first is group_behaviour's."""
    rng = np.random.default_rng(seed)
    n = 500
    values = {f"f{i}": rng.normal(size=n) for i in range(4)}
    group = np.arange(40)
    values["f0"][group[:20]] += 6.0  # half the group far out
    values["f1"][group] += 2.0  # all of it somewhat out
    ranked = cohorts.ranked({f: (v, "above") for f, v in values.items()})
    levels = (0.01, 0.05, 0.2)
    found = cohorts.group_behaviours(ranked, group, levels, within=1e-6)
    best = cohorts.group_behaviour(ranked, group, levels)
    assert found[0] == best
    assert [g.feature for g in found][:2] in (["f0", "f1"], ["f1", "f0"])
    assert len({g.feature for g in found}) == len(found)
    assert all(g.p_corrected <= 1e-6 for g in found)
    assert [g.p_value for g in found] == sorted(g.p_value for g in found)
    on = {g.feature: set(g.members) for g in found}
    assert len(on["f0"]) >= 18 and on["f1"] - set(range(20))  # f1 finds members f0 cannot
    assert cohorts.group_behaviours(ranked, group, levels) == [best]


@pytest.mark.parametrize("team", [5, 45])
def test_a_one_family_block_acts_only_where_most_of_its_extreme_holders_are_tied_in_it(team):
    """The holders of a public prompt (app backends, all heavier than the population) among whom
    one company's few backends share a subnet of their own: the block is a population with a
    co-located team in it, not one operation, and throttles no one. When most of the heavy holders
    share the block's addresses, it is one operation."""
    accounts, keys, _ = population(1200, 29)
    holders = accounts[:60]
    for i, m in enumerate(holders):
        keys[m] += ["system_prompt\textract structured data as json"]
        if i < team:
            keys[m] += [f"ip\t198.51.100.{j}" for j in range(3)]
    unworded = {f for f in dv.BEHAVIOUR_FEATURES if f not in dv.CLIENT_SHAPED and f not in dv.WORDED}
    evidence = dv.evaluate(key_table(keys), shifted(feature_table(accounts, 29), accounts, set(holders), unworded),
                           Policy())
    flagged = set(throttled(evidence))
    assert not flagged - set(holders[:team])
    if team < len(holders) // 2:
        assert not flagged
    else:
        assert len(flagged) >= 0.75 * team


def test_a_rotating_holder_is_priced_against_the_entities_as_extreme_where_the_two_cuts_chances_multiply():
    """Heavy users reach the service from more networks than casual ones. Against the whole
    population an organic holder extreme on behaviour rotates far more often than the level says,
    so multiplying the two chances there would underprice the kept; against the entities as
    extreme it rotates at the level by exchangeability, and the price (the organic holders among
    the extreme, estimated from those that are not, times the rotation level) covers the organic
    holders kept, over many groups whose holders are all organic."""
    rng = np.random.default_rng(5)
    n, size, level, level2 = 4000, 200, 0.2, 0.2
    behaviour = rng.normal(size=n)
    subnets = 0.8 * behaviour + 0.6 * rng.normal(size=n)  # correlated with behaviour
    rank = cohorts.ranked({"b": (behaviour, "above")})["b"]
    rotated = cohorts.ranked({"distinct_subnets": (subnets, "above")})
    kept = priced = kept_by_population = priced_by_population = 0.0
    for _ in range(200):
        group = np.sort(rng.choice(n, size, replace=False))
        cuts = cohorts.extremes(rank, group, (level,))
        matched = dv._rotating_alike(rank, rotated, group, np.ones(n, dtype=bool), (level2,))
        found = {a: [] for a in dv.ACTIONS}
        dv._wording_offers(0.0, cuts, lambda extreme: [s for s in matched(extreme) if s[2]], "", "b", found)
        offers = found["throttle"]  # one set of members, or none where fewer than two are kept
        assert len(offers) <= 1
        kept += sum(len(offer.entities) for offer in offers)
        priced += sum(offer.cost for offer in offers)
        # the same product, the rotation level read against every entity
        k, r, judged, above = cuts[0]
        _, _, rotating_judged, rotating = cohorts.extremes(rotated["distinct_subnets"], group, (level2,))[0]
        kept_by_population += len(set(judged[above].tolist()) & set(rotating_judged[rotating].tolist()))
        priced_by_population += k / (r + 1 - k) * np.count_nonzero(~above) * level2
    assert kept <= 1.1 * priced
    assert kept_by_population > 1.5 * priced_by_population


def test_a_cohort_tied_in_place_charges_its_chance_members_as_often_as_the_entities_outside_it_are_tied_to_it():
    """An organic entity extreme by chance in a window is kept with a co-located cohort only if it
    is tied to its members in place too: the share of the judged entities outside the cohort tied
    to them (plus one in the count) prices it. The more outsiders share the cohort's addresses, the
    more a chance member costs. An autonomous system's customers or a client string's users are
    populations, not a place; nor is a clock, which a window's arrivals share by arriving."""
    accounts, keys, _ = population(600, 13)
    operation = accounts[:20]
    for i, m in enumerate(operation):
        keys[m] += [f"ip\t203.0.113.{(i + j) % 6}" for j in range(3)]
    outsider = accounts[300]

    def placed(keys: dict[str, list[str]], feature: str = "f0") -> cohorts.Cohort | None:
        entity_of = {a: i for i, a in enumerate(sorted(accounts))}
        tables = blocks.kind_tables(key_table(keys), entity_of, len(entity_of), 2_000_000)
        ids = tuple(sorted(entity_of[a] for a in operation + [outsider]))
        window = cohorts.Cohort(feature, "above", 0.01, "first_seen", 24.0, 0.0, len(ids) + 5, len(ids), 0.01, 1e-20,
                                1e-15, ids)
        kept = dv.TieCheck(tables, 0.05).placed(window)
        assert kept is None or (set(kept.members) == {entity_of[a] for a in operation}
                                and kept.chance_members == pytest.approx(window.chance_members * kept.survival))
        return kept

    alone = placed(keys)
    assert alone is not None and alone.survival == pytest.approx(1 / (1 + len(accounts) - 21))
    # a team's tool makes it extreme together on what the client sets: no place check there
    assert placed(keys, "tools_per_request") is None
    shared = {a: ks + ["ip\t203.0.113.0"] if a in accounts[400:403] else ks for a, ks in keys.items()}
    assert placed(shared).survival == pytest.approx(4 / (1 + len(accounts) - 21))
    for kind in ("asn", "user_agent", "signup_window"):
        elsewhere = {a: [k for k in ks if not k.startswith("ip\t203.0.113.")] + (
            [f"{kind}\tshared-{i % 6}"] if a in operation else []) for i, (a, ks) in enumerate(keys.items())}
        assert placed(elsewhere) is None, kind


def test_teammates_in_a_window_tied_only_to_each_other_are_not_kept_as_members_tied_in_place():
    """Teams arrive and behave together: two developers of one team, both extreme by chance in a
    campaign's window, are tied to each other by their office address and card, and to no one of
    the operation. A tie component smaller than a campaign says nothing about the operation; the
    operation's members, one component, stay."""
    accounts, keys, _ = population(600, 13)
    operation = accounts[:20]
    for i, m in enumerate(operation):
        keys[m] += [f"ip\t203.0.113.{(i + j) % 6}" for j in range(3)]
    teams = [accounts[300:303], accounts[310:314]]
    for t, team in enumerate(teams):
        for m in team:
            keys[m] += [f"ip\t198.51.{100 + t}.{k}" for k in range(4)] + [f"payment\tteam-card-{t}"]
    entity_of = {a: i for i, a in enumerate(sorted(accounts))}
    tables = blocks.kind_tables(key_table(keys), entity_of, len(entity_of), 2_000_000)
    ids = tuple(sorted(entity_of[a] for a in operation + teams[0] + teams[1]))
    window = cohorts.Cohort("f0", "above", 0.01, "first_seen", 24.0, 0.0, len(ids) + 5, len(ids), 0.01, 1e-20,
                            1e-15, ids)
    kept = dv.TieCheck(tables, 0.05).placed(window)
    assert kept is not None and set(kept.members) == {entity_of[a] for a in operation}


def test_a_wording_group_found_by_arrival_offers_its_late_extreme_holders_never_every_extreme_one():
    """The holders of a public prompt whose words set what its users ask for are all extreme on
    behaviour; a campaign's recent arrivals among them make the group later than the entities as
    extreme. Every extreme holder offered would leave no holder to estimate the organic ones
    (none is not extreme): the offers keep the late ones, priced by the early extreme holders."""
    rng = np.random.default_rng(11)
    n = 2000
    behaviour, first_seen = rng.normal(size=n), rng.uniform(0.0, 1.0, size=n)
    organic, campaign = np.arange(40), np.arange(40, 70)
    behaviour[:70] += 3.0
    first_seen[campaign] = rng.uniform(0.9, 1.0, size=campaign.size)
    group = np.arange(70)
    rank = cohorts.ranked({"b": (behaviour, "above")})["b"]
    later = dv._later_alike(rank, first_seen, group, np.ones(n, dtype=bool), (0.0, 0.05, 0.1, 0.2, 0.5))
    found = {a: [] for a in dv.ACTIONS}
    dv._wording_offers(1e-6, cohorts.extremes(rank, group, (0.05, 0.1, 0.2, 0.5)), later, "", "b", found,
                       "first seen")
    offers = found["throttle"]
    assert offers and max(len(c.entities) for c in offers) < group.size
    assert any(set(c.entities) >= set(campaign.tolist()) for c in offers)
    assert sum(c.cost for c in offers) >= sum(len(set(c.entities) & set(organic.tolist())) for c in offers)
    assert all("first seen among the entities as extreme" in c.note for c in offers)


def test_the_matched_levels_read_off_the_sorted_order_are_those_of_a_ranking_of_the_entities_as_extreme():
    """The wording members' matched references (the entities outside a group as extreme as its
    extreme holders) are read off the behaviour ranking's sorted order; the levels and the holders
    beyond each are what cohorts.extremes gives on a ranking of exactly those entities, ties, NaN
    and excluded entities included."""
    rng = np.random.default_rng(3)
    levels = (0.0, 0.01, 0.05, 0.2, 0.5)
    for _ in range(40):
        n = int(rng.integers(50, 800))
        behaviour = np.round(rng.normal(size=n), 1)
        behaviour[rng.random(n) < 0.2] = np.nan
        seen = np.round(rng.uniform(0, 10, size=n), 1)
        seen[rng.random(n) < 0.05] = np.nan
        excluded = frozenset(rng.choice(n, n // 10, replace=False).tolist())
        rank = cohorts.ranked({"b": (behaviour, "above")}, excluded)["b"]
        usable = np.ones(n, dtype=bool)
        usable[list(excluded)] = False
        members = np.sort(rng.choice(n, 40, replace=False))
        later = dv._later_alike(rank, seen, members, usable, levels)
        for _, _, judged, above in cohorts.extremes(rank, members, (0.05, 0.5)):
            extreme = judged[above]
            if extreme.size == 0:
                assert later(extreme) == []
                continue
            alike = usable & ~np.isin(np.arange(n), members) & (
                np.nan_to_num(rank.oriented, nan=-np.inf) >= np.nan_to_num(rank.oriented[extreme], nan=-np.inf).min())
            alike[extreme] = True
            matched = cohorts.ranked({"seen": (np.where(alike, seen, np.nan), "above")})["seen"]
            expected = [(k / (r + 1), frozenset(j[a].tolist()), True)
                        for k, r, j, a in cohorts.extremes(matched, extreme, levels)]
            assert later(extreme) == expected


def heavy_teams(every_team_heavy: bool) -> tuple[set[str], dict[str, str]]:
    """24 teams of 12 accounts, each team behind an exit of its own (three addresses); three teams
    and 40 other accounts hold one public system prompt. The three teams are heavy on every
    behaviour, and the other teams too where ``every_team_heavy``. Returns the three teams'
    accounts and what is throttled (throttle budget 1e-3: 1.2 expected over 1,200 accounts)."""
    accounts, keys, _ = population(1200, 21)
    rng = np.random.default_rng(21)
    teams = [accounts[300 + 12 * t:312 + 12 * t] for t in range(24)]
    for t, team in enumerate(teams):
        for m in team:
            keys[m] += [f"ip\t100.64.{t}.{j}" for j in rng.choice(3, 2, replace=False)]
    inside = set(teams[0]) | set(teams[1]) | set(teams[2])
    for m in set(rng.choice(accounts[900:], 40, replace=False).tolist()) | inside:
        keys[m].append("system_prompt\treply with a single valid json object")
    heavy = {m for team in teams for m in team} if every_team_heavy else inside
    feats = shifted(feature_table(accounts, 21), accounts, heavy, dv.BEHAVIOUR_FEATURES)
    policy = Policy()
    stats = policy.statistics
    policy = policy.model_copy(update={"statistics": stats.model_copy(
        update={"budget": stats.budget.model_copy(update={"throttle": 1e-3})})})
    return inside, throttled(dv.evaluate(key_table(keys), feats, policy))


def test_heavy_teams_behind_exits_of_their_own_are_a_behaving_block_only_where_teams_are_not_heavy():
    """Teams are heavy together behind the exit they share (an office's egress, a VPN provider's
    exit), and the groups of one network token show how often. Three such teams holding a public
    system prompt make its block extreme on behaviour and tied in the network; where every team
    of the population is as heavy, its tied holders are no more extreme than the groups of one
    exit are, and none is throttled (the block's seed holders alone, against the groups of one
    prompt, would throttle 32 of them); where the population's other teams are ordinary, the
    three are a heavy operation unlike them, and are throttled."""
    inside, flagged = heavy_teams(every_team_heavy=True)
    assert not set(flagged) & inside
    inside, flagged = heavy_teams(every_team_heavy=False)
    assert len(set(flagged) & inside) >= len(inside) // 2


def test_a_steady_stream_of_one_kind_against_a_thinning_background_of_first_requests_is_no_cohort():
    """Accounts active before the data began are all first seen in its first days, and the
    rarer an account's visits the later it is first seen: first requests thin out, while a kind
    of user who comes once in a while (a benchmark runner) is first seen at a steady pace. Its
    share of the arrivals grows window after window, so against the earlier arrivals alone a
    late week holds "too many" of them. They arrive at the rate they always did: under the rate
    null (extremes arriving at the reference's pace) the week is ordinary, and a window is a
    cohort only when it rejects both. A burst on top of the same population is still one."""
    rng = np.random.default_rng(11)
    day, start = 86400.0, 1.7e9
    background = start + np.sort(rng.exponential(4 * day, 6000))
    background = background[background < start + 35 * day]
    runners = start + np.sort(rng.uniform(0, 35 * day, 80))
    seconds = np.concatenate([background, runners])
    values = np.concatenate([rng.normal(size=background.size), rng.normal(4.0, 0.3, runners.size)])
    levels, widths = Policy().statistics.cohort_levels, (24.0, 168.0)
    found = cohorts.window_tests({"f": (values, "above")}, {"first_seen": seconds}, levels, widths, alpha=0.01)
    assert not found
    # 30 more, first seen within six hours of day 20
    seconds = np.concatenate([seconds, start + 20 * day + np.sort(rng.uniform(0, 6 * 3600, 30))])
    values = np.concatenate([values, rng.normal(4.0, 0.3, 30)])
    burst = set(range(seconds.size - 30, seconds.size))
    found = cohorts.window_tests({"f": (values, "above")}, {"first_seen": seconds}, levels, widths, alpha=0.01)
    assert found and max(len(burst & set(c.members)) for c in found) >= 25
    assert all("at the pace of the reference's" in c.reason() for c in found)
