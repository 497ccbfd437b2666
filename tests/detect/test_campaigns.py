"""Campaign tells measured on a cluster against the population, not on one account."""

from distillguard.detect import campaigns as camp

PARAMS = camp.CampaignParams()


def _population(early_in_cluster: int, cluster_size: int = 20, others: int = 400, early_others: int = 20):
    membership = {f"m{i}": 1 for i in range(cluster_size)}
    membership.update({f"c{i}": 2 for i in range(cluster_size)})  # a community at the population's rate
    pivot = {f"m{i}": (3.0 if i < early_in_cluster else None) for i in range(cluster_size)}
    pivot.update({f"c{i}": (5.0 if i == 0 else 200.0) for i in range(cluster_size)})
    pivot.update({f"o{i}": (10.0 if i < early_others else None) for i in range(others)})
    return membership, pivot


def test_a_cluster_that_moved_to_a_new_model_together_ties_its_movers_by_one_more_family():
    membership, pivot = _population(early_in_cluster=8)
    pivot = camp.pivoted_together(membership, pivot, PARAMS)
    assert pivot.share[1] == 0.4 and pivot.share[2] == 0.05
    assert pivot.coordinated == {f"m{i}" for i in range(8)}  # only the members that moved, only in cluster 1
    tie = camp.with_coordination({"m0": camp.Tie(4.0, 1, 12), "m9": camp.Tie(4.0, 1, 12)}, pivot.coordinated)
    assert tie["m0"].families == 2 and tie["m9"].families == 1


def test_a_coordinated_member_is_told_its_hours_its_clusters_share_and_the_thresholds():
    membership, pivot_hours = _population(early_in_cluster=8)
    pivot = camp.pivoted_together(membership, pivot_hours, PARAMS)
    # of the 440 accounts, 8 in the cluster moved early, c0 in the other community and 20 outside: 29
    assert pivot.base == 29 / 440
    line = pivot.reason("m0", 1, pivot_hours["m0"], PARAMS)
    assert "3.0 h after its release (< 24 h)" in line
    assert "with 40% of its cluster" in line and "(>= 15% and >= 4 x the population's 6.6%)" in line


def test_launch_day_adopters_at_the_populations_rate_are_not_a_coordinated_move():
    # 2 of 20 early (10%): below pivot_min_share, although early adoption is common in this population
    membership, pivot = _population(early_in_cluster=2, early_others=40)
    assert camp.pivoted_together(membership, pivot, PARAMS).coordinated == set()


def test_a_move_common_in_the_population_needs_the_lift_too():
    # 5 of 20 (25%) in the cluster, but a quarter of everyone moved on day one as well
    membership, pivot = _population(early_in_cluster=5, early_others=110)
    assert camp.pivoted_together(membership, pivot, PARAMS).coordinated == set()


def _wave(domains, created_hours, lead_days, cluster=1):
    """Accounts of one cluster: e-mail domain, creation (hours after T0), first use (days after creation)."""
    from datetime import datetime, timedelta, timezone
    t0 = datetime(2026, 4, 20, tzinfo=timezone.utc)
    ids = [f"a{i}" for i in range(len(domains))]
    created = {a: t0 + timedelta(hours=h) for a, h in zip(ids, created_hours)}
    first = {a: created[a] + timedelta(days=d) for a, d in zip(ids, lead_days)}
    return {a: cluster for a in ids}, created, first, dict(zip(ids, domains))


def test_fresh_accounts_of_unrelated_domains_created_in_one_wave_were_recruited_together():
    membership, created, first, domain = _wave(["gmail.com", "proton.me", "qq.com", "mail.ru", "x-dev.io"],
                                               [0, 2, 3, 5, 9], [2, 1, 3, 2, 4])
    recruitment = camp.recruited_together(membership, created, first, domain, PARAMS)
    assert recruitment.share[1] == 1.0 and recruitment.mates["a0"] == 4
    line = recruitment.reason("a0", PARAMS)
    assert "created within 12 h of 4 other fresh members" in line and "first used 2.0 days after" in line


def test_a_class_signing_up_together_with_its_schools_domain_was_not_recruited():
    # the school's domain is an identity the class shows (signup_burst links it): the wave is
    # most of one domain, so not even the two students on personal mail count as recruits
    membership, created, first, domain = _wave(["uni.edu"] * 8 + ["gmail.com", "outlook.com"],
                                               [0, 1, 1, 2, 2, 3, 4, 5, 1, 2], [0.01] * 10)
    recruitment = camp.recruited_together(membership, created, first, domain, PARAMS)
    assert recruitment.mates == {} and recruitment.share[1] == 0.0


def test_a_first_request_before_the_creation_time_is_no_fresh_account():
    membership, created, first, domain = _wave(["a.com", "b.com", "c.com"], [0, 1, 2], [-30, -30, -30])
    assert camp.recruited_together(membership, created, first, domain, PARAMS).mates == {}


def test_a_clusters_recruited_share_counts_only_the_members_credited_with_it():
    pivot = camp.pivoted_together({}, {}, PARAMS)
    shown = camp.acts(pivot, {"a0", "a1"}, {"a0": 1, "a1": 1, "a2": 1, "a3": 1, "b0": 2}, {1, 2})
    assert shown == {1: {"recruited": 0.5, "pivoted": 0.0}, 2: {"recruited": 0.0, "pivoted": 0.0}}


def test_accounts_created_together_long_before_they_were_used_are_not_a_recruitment_wave():
    membership, created, first, domain = _wave(["a.com", "b.com", "c.com", "d.com"], [0, 1, 2, 3], [200, 300, 90, 40])
    assert camp.recruited_together(membership, created, first, domain, PARAMS).mates == {}


def test_a_spread_out_cluster_of_fresh_accounts_is_not_a_wave():
    membership, created, first, domain = _wave(["a.com", "b.com", "c.com", "d.com"], [0, 30, 60, 90], [1, 1, 1, 1])
    assert camp.recruited_together(membership, created, first, domain, PARAMS).share[1] == 0.0


def test_recruitment_adds_evidence_and_the_account_family_once():
    membership, created, first, domain = _wave(["a.com", "b.com", "c.com"], [0, 1, 2], [1, 1, 1])
    recruitment = camp.recruited_together(membership, created, first, domain, PARAMS)
    tie = {"a0": camp.Tie(3.0, 1, 12), "a1": camp.Tie(3.0, 2, 12, account=True)}
    tie = camp.with_recruitment(tie, recruitment, PARAMS)
    assert tie["a0"] == camp.Tie(3.0 + PARAMS.act_weight, 2, 12, True)
    assert tie["a1"].families == 2  # a card or a sign-up burst already counted the account family
    assert tie["a2"] == camp.Tie(PARAMS.act_weight, 1, 0, True)  # no key: the act alone, below admission


def test_collective_acts_raise_a_clusters_operation_evidence_and_nothing_else_changes_without_them():
    import pyarrow as pa
    from distillguard.detect.linkage import EVIDENCE

    members = [f"m{i}" for i in range(6)]
    pairs = [(a, b) for i, a in enumerate(members) for b in members[i + 1:]]
    edges = pa.table({"a": [a for a, _ in pairs], "b": [b for _, b in pairs], "weight": [4.0] * len(pairs),
                      **{f"shared_{k}": [1 if k == "scaffold" else 0] * len(pairs) for k in EVIDENCE}})
    membership = {a: 1 for a in members}
    tie = {a: camp.Tie(4.0, 2, 5) for a in members}
    suspicion = {a: 0.1 for a in members}
    stats = {1: (100, 95)}
    plain = camp.score_clusters(edges, membership, tie, suspicion, stats, PARAMS)[0]
    same = camp.score_clusters(edges, membership, tie, suspicion, stats, PARAMS, {1: {"recruited": 0.0, "pivoted": 0.0}})[0]
    acted = camp.score_clusters(edges, membership, tie, suspicion, stats, PARAMS, {1: {"recruited": 0.8, "pivoted": 0.3}})[0]
    assert same.score == plain.score
    # operation 0.55 (half automation, half collective) leaves 0.45 unexplained; x 0.2 x 0.7
    assert abs(acted.score - plain.score / 0.55 * (1 - 0.45 * 0.2 * 0.7)) < 1e-3
    assert acted.recruited == 0.8 and acted.pivoted == 0.3


def test_a_member_whose_sign_up_burst_key_already_counts_its_creation_gets_nothing_more_from_the_wave():
    # a customer who signed up with gmail in the hour of a campaign's wave holds the wave's burst
    # key by chance; the wave says the same thing again and must not count twice
    membership, created, first, domain = _wave(["a.com", "b.com", "c.com"], [0, 1, 2], [1, 1, 1])
    recruitment = camp.recruited_together(membership, created, first, domain, PARAMS)
    tie = {"a0": camp.Tie(4.4, 2, 60, account=True, burst=True)}
    assert camp.with_recruitment(tie, recruitment, PARAMS)["a0"] == tie["a0"]


def test_the_pivot_adds_a_family_but_no_evidence_mass():
    tie = camp.with_coordination({"m0": camp.Tie(2.4, 2, 12)}, {"m0"})
    assert tie["m0"] == camp.Tie(2.4, 3, 12)  # still below admission: early adoption is common


def test_a_member_tied_by_addresses_alone_gets_nothing_from_the_wave():
    # a residential neighbour of a campaign's proxy exits who signed up during a wave
    membership, created, first, domain = _wave(["a.com", "b.com", "c.com"], [0, 1, 2], [1, 1, 1])
    recruitment = camp.recruited_together(membership, created, first, domain, PARAMS)
    tie = {"a0": camp.Tie(3.75, 1, 40, network_only=True)}
    assert camp.with_recruitment(tie, recruitment, PARAMS)["a0"] == tie["a0"]


# --- reconcile: the calibrated tests' groups and the linkage's campaigns -----------------------

def _names(prefix: str, n: int, start: int = 0) -> frozenset[str]:
    return frozenset(f"{prefix}{i}" for i in range(start, start + n))


def test_a_tested_group_cut_into_cells_by_the_linkage_is_one_campaign():
    cells = [_names("a", 20, 0), _names("a", 20, 20), _names("a", 20, 40)]
    group = _names("a", 55)  # the tests validated 55 of the 60; the other 5 come with their cells
    out = camp.reconcile(cells, [("block", group)], min_members=5)
    assert [(r.members, r.linked, r.action, r.tested) for r in out] == [(_names("a", 60), (0, 1, 2), "block", 55)]


def test_a_linked_campaign_mostly_outside_the_group_stays_apart_without_the_groups_members():
    office = _names("o", 30) | _names("g", 4)  # four of its accounts are in the tested group
    group = _names("g", 40)
    out = camp.reconcile([office], [("throttle", group)], min_members=5)
    assert {r.members for r in out} == {group, _names("o", 30)}
    assert [r.action for r in out if r.members == _names("o", 30)] == [None]
    # what remains below campaign size is no campaign
    assert [r.members for r in camp.reconcile([_names("o", 3) | _names("g", 2)], [("throttle", group)], 5)] == [group]


def test_campaigns_share_no_member_and_do_not_depend_on_the_order_of_their_inputs():
    one, two = _names("x", 30), _names("y", 30)
    cells = [_names("x", 18) | _names("y", 5), _names("y", 25, 5) | _names("z", 6), _names("z", 10)]
    out = camp.reconcile(cells, [("throttle", one), ("block", two)], min_members=5)
    seen = [a for r in out for a in r.members]
    assert len(seen) == len(set(seen))
    assert {r.members for r in out} == {one, two | _names("z", 6)}  # z6..z9 are too few to stay a campaign
    swapped = camp.reconcile(cells, [("block", two), ("throttle", one)], min_members=5)
    assert [(r.members, r.action) for r in swapped] == [(r.members, r.action) for r in out]


def test_without_tested_groups_the_linkage_campaigns_are_the_campaigns():
    cells = [_names("a", 6), _names("b", 9)]
    assert [(r.members, r.linked, r.tested) for r in camp.reconcile(cells, [], 5)] == \
        [(cells[0], (0,), 0), (cells[1], (1,), 0)]
