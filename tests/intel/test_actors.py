"""Actors: campaigns linked when their members share more keys than sizes and key popularity
predict, never by a count threshold; kept in the store, listed, and shared as STIX intrusion-sets."""

from __future__ import annotations

import json

import stix2
from typer.testing import CliRunner

from distillguard.cli import app
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
    assert ab.shared_keys == 5 and ab.by_kind == {"address range": 1, "card": 3, "user-agent": 1}
    # the popular client is shared by every pair and explains itself
    assert tested[("camp-a", "camp-c")].shared_keys == 1 and tested[("camp-a", "camp-c")].p_corrected > 0.5
    found = actors.actors(campaigns, list(tested.values()), alpha=1e-3)
    assert [a.campaigns for a in found] == [["camp-a", "camp-b"]]
    assert found[0].first_seen == "2026-01-05T00:00:00" and found[0].last_seen == "2026-03-01T00:00:00"
    assert 0 < found[0].confidence <= actors.CONFIDENCE_CAP and found[0].exchanges == 200


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
