"""Campaigns: clusters of the weighted account graph, scored as operations.

Clustering is Leiden (Traag, Waltman & van Eck, Sci. Rep. 2019) through graspologic-native
(MIT), on the collected edge table, with a fixed seed. Each cluster is then scored on what an
operation cannot hide and a community of real customers does not show together:

- ``structure``: how much linking evidence per member (a campaign's accounts share cards,
  proxies, sign-up bursts, scaffolds and session slots; a NAT only an address);
- ``automation``: the members' mean per-account suspicion (signals.py);
- ``collective``: the share of members linked by operational evidence (payment, sign-up burst,
  scaffold, synchrony) rather than by network location alone;
- ``complementarity``: members send different prompts (a sweep of a capability corpus with
  few repeats), unlike benchmark researchers who all send the same public items.

Camouflage resistance: the score uses member *shares* and per-member weights, and members are
weighted by their own suspicion (FRAUDAR-style, Hooi et al. KDD 2016), so padding a cluster
with benign-looking accounts or benign prompts dilutes it little.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import graspologic_native as gn
import pyarrow as pa

from distillguard.linkage import EVIDENCE

OPERATIONAL = ("payment", "signup_burst", "scaffold", "system_prompt", "sync")


@dataclass(frozen=True)
class CampaignParams:
    min_members: int = 5
    resolution: float = 1.0
    seed: int = 7
    structure_scale: float = 6.0  # internal weight per member at which structure is ~0.63
    min_member_weight: float = 4.0  # a member must be this strongly tied to the rest to count


def cluster(edges: pa.Table, params: CampaignParams) -> dict[str, int]:
    """account -> cluster number, for accounts with at least one edge."""
    if edges.num_rows == 0:
        return {}
    triples = list(zip(edges.column("a").to_pylist(), edges.column("b").to_pylist(),
                       edges.column("weight").to_pylist()))
    triples.sort()
    _, membership = gn.leiden(triples, resolution=params.resolution, seed=params.seed, trials=1, iterations=2)
    return membership


def _admitted(edges: pa.Table, membership: dict[str, int], min_weight: float) -> dict[str, int]:
    """Keep only members whose summed edge weight into their own cluster reaches ``min_weight``.

    Leiden puts every node somewhere; a customer who once shared a slot or a subnet with a
    campaign account is attached to its cluster but is not part of the operation.
    """
    strength: dict[str, float] = {}
    for a, b, w in zip(*(edges.column(n).to_pylist() for n in ("a", "b", "weight"))):
        if membership.get(a) is not None and membership.get(a) == membership.get(b):
            strength[a] = strength.get(a, 0.0) + w
            strength[b] = strength.get(b, 0.0) + w
    return {a: c for a, c in membership.items() if strength.get(a, 0.0) >= min_weight}


def score_clusters(edges: pa.Table, membership: dict[str, int], suspicion: dict[str, float],
                   prompt_stats: dict[int, tuple[int, int]], params: CampaignParams) -> list[dict]:
    """One dict per cluster with at least ``min_members``: members, sub-scores and score."""
    kinds = list(EVIDENCE)
    membership = _admitted(edges, membership, params.min_member_weight)
    members: dict[int, list[str]] = {}
    for account, c in membership.items():
        members.setdefault(c, []).append(account)
    internal: dict[int, dict] = {}
    a_col, b_col, w_col = (edges.column(n).to_pylist() for n in ("a", "b", "weight"))
    shared = {k: edges.column(f"shared_{k}").to_pylist() for k in kinds}
    for i, (a, b, w) in enumerate(zip(a_col, b_col, w_col)):
        ca, cb = membership.get(a), membership.get(b)
        if ca is None or ca != cb:
            continue
        info = internal.setdefault(ca, {"weight": 0.0, "kinds": {k: 0 for k in kinds},
                                        "linked": {k: set() for k in kinds}})
        info["weight"] += w
        for k in kinds:
            if shared[k][i]:
                info["kinds"][k] += shared[k][i]
                info["linked"][k].update((a, b))
    out = []
    for c, accounts in members.items():
        if len(accounts) < params.min_members or c not in internal:
            continue
        info = internal[c]
        n = len(accounts)
        structure = 1.0 - math.exp(-info["weight"] / n / params.structure_scale)
        weights = [suspicion.get(a, 0.0) for a in accounts]
        automation = sum(weights) / n
        operational = set().union(*(info["linked"][k] for k in OPERATIONAL))
        collective = len(operational) / n
        exchanges, distinct = prompt_stats.get(c, (0, 0))
        complementarity = distinct / exchanges if exchanges else 0.0
        evidence = max(automation, 0.5 * automation + 0.5 * collective)
        score = structure * evidence * (0.5 + 0.5 * complementarity)
        out.append({
            "cluster": c, "members": sorted(accounts), "size": n, "score": round(score, 4),
            "structure": round(structure, 4), "automation": round(automation, 4),
            "collective": round(collective, 4), "complementarity": round(complementarity, 4),
            "internal_weight": round(info["weight"], 3),
            "indicators": {k: {"shared_keys": info["kinds"][k], "accounts": len(info["linked"][k])}
                           for k in kinds if info["kinds"][k]},
        })
    out.sort(key=lambda c: (-c["score"], c["members"][0]))
    return out


def merge_cells(edges: pa.Table, clusters: list[dict], min_link: float) -> list[list[dict]]:
    """Group scored clusters that are linked to each other into one campaign.

    Operations run in cells (a card, a proxy pool and a controller per few dozen accounts);
    Leiden rightly separates the cells, but cells of one operation still share scaffolds,
    sign-up waves and schedules across their borders. Two clusters join when the summed
    weight of edges between their members reaches ``min_link`` (union-find, deterministic).
    """
    owner = {a: i for i, c in enumerate(clusters) for a in c["members"]}
    links: dict[tuple[int, int], float] = {}
    for a, b, w in zip(*(edges.column(n).to_pylist() for n in ("a", "b", "weight"))):
        ca, cb = owner.get(a), owner.get(b)
        if ca is None or cb is None or ca == cb:
            continue
        key = (min(ca, cb), max(ca, cb))
        links[key] = links.get(key, 0.0) + w
    parent = list(range(len(clusters)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for (i, j), weight in sorted(links.items()):
        if weight >= min_link:
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[dict]] = {}
    for i, c in enumerate(clusters):
        groups.setdefault(find(i), []).append(c)
    return [groups[k] for k in sorted(groups)]
