"""Campaign lineage: which campaign of this scan continues which campaign of the previous one.

A campaign's id names the operation, not one scan's member list: analysts, reports, STIX
consumers and the gateway's logs refer to it across scans while accounts join and leave it.
The rule (docs/detection.md, "Campaign ids") compares each new campaign C with the previous
scan's campaigns P by their shared members:

- C *inherits* P's id when it holds most of P's members, ``|C & P| > |P| / 2``. Campaigns of
  one scan share no member, so at most one C can hold most of a P: an id never goes to two
  campaigns. When several P pass for one C, C keeps the id of the one it shares the most
  members with (then the longest tracked, then the smaller, i.e. the one more of whose members
  persist, and only then the lower id); the others are recorded as merged into C
  (``merged_from`` on C: each of them ``merged_into`` C's id).
- A C that inherits nothing gets the digest of its members (:func:`member_id`, what every id
  was before lineage), and ``split_from`` names the previous campaign it holds the most members
  of (same order), if any: a cell that broke away from a campaign, or the remnant of one that
  dissolved.
- A P that no C holds most of ends with this scan (vanished, split up or merged away).

Everything here is a pure function of the member sets and the previous campaigns: the input
order never matters, and a consistent renaming of the accounts gives the same lineage up to the
ids, except where two previous campaigns tie in overlap, first scan and size (then their ids
decide) or where member digests collide (then a counter is added to the digest).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

#: prefix of every campaign id
PREFIX = "campaign-"


def member_id(members: Iterable[str], salt: int = 0) -> str:
    """The id of a campaign with no predecessor: a 40-bit blake2b digest of its sorted members
    (with ``salt`` > 0 only to step past an id already taken)."""
    text = ",".join(sorted(members)) + (f"#{salt}" if salt else "")
    return PREFIX + hashlib.blake2b(text.encode(), digest_size=5).hexdigest()


@dataclass(frozen=True)
class Previous:
    """A campaign of the previous scan: its id, members, and the scan that first found its id
    (ISO 8601, UTC)."""

    campaign_id: str
    accounts: frozenset[str]
    first_scan: str


@dataclass(frozen=True)
class Lineage:
    """What one campaign of this scan is, relative to the previous scan's campaigns."""

    campaign_id: str
    first_scan: str  # the as_of of the scan that first found this id (this scan's when new)
    members_added: list[str]  # members the predecessor did not have (all members when new), in name order
    members_removed: list[str]  # the predecessor's members it no longer has, in name order
    merged_from: list[str]  # previous campaigns that merged into this one (each merged_into this id), sorted
    split_from: str | None  # for a new id: the previous campaign it holds the most members of


def _rank(overlap: int, previous: Previous) -> tuple:
    """Sort key of the previous campaigns competing for one new campaign: the most shared
    members first, then the longest tracked, then the smaller, then the id."""
    return (-overlap, datetime.fromisoformat(previous.first_scan), len(previous.accounts), previous.campaign_id)


def trace(current: list[list[str]], previous: Iterable[Previous], scan_time: str) -> list[Lineage]:
    """The lineage of each campaign of ``current`` (member lists, campaigns sharing no member),
    in that order, given the previous scan's campaigns; ``scan_time`` is this scan's as_of (ISO 8601)."""
    prior = sorted(previous, key=lambda p: p.campaign_id)
    member_sets = [frozenset(m) for m in current]
    owner = {a: i for i, members in enumerate(member_sets) for a in members}
    # overlap[i][previous index] = members campaign i shares with that previous campaign
    overlap: list[dict[int, int]] = [{} for _ in member_sets]
    for j, p in enumerate(prior):
        for a in p.accounts:
            i = owner.get(a)
            if i is not None:
                overlap[i][j] = overlap[i].get(j, 0) + 1
    # candidates[i]: the previous campaigns most of whose members are in campaign i
    candidates: list[list[int]] = [[j for j, n in shared.items() if 2 * n > len(prior[j].accounts)]
                                   for shared in overlap]
    heir: dict[int, int] = {}
    for i, found in enumerate(candidates):
        if found:
            heir[i] = min(found, key=lambda j: _rank(overlap[i][j], prior[j]))
    taken = {p.campaign_id for p in prior}
    ids: dict[int, str] = {i: prior[j].campaign_id for i, j in heir.items()}
    # new ids in the order of their digests, so a collision is stepped past the same way every time
    fresh = sorted((member_id(member_sets[i]), i) for i in range(len(member_sets)) if i not in heir)
    for digest, i in fresh:
        salt, name = 0, digest
        while name in taken or name in ids.values():
            salt += 1
            name = member_id(member_sets[i], salt)
        ids[i] = name
        taken.add(name)
    out = []
    for i, members in enumerate(member_sets):
        if i in heir:
            p = prior[heir[i]]
            out.append(Lineage(
                campaign_id=ids[i], first_scan=p.first_scan,
                members_added=sorted(members - p.accounts), members_removed=sorted(p.accounts - members),
                merged_from=sorted(prior[j].campaign_id for j in candidates[i] if j != heir[i]), split_from=None))
            continue
        source = min(overlap[i], key=lambda j: _rank(overlap[i][j], prior[j])) if overlap[i] else None
        out.append(Lineage(
            campaign_id=ids[i], first_scan=scan_time, members_added=sorted(members), members_removed=[],
            merged_from=[], split_from=None if source is None else prior[source].campaign_id))
    return out
