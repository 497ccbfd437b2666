"""Actors: campaigns linked when their members share more keys than sizes and key popularity
predict, never by a count threshold; kept in the store, listed, and shared as STIX intrusion-sets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import stix2
from typer.testing import CliRunner

from distillguard.cli import app
from distillguard.detect import nulls
from distillguard.ingest import normalize
from distillguard.intel import actors
from distillguard.report import stix
from distillguard.store import Store
from tests.intel.conftest import accounts_store


def _population(n: int = 300) -> dict[str, set[tuple[str, str]]]:
    """Accounts with their own card and range; 200 of them use one popular client."""
    keys = {f"u{i}": {("card", f"c{i}"), ("address range", f"10.{i // 250}.{i % 250}.0/24")} for i in range(n)}
    for i in range(200):
        keys[f"u{i}"].add(("user-agent", "popular-sdk/1.0"))
    return keys


def _campaign(first: int, size: int, seen: str) -> dict:
    return {"accounts": [f"u{i}" for i in range(first, first + size)], "first_seen": seen, "last_seen": seen,
            "exchanges": 10 * size}


def test_campaigns_sharing_rare_keys_are_one_actor_and_a_popular_key_links_nothing():
    keys = _population()
    campaigns = {"camp-a": _campaign(0, 10, "2026-01-05T00:00:00"), "camp-b": _campaign(10, 10, "2026-03-01T00:00:00"),
                 "camp-c": _campaign(20, 10, "2026-04-01T00:00:00")}
    # the operator of camp-a reuses three of its cards and one of its ranges for camp-b's accounts
    for n, i in enumerate(range(10, 14)):
        keys[f"u{i}"] |= {("card", f"c{n}")} if n < 3 else {("address range", "10.0.0.0/24")}
    tested = {(k.a, k.b): k for k in actors.links(campaigns, keys)}
    ab = tested[("camp-a", "camp-b")]
    # the popular client every pair shares is no rare key: it is not counted
    assert ab.shared_keys == 4 and ab.by_kind == {"address range": 1, "card": 3}
    assert ab.expected < 1 and ab.p_corrected <= 1e-3
    assert tested[("camp-a", "camp-c")].shared_keys == 0 and tested[("camp-a", "camp-c")].p_corrected == 1.0
    found = actors.actors(campaigns, list(tested.values()), alpha=1e-3)
    assert [a.campaigns for a in found] == [["camp-a", "camp-b"]]
    assert found[0].first_seen == "2026-01-05T00:00:00" and found[0].last_seen == "2026-03-01T00:00:00"
    assert 0 < found[0].confidence <= actors.CONFIDENCE_CAP and found[0].exchanges == 200


#: framing phrases of the organic population: phrase j is written by a share 0.2 + 0.6 j / 40 of accounts
COMMON_PHRASES = 40


def _population_with_framing(n: int = 400, seed: int = 7) -> dict[str, set[tuple[str, str]]]:
    """Accounts with their own card and range, one of three popular clients, and common framing phrases."""
    rng = np.random.default_rng(seed)
    keys = {f"u{i}": {("card", f"c{i}"), ("address range", f"10.{i // 250}.{i % 250}.0/24"),
                      ("user-agent", f"sdk/{i % 3}")} for i in range(n)}
    for j in range(COMMON_PHRASES):
        for i in np.flatnonzero(rng.random(n) < 0.2 + 0.6 * j / COMMON_PHRASES):
            keys[f"u{i}"].add(("framing", f"phrase {j}"))
    return keys


@pytest.mark.parametrize("reused", [3, 4, 5])
def test_a_handful_of_rare_cards_links_two_campaigns_whatever_common_framing_they_share_or_lack(reused):
    keys = _population_with_framing()
    campaigns = {"camp-a": _campaign(0, 12, "2026-01-05"), "camp-b": _campaign(12, 12, "2026-03-01")}
    # camp-a's scripts write every common phrase, camp-b's none: counted, the phrases would bury the cards
    for i in range(12):
        keys[f"u{i}"] |= {("framing", f"phrase {j}") for j in range(COMMON_PHRASES)}
        keys[f"u{i + 12}"] -= {("framing", f"phrase {j}") for j in range(COMMON_PHRASES)}
    for n in range(reused):  # the operator pays for camp-b's accounts with camp-a's cards
        keys[f"u{12 + n}"].add(("card", f"c{n}"))
    [link] = actors.links(campaigns, keys)
    assert link.by_kind == {"card": reused} and link.p_corrected <= 1e-3
    assert [a.campaigns for a in actors.actors(campaigns, [link], alpha=1e-3)] == [["camp-a", "camp-b"]]


def test_campaigns_sharing_only_common_framing_and_a_popular_client_are_not_linked():
    keys = _population_with_framing()
    campaigns = {"camp-a": _campaign(0, 12, "2026-01-05"), "camp-b": _campaign(12, 12, "2026-03-01")}
    for i in range(24):  # both scripts write every common phrase through the same popular client
        keys[f"u{i}"] |= {("framing", f"phrase {j}") for j in range(COMMON_PHRASES)} | {("user-agent", "sdk/0")}
    [link] = actors.links(campaigns, keys)
    assert link.shared_keys == 0 and link.p_corrected == 1.0
    assert actors.actors(campaigns, [link], alpha=1e-3) == []


def _random_population(rng: np.random.Generator, n: int = 300) -> dict[str, set[tuple[str, str]]]:
    """Accounts whose keys are drawn independently of one another: cards from a pool with some reuse,
    ranges shared by a few, user agents by popularity, framing phrases of every popularity."""
    keys = {}
    agents = rng.zipf(1.6, n)
    for i in range(n):
        held = {("card", f"c{rng.integers(0, 2 * n)}"), ("address range", f"r{rng.integers(0, n // 3)}"),
                ("user-agent", f"ua{agents[i]}")}
        held |= {("framing", f"f{j}") for j in np.flatnonzero(rng.random(60) < np.linspace(0.005, 0.7, 60))}
        keys[f"u{i}"] = held
    return keys


@pytest.mark.slow
def test_campaigns_drawn_at_random_from_one_population_link_in_at_most_alpha_of_replicates():
    rng, alpha, replicates = np.random.default_rng(2026), 0.1, 300
    linked = 0
    for _ in range(replicates):
        keys = _random_population(rng)
        order = rng.permutation(sorted(keys))
        sizes = rng.integers(5, 30, 3)
        bounds = np.concatenate(([0], np.cumsum(sizes)))
        campaigns = {f"camp-{c}": {"accounts": list(order[bounds[c]:bounds[c + 1]]), "first_seen": "2026-01-01"}
                     for c in range(3)}
        linked += bool(actors.actors(campaigns, actors.links(campaigns, keys), alpha))
    low, _ = nulls.clopper_pearson(linked, replicates)
    assert low <= alpha, f"{linked} of {replicates} replicates linked at alpha {alpha}"


def test_an_actors_id_stays_while_its_earliest_campaign_stays_in_it():
    keys = _population()
    for i in range(10, 14):  # camp-b reuses four of camp-a's cards, camp-c four of camp-b's
        keys[f"u{i}"].add(("card", f"c{i - 10}"))
        keys[f"u{i + 10}"].add(("card", f"c{i}"))
    two = {"camp-a": _campaign(0, 10, "2026-01-05"), "camp-b": _campaign(10, 10, "2026-03-01")}
    three = {**two, "camp-c": _campaign(20, 10, "2026-04-01")}
    found = [actors.actors(c, actors.links(c, keys), 1e-3) for c in (two, three)]
    assert [a.campaigns for a in found[1]] == [["camp-a", "camp-b", "camp-c"]]
    assert found[0][0].actor_id == found[1][0].actor_id


def test_actors_lists_the_stored_actors_and_the_stix_bundle_attributes_their_campaigns(tmp_path):
    accounts = {f"a-{i}": {"payment_fingerprint": f"card-{i}", "client_ip": f"198.51.{i}.7"} for i in range(40)}
    for i in range(10, 14):  # camp-b's accounts reuse camp-a's cards
        accounts[f"a-{i}"]["payment_fingerprint"] = f"card-{i - 10}"
    db = accounts_store(tmp_path / "s", accounts)
    with Store(db) as store:
        store.con.execute("CREATE TABLE campaigns (scan_id VARCHAR, campaign_id VARCHAR, detail VARCHAR)")
        for cid, first, seen in (("camp-a", 0, "2026-05-01T00:00:00+00:00"), ("camp-b", 10, "2026-05-03T00:00:00+00:00")):
            detail = {"accounts": [f"a-{i}" for i in range(first, first + 5)], "first_seen": seen, "last_seen": seen,
                      "exchanges": 25}
            store.con.execute("INSERT INTO campaigns VALUES ('s1', ?, ?)", [cid, json.dumps(detail)])
    done = CliRunner().invoke(app, ["actors", "--db", str(db), "--json"])
    assert done.exit_code == 0, done.output
    listed = json.loads(done.output)
    assert [a["campaigns"] for a in listed] == [["camp-a", "camp-b"]]
    assert listed[0]["links"][0]["by_kind"]["card"] == 4  # framing the whole population shares explains itself
    producer = stix2.Identity(name="p", identity_class="organization")
    objects = stix.actor_objects(listed, {"camp-b"}, producer, stix.TLP2_IDS["amber"],
                                 stix._ts("2026-05-04T00:00:00+00:00"))
    intrusion, relationship = objects
    assert intrusion.type == "intrusion-set" and intrusion.confidence == listed[0]["confidence"]
    assert relationship.relationship_type == "attributed-to" and relationship.target_ref == intrusion.id
    assert relationship.source_ref == stix._id("campaign", "camp-b") and "4 card" in relationship.description
    assert stix.actor_objects(listed, {"camp-z"}, producer, stix.TLP2_IDS["amber"],
                              stix._ts("2026-05-04T00:00:00+00:00")) == []


def test_an_address_two_accounts_share_is_one_key_of_both_and_never_its_text(tmp_path):
    db = accounts_store(tmp_path / "s", {"a-1": {"email": "Op@Lab.example"}, "a-2": {"email": " op@lab.example"},
                                         "a-3": {"email": "someone@else.example"}})
    with Store(db, read_only=True) as store:
        keys = actors.account_keys(store.con)
    shared = {key for kind, key in keys["a-1"] & keys["a-2"] if kind == "e-mail address"}
    assert shared == {normalize.email_fingerprint("op@lab.example")}
    assert not any(kind == "e-mail address" for kind, _ in keys["a-1"] & keys["a-3"])
    assert not any("@" in k for held in keys.values() for _, k in held)
