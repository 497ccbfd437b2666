"""MISP events in: CIRCL's exported event from PyMISP's repository, events built with pymisp's own
model, and malformed events refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymisp import MISPEvent

from distillguard.ingest import normalize
from distillguard.intel import misp_in
from distillguard.intel.indicators import IntelError

CIRCL = Path(__file__).resolve().parents[1] / "data" / "intel" / "misp" / "circl-osint-event.json"


def test_a_real_events_addresses_are_taken_and_its_file_hashes_are_not_payment_data():
    found, skipped = misp_in.read_event(CIRCL.read_bytes(), "circl.json")
    assert [(i.type, i.value, i.tlp) for i in found] == [("network", "98.126.156.210", "clear"),
                                                         ("network", "104.148.70.217", "clear")]
    assert all(i.external_id and i.valid_from is not None and i.name for i in found)
    # sha256 under "Payload delivery" is a file's hash, not a card's
    assert skipped["type sha256"] == 16 and "type ip-dst" not in skipped


def _event(*attributes: tuple, tags: tuple[str, ...] = ("tlp:amber",)) -> str:
    event = MISPEvent()
    event.info = "harvest operation"
    for tag in tags:
        event.add_tag(tag)
    for kind, value, fields in attributes:
        event.add_attribute(kind, value, **fields)
    return json.dumps({"Event": json.loads(event.to_json())})


def test_each_matchable_attribute_type_becomes_its_indicator_with_the_strictest_tlp_and_stated_confidence():
    text = _event(("ip-src", "203.0.113.0/24", {}), ("AS", "AS64500", {"to_ids": True}),
                  ("domain", "Byte81.top", {}), ("user-agent", "harvest/1.0", {"to_ids": True}),
                  ("hex", "ab" * 32, {"category": "Financial fraud", "to_ids": True}),
                  ("email-src", "ops@byte81.top", {}),
                  ("ip-dst", "198.51.100.4", {"to_ids": False}),
                  ("ip-src", "198.51.100.5", {"Tag": [{"name": "tlp:red"}]}),
                  tags=("tlp:green", 'misp:confidence-level="usually-confident"'))
    found, skipped = misp_in.read_event(text, "event.json")
    assert [(i.type, i.value) for i in found] == [
        ("network", "203.0.113.0/24"), ("autonomous-system", "64500"), ("email-domain", "byte81.top"),
        ("user-agent", "harvest/1.0"), ("payment-fingerprint", "ab" * 32),
        ("email-fingerprint", normalize.email_fingerprint("ops@byte81.top")), ("network", "198.51.100.5")]
    assert [i.tlp for i in found] == ["green"] * 6 + ["red"]
    assert {i.confidence for i in found} == {75}
    assert skipped == {"not for detection (to_ids false or deleted)": 1}


def test_an_email_attribute_is_stored_as_the_addresss_fingerprint_never_the_address():
    found, _ = misp_in.read_event(_event(("email", "Ann@Lab.example ", {"to_ids": True}),
                                         ("email-src", "bob@lab.example", {})), "event.json")
    assert [(i.type, i.value) for i in found] == [
        ("email-fingerprint", normalize.email_fingerprint("ann@lab.example")),
        ("email-fingerprint", normalize.email_fingerprint("bob@lab.example"))]
    assert not any("lab.example" in i.value for i in found)


def test_context_attributes_are_not_indicators_unless_their_producer_says_so():
    # MISP's defaults: an AS or a user agent is context (to_ids false)
    found, skipped = misp_in.read_event(_event(("AS", "AS64500", {}), ("user-agent", "curl/8", {})), "event.json")
    assert found == [] and skipped == {"not for detection (to_ids false or deleted)": 2}


@pytest.mark.parametrize(("text", "names"), [
    ("[1, 2]", "event.json: Event: not a MISP event"),
    ('{"Event": {"Attribute": []}}', "event.json: Event.info/Attribute/Object: not a MISP event"),
    ('{"Event": {"info": "x", "Attribute": [], "Object": 0}}', "event.json: Event.info/Attribute/Object: not a MISP event"),
    ('{"Event": {"info": "x", "Attribute": [{"type": "ip-src", "value": "not-an-ip"}]}}',
     "event.json: Event.Attribute[0].value: 'not-an-ip' is not an IP address"),
    ('{"Event": {"info": "x", "Attribute": [{"type": "AS", "value": "ASX", "to_ids": true}]}}',
     "event.json: Event.Attribute[0].value: 'ASX' is not an AS number"),
])
def test_a_malformed_event_is_refused_naming_the_file_and_field(text, names):
    with pytest.raises(IntelError) as caught:
        misp_in.read_event(text, "event.json")
    assert str(caught.value).startswith(names) and "\n" not in str(caught.value)


_value = st.one_of(st.none(), st.integers(), st.text(max_size=20), st.sampled_from(["203.0.113.9", "AS1", "a.b"]))


@settings(max_examples=200, deadline=None)
@given(attributes=st.lists(st.dictionaries(
    st.sampled_from(["type", "value", "category", "to_ids", "uuid", "Tag", "first_seen", "timestamp", "deleted"]),
    st.one_of(_value, st.sampled_from(["ip-src", "AS", "user-agent", "sha256", "Financial fraud"]),
              st.lists(st.fixed_dictionaries({"name": _value}), max_size=2))), max_size=4),
    extra=st.dictionaries(st.sampled_from(["Tag", "date", "timestamp", "uuid", "Object"]), _value, max_size=3))
def test_any_event_is_imported_or_refused_with_an_intel_error_never_a_traceback(attributes, extra):
    text = json.dumps({"Event": {"info": "x", "Attribute": attributes, **extra}})
    try:
        misp_in.read_event(text, "event.json")
    except IntelError as e:
        assert str(e).startswith("event.json") and "\n" not in str(e)
