"""Campaign tells measured on a cluster against the population, not on one account."""

from distillguard import campaigns as camp

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
