"""Pair tests: calibrated over all pairs, more sharing never weakens a pair, and names do not matter."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from distillguard.detect import blocks, nulls, pairs, verdicts

KINDS = ("ip", "payment", "user_agent", "scaffold", "signup_window")
POOLS = {"ip": 1500, "payment": 900, "user_agent": 30, "scaffold": 250, "signup_window": 120}


def _keys(seed: int, n: int, planted: dict[tuple[int, int], int] | None = None) -> pa.Table:
    """``n`` accounts with heterogeneous numbers of tokens drawn from pools of different sizes,
    no structure; ``planted`` maps an account pair to the number of private IP tokens it shares."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, str, str]] = []
    for a in range(n):
        for kind in KINDS:
            for _ in range(int(rng.integers(1, 2 + a % 4))):
                rows.append((f"a{a:04d}", kind, f"{kind}-{int(rng.integers(0, POOLS[kind]))}"))
    for (a, b), count in (planted or {}).items():
        for t in range(count):
            rows += [(f"a{a:04d}", "ip", f"ip-planted-{a}-{b}-{t}"), (f"a{b:04d}", "ip", f"ip-planted-{a}-{b}-{t}")]
    return pa.table({"account_id": [r[0] for r in rows], "kind": [r[1] for r in rows], "key": [r[2] for r in rows]})


def _edges(keys: pa.Table, n: int, q: float = 0.05) -> list[pairs.PairEdge]:
    entity_of = {f"a{a:04d}": a for a in range(n)}
    found, _ = pairs.pair_tests(blocks.kind_tables(keys, entity_of, n, 2_000), n, q)
    return found


def test_populations_without_structure_validate_an_edge_in_at_most_q_of_replicates() -> None:
    q, replicates = 0.05, 40
    with_edge = sum(bool(_edges(_keys(seed, 200), 200, q)) for seed in range(replicates))
    low, _ = nulls.clopper_pearson(with_edge, replicates)
    assert low <= q, f"{with_edge} of {replicates} structureless populations had a validated edge"


def test_a_pair_sharing_several_private_addresses_is_validated_and_no_other() -> None:
    found = _edges(_keys(1, 200, {(3, 150): 4}), 200)
    assert [(e.a, e.b) for e in found] == [(3, 150)]
    edge = found[0]
    assert edge.shared >= 4 and edge.expected < 1 and edge.q_value <= 0.05
    assert "q=" in edge.reason() and "all pairs" in edge.reason()


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 6), st.integers(0, 10_000))
def test_sharing_more_never_raises_a_pairs_p_value(count: int, seed: int) -> None:
    weaker = {(e.a, e.b): e.p_value for e in _edges(_keys(seed, 120, {(2, 90): count}), 120, q=1.0)}
    stronger = {(e.a, e.b): e.p_value for e in _edges(_keys(seed, 120, {(2, 90): count + 1}), 120, q=1.0)}
    assert stronger[(2, 90)] <= weaker.get((2, 90), 1.0)


def test_renaming_the_accounts_permutes_the_edges() -> None:
    n = 200
    keys = _keys(5, n, {(10, 20): 5, (30, 40): 6})
    entity_of = {f"a{a:04d}": a for a in range(n)}
    base = {(e.a, e.b, e.p_value) for e in pairs.pair_tests(blocks.kind_tables(keys, entity_of, n, 2_000), n, 0.05)[0]}
    perm = np.random.default_rng(0).permutation(n)
    renamed = {f"a{a:04d}": int(perm[a]) for a in range(n)}
    moved = pairs.pair_tests(blocks.kind_tables(keys, renamed, n, 2_000), n, 0.05)[0]
    inverse = np.argsort(perm)
    assert {(min(inverse[e.a], inverse[e.b]), max(inverse[e.a], inverse[e.b]), e.p_value) for e in moved} == base
    assert {(10, 20), (30, 40)} <= {(a, b) for a, b, _ in base}


def _finding(entities: tuple[int, ...]) -> verdicts.Finding:
    return verdicts.Finding("throttle", "cohort", "earlier arrivals", 1e-9, 1.0, "a window", entities, 0.01)


def test_a_validated_pair_puts_two_findings_under_one_campaign_id_without_raising_an_action() -> None:
    accounts_of = {e: [f"acct-{e}"] for e in range(10)}
    edge = pairs.PairEdge(2, 7, "network", "ip", 4, 0.01, 1e-9, 1e-6)
    findings = [_finding((0, 1, 2, 3, 4)), _finding((5, 6, 7)), _finding((8, 9))]
    apart = verdicts.Evidence([str(e) for e in range(10)], accounts_of, findings).by_account(min_members=5)
    joined = verdicts.Evidence([str(e) for e in range(10)], accounts_of, findings, edges=[edge]).by_account(5)
    assert apart["acct-0"][1] != apart["acct-5"][1]
    assert joined["acct-0"][1] == joined["acct-5"][1] == joined["acct-7"][1] != joined["acct-8"][1]
    # the three-entity group stays capped at monitor: the pair grouped it, it did not enlarge it
    assert {a: v[0] for a, v in joined.items()} == {a: v[0] for a, v in apart.items()}
    assert joined["acct-5"][0] == "monitor" and joined["acct-0"][0] == "throttle"
    assert any(line.startswith("pair (") for line in joined["acct-7"][2])


def _tables(keys: pa.Table, n: int) -> list[blocks.KindTable]:
    return blocks.kind_tables(keys, {f"a{a:04d}": a for a in range(n)}, n, 2_000)


def test_groups_drawn_from_a_structureless_population_tie_in_at_most_alpha_of_replicates() -> None:
    alpha, replicates = 0.05, 40
    tied = 0
    for seed in range(replicates):
        groups = [list(range(g * 10, g * 10 + 10)) for g in range(6)]
        tied += bool(pairs.group_ties(_tables(_keys(seed, 200), 200), groups, alpha))
    low, _ = nulls.clopper_pearson(tied, replicates)
    assert low <= alpha, f"{tied} of {replicates} replicates tied independent groups"


def test_two_cells_sharing_their_proxies_tie_and_an_unrelated_group_does_not() -> None:
    n = 200
    keys = _keys(3, n)
    # 30 exit addresses, each used once by an account of each cell
    rows = [(f"a{a:04d}", "ip", f"ip-proxy-{t}") for t in range(30) for a in (t % 10, 50 + (3 * t) % 10)]
    keys = pa.concat_tables([keys, pa.table({"account_id": [r[0] for r in rows], "kind": [r[1] for r in rows],
                                             "key": [r[2] for r in rows]})])
    ties = pairs.group_ties(_tables(keys, n), [list(range(0, 10)), list(range(50, 60)), list(range(100, 110))], 0.01)
    assert [(t.a, t.b) for t in ties] == [(0, 50)]
    assert ties[0].kind == "ip" and ties[0].shared >= 30 and "corrected for the pairs of groups" in ties[0].reason()


def test_a_group_tie_puts_two_findings_under_one_campaign_id_without_raising_an_action() -> None:
    accounts_of = {e: [f"acct-{e}"] for e in range(10)}
    tie = pairs.GroupTie(0, 5, "network", "ip", 12, 0.5, 1e-12, 1e-10)
    findings = [_finding((0, 1, 2, 3, 4)), _finding((5, 6, 7))]
    apart = verdicts.Evidence([str(e) for e in range(10)], accounts_of, findings).by_account(min_members=5)
    joined = verdicts.Evidence([str(e) for e in range(10)], accounts_of, findings, group_ties=[tie]).by_account(5)
    assert apart["acct-0"][1] != apart["acct-6"][1] and joined["acct-0"][1] == joined["acct-6"][1]
    assert {a: v[0] for a, v in joined.items()} == {a: v[0] for a, v in apart.items()}
    assert any(line.startswith("group (") for line in joined["acct-6"][2])


def test_evidence_with_other_findings_does_not_keep_an_earlier_answer():
    """by_account is kept per Evidence; a copy with other findings answers for its own."""
    from dataclasses import replace

    accounts_of = {e: [f"a{e}"] for e in range(10)}
    finding = verdicts.Finding("throttle", "block", "BiCM", 1e-9, 1.0, "r", tuple(range(6)), 0.01)
    evidence = verdicts.Evidence([str(e) for e in range(10)], accounts_of, [finding])
    assert evidence.by_account(5)["a0"][0] == "throttle"
    assert replace(evidence, findings=[]).by_account(5) == {}
