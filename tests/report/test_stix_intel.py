"""STIX bundles as threat intelligence: TLP 2.0 markings, confidence from the campaign's
statistics, indicator validity and ids that do not change from one export to the next."""

from __future__ import annotations

import json
import re
from datetime import datetime

import pytest
from stix2validator import ValidationOptions, validate_string

from distillguard.errors import UserError
from distillguard.report import document, stix
from distillguard.store import Store


@pytest.mark.parametrize(("score", "p", "expected"), [
    (0.747, None, 75),       # no calibrated test: the score alone
    (0.30, 0.000248, 95),    # a test at p = 0.000248: 99.97, capped at 95
    (0.30, 0.2, 80),         # a weak test: 100 x (1 - 0.2)
    (0.97, 0.01, 97),        # the score above what the test gives
    (1.4, None, 100),        # out of range is clamped
    (0.0, 1.0, 0),
])
def test_confidence_is_the_score_raised_by_the_corrected_test_p_value_and_capped(score, p, expected):
    assert stix.confidence(score, p) == expected


@pytest.mark.parametrize("level", stix.TLP_LEVELS)
def test_each_tlp_level_is_the_marking_definition_oasis_publishes(level):
    marking = json.loads(stix.tlp_marking(level).serialize())
    assert marking["id"] == stix.TLP2_IDS[level]
    assert marking["name"] == f"TLP:{level.upper()}"
    assert marking["created"] == "2022-10-01T00:00:00.000Z"
    assert marking["extensions"] == {stix.TLP2_EXTENSION: {"extension_type": "property-extension", "tlp_2_0": level}}


def test_an_unknown_tlp_level_is_a_user_error():
    with pytest.raises(UserError, match="--tlp must be one of"):
        stix.tlp_marking("white")


def _doc(db):
    with Store(db, read_only=True) as store:
        return document.build(store.con, None, generated_at=datetime(2026, 1, 1))


@pytest.mark.slow
def test_every_object_carries_the_tlp_marking_asked_for_and_the_bundle_stays_valid(intel_store):
    doc = _doc(intel_store)
    for level in ("amber", "red"):
        text = stix.bundle(doc, tlp=level)
        objects = json.loads(text)["objects"]
        markings = [o for o in objects if o["type"] == "marking-definition"]
        assert [m["id"] for m in markings] == [stix.TLP2_IDS[level]]
        assert all(o["object_marking_refs"] == [stix.TLP2_IDS[level]] for o in objects if o["type"] != "marking-definition")
        result = validate_string(text, ValidationOptions(strict=True))
        assert result.is_valid and not result.warnings, [str(e) for e in result.errors + result.warnings][:5]


@pytest.mark.slow
def test_indicators_have_confidence_and_expire_after_the_valid_days(intel_store):
    doc = _doc(intel_store)
    objects = json.loads(stix.bundle(doc, valid_days=30))["objects"]
    campaigns = {o["id"]: o for o in objects if o["type"] == "campaign"}
    indicators = [o for o in objects if o["type"] == "indicator"]
    assert campaigns and indicators
    as_of = datetime.fromisoformat(doc["scan"]["as_of"])
    for indicator in indicators:
        valid_from = datetime.fromisoformat(indicator["valid_from"].replace("Z", "+00:00"))
        valid_until = datetime.fromisoformat(indicator["valid_until"].replace("Z", "+00:00"))
        assert valid_from < valid_until and (valid_until - as_of).days == 30
    # the confidence is raised by the smallest corrected p-value of the calibrated tests that
    # accepted the campaign's members, as their verdicts in the store say it
    shared = [c for c in doc["campaigns"] if c["action"] in stix.SHARED_ACTIONS]
    with Store(intel_store, read_only=True) as store:
        reasons = store.con.execute("SELECT array_to_string(reasons, ' | ') FROM verdicts WHERE campaign_id = ?",
                                    [shared[0]["campaign_id"]]).fetchall()
    tested = [float(p) for (text,) in reasons for p in re.findall(r"corrected for looks p=([0-9.e+-]+)", text)]
    p = min(tested) if tested else None
    assert stix.corrected_p_value(shared[0]) == p
    assert {c["confidence"] for c in campaigns.values()} == {stix.confidence(shared[0]["score"], p)}
    assert {i["confidence"] for i in indicators} == {c["confidence"] for c in campaigns.values()}


@pytest.mark.slow
def test_ids_come_from_the_campaign_and_pattern_not_from_the_scan(intel_store):
    doc = _doc(intel_store)
    first = json.loads(stix.bundle(doc))["objects"]
    # the same campaigns in a later scan: new times, same ids
    later = json.loads(json.dumps(doc))
    later["scan"]["scan_id"], later["scan"]["as_of"] = "20270101T000000Z", "2027-01-01T00:00:00+00:00"
    second = json.loads(stix.bundle(later))["objects"]
    assert [o["id"] for o in first] == [o["id"] for o in second]
    assert {o.get("modified") for o in second if o["type"] == "indicator"} == {"2027-01-01T00:00:00.000Z"}
    # a campaign's objects were created by the scan that first found it: the same in every version
    created = {o["id"]: o["created"] for o in first if "created" in o and o["type"] != "identity"}
    assert created == {o["id"]: o["created"] for o in second if "created" in o and o["type"] != "identity"}
    assert {created[o["id"]] for o in first if o["type"] == "campaign"} == {
        stix._ts(doc["scan"]["as_of"]).strftime("%Y-%m-%dT%H:%M:%S.000Z")}
    for indicator in (o for o in first if o["type"] == "indicator"):
        campaign = next(o for o in first if o["type"] == "relationship" and o["source_ref"] == indicator["id"])
        cid = next(o for o in first if o["id"] == campaign["target_ref"])["name"].rsplit(" ", 1)[1]
        assert indicator["id"] == stix._id("indicator", cid, indicator["pattern"])
