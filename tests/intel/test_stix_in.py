"""STIX 2.1 bundles in: which patterns become indicators, with their provenance and TLP, and
that any file, however malformed, is imported or refused in one line."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import stix2
from hypothesis import given, settings
from hypothesis import strategies as st

from distillguard.ingest import normalize
from distillguard.intel import stix_in
from distillguard.intel.indicators import IntelError, normalise

T0 = datetime(2026, 4, 1, tzinfo=UTC)


@pytest.mark.parametrize(("pattern", "expected"), [
    ("[ipv4-addr:value = '203.0.113.9']", [("network", "203.0.113.9")]),
    ("[ipv4-addr:value ISSUBSET '203.0.113.0/24']", [("network", "203.0.113.0/24")]),
    ("[ipv6-addr:value = '2001:db8::1'] OR [autonomous-system:number = 64500]",
     [("network", "2001:db8::1"), ("autonomous-system", "64500")]),
    ("[domain-name:value = 'byte81.top' OR email-addr:value = 'ops@byte81.top']",
     [("email-domain", "byte81.top"), ("email-fingerprint", "ops@byte81.top")]),
    ("[network-traffic:extensions.'http-request-ext'.request_header.'User-Agent' = 'harvest/1.0']",
     [("user-agent", "harvest/1.0")]),
    ("[x-acme-payment:fingerprint = 'fp-9']", [("payment-fingerprint", "fp-9")]),
    # a fingerprint on an object that does not say it is a payment method's is not one
    ("[x-acme-file:fingerprint = 'fp-9']", []),
    ("[file:hashes.'SHA-256' = 'aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f']", []),
])
def test_a_disjunction_of_equalities_gives_one_indicator_per_matchable_value(pattern, expected):
    assert stix_in.pattern_values(pattern) == expected


@pytest.mark.parametrize("pattern", [
    "[ipv4-addr:value = '203.0.113.9' AND ipv4-addr:value != '203.0.113.10']",
    "[ipv4-addr:value = '203.0.113.9'] AND [autonomous-system:number = 64500]",
    "[ipv4-addr:value = '203.0.113.9'] REPEATS 5 TIMES",
    "[ipv4-addr:value = '203.0.113.9'] FOLLOWEDBY [ipv4-addr:value = '203.0.113.10']",
    "[email-addr:value LIKE '%@byte81.top']",
    "[ipv4-addr:value NOT = '203.0.113.9']",
])
def test_a_pattern_asking_more_than_one_value_shows_is_never_taken_looser(pattern):
    assert stix_in.pattern_values(pattern) is None


def _bundle(*objects) -> str:
    return stix2.Bundle(*objects, allow_custom=True).serialize()


def test_an_indicator_keeps_source_id_confidence_validity_and_its_strictest_tlp():
    red = stix2.Indicator(pattern="[ipv4-addr:value = '203.0.113.0/24' OR ipv4-addr:value = '198.51.100.4']",
                          pattern_type="stix", valid_from=T0, valid_until=datetime(2026, 7, 1, tzinfo=UTC),
                          confidence=80, name="harvest proxies",
                          object_marking_refs=[stix_in.TLP2_IDS["green"], stix_in.TLP2_IDS["red"]])
    unmarked = stix2.Indicator(pattern="[autonomous-system:number = 64500]", pattern_type="stix", valid_from=T0)
    found, skipped = stix_in.read_bundle(_bundle(red, unmarked), "feed.json")
    assert not skipped
    assert [(i.type, i.value, i.tlp, i.confidence) for i in found] == [
        ("network", "203.0.113.0/24", "red", 80), ("network", "198.51.100.4", "red", 80),
        ("autonomous-system", "64500", "amber", None)]
    assert {i.external_id for i in found[:2]} == {red.id} and found[0].source == "feed.json"
    assert found[0].valid_from == T0 and found[0].valid_until == datetime(2026, 7, 1, tzinfo=UTC)


def test_an_imported_address_is_stored_as_its_ingest_fingerprint_and_never_as_itself():
    mail = stix2.Indicator(pattern="[email-addr:value = ' Ops@Byte81.TOP' OR email-addr:value = '%s']" % ("AB" * 32),
                           pattern_type="stix", valid_from=T0)
    found, _ = stix_in.read_bundle(_bundle(mail), "feed.json")
    assert [(i.type, i.value) for i in found] == [("email-fingerprint", normalize.email_fingerprint("ops@byte81.top")),
                                                  ("email-fingerprint", "ab" * 32)]
    assert not any("@" in i.value or "byte81" in i.value for i in found)


def test_an_email_addr_value_that_is_no_address_is_refused_without_echoing_it():
    mail = stix2.Indicator(pattern="[email-addr:value = 'secret words']", pattern_type="stix", valid_from=T0)
    with pytest.raises(IntelError) as caught:
        stix_in.read_bundle(_bundle(mail), "feed.json")
    assert str(caught.value).startswith("feed.json.objects[0].pattern: neither an e-mail address")
    assert "secret" not in str(caught.value)


@settings(max_examples=300, deadline=None)
@given(value=st.text(max_size=40) | st.emails())
def test_any_email_value_becomes_a_fingerprint_or_one_intel_error_line(value):
    try:
        got = normalise("email-fingerprint", value, "feed.json.objects[0].pattern")
    except IntelError as e:
        assert str(e).startswith("feed.json.objects[0].pattern: ") and "\n" not in str(e)
    else:
        assert got == normalize.email_fingerprint(value) and len(got) == 64 and "@" not in got


def test_tlp_1_markings_and_a_bundles_own_tlp_definition_are_read():
    own = {"type": "marking-definition", "spec_version": "2.1", "id": "marking-definition--" + "1" * 8 + "-1111-4111-8111-" + "1" * 12,
           "created": "2026-01-01T00:00:00Z", "definition_type": "tlp", "definition": {"tlp": "white"}}
    a = stix2.Indicator(pattern="[ipv4-addr:value = '203.0.113.9']", pattern_type="stix", valid_from=T0,
                        object_marking_refs=[stix_in.TLP1_IDS["amber"]])
    b = dict(json.loads(a.serialize()), id="indicator--2b4e8f3a-5a43-4d3f-9a4c-3f8a7f6c2d10", object_marking_refs=[own["id"]])
    doc = {"type": "bundle", "id": "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d", "objects": [json.loads(a.serialize()), b, own]}
    found, _ = stix_in.read_bundle(json.dumps(doc), "feed.json")
    assert [i.tlp for i in found] == ["amber", "clear"]


def test_what_is_not_taken_is_counted_by_reason():
    objects = [stix2.Indicator(pattern=p, pattern_type="stix", valid_from=T0) for p in (
        "[ipv4-addr:value = '203.0.113.9'] AND [autonomous-system:number = 64500]",
        "[file:name = 'x.exe']")]
    objects.append(stix2.Indicator(pattern="alert tcp any any -> any any", pattern_type="snort", valid_from=T0))
    objects.append(stix2.Indicator(pattern="[ipv4-addr:value = '203.0.113.9']", pattern_type="stix",
                                   valid_from=T0, revoked=True))
    found, skipped = stix_in.read_bundle(_bundle(*objects), "feed.json")
    assert found == [] and skipped == {"not a disjunction of equalities": 1, "no value distillguard can match": 1,
                                       "pattern_type not stix": 1, "revoked": 1}


@pytest.mark.parametrize(("text", "names"), [
    ("not json", "feed.json: not JSON"),
    ('{"type": "report"}', "feed.json: type: not a STIX bundle"),
    ('{"type": "bundle", "objects": {}}', "feed.json.objects: not a list"),
    ('{"type": "bundle", "objects": [{"type": "indicator", "pattern": "[ipv4-addr:value = ]"}]}',
     "feed.json.objects[0].pattern: not a STIX 2.1 pattern"),
    ('{"type": "bundle", "objects": [{"type": "indicator", "pattern": "[ipv4-addr:value = \'x\']"}]}',
     "feed.json.objects[0].pattern: 'x' is not an IP address"),
    (('{"type": "bundle", "objects": [{"type": "indicator", "confidence": 300, '
      '"pattern": "[ipv4-addr:value = \'203.0.113.9\']"}]}'), "feed.json.objects[0].confidence"),
    (('{"type": "bundle", "objects": [{"type": "indicator", "valid_from": "yesterday", '
      '"pattern": "[ipv4-addr:value = \'203.0.113.9\']"}]}'), "feed.json.objects[0].valid_from"),
])
def test_a_malformed_bundle_is_refused_naming_the_file_and_field(text, names):
    with pytest.raises(IntelError) as caught:
        stix_in.read_bundle(text, "feed.json")
    assert str(caught.value).startswith(names) and "\n" not in str(caught.value)


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                     max_leaves=20)
_patternish = st.lists(st.sampled_from(["[", "]", "ipv4-addr:value", "autonomous-system:number", " = ", " OR ",
                                        " AND ", "'203.0.113.9'", "'x'", "64500", " ISSUBSET ", "'10.0.0.0/8'",
                                        "x-pay:fingerprint", " REPEATS 2 TIMES", "'"]), max_size=12).map("".join)


@settings(max_examples=300, deadline=None)
@given(objects=st.lists(st.fixed_dictionaries({"type": st.just("indicator")}, optional={
    "pattern": _patternish | st.text(max_size=30), "confidence": _json, "valid_from": _json,
    "valid_until": _json, "object_marking_refs": _json, "pattern_type": st.sampled_from(["stix", "snort"]),
    "id": _json, "name": _json, "revoked": _json}) | _json, max_size=4))
def test_any_bundle_is_imported_or_refused_with_an_intel_error_never_a_traceback(objects):
    try:
        found, _ = stix_in.read_bundle(json.dumps({"type": "bundle", "objects": objects}), "feed.json")
    except IntelError as e:
        assert str(e).startswith("feed.json") and "\n" not in str(e)
    else:
        assert all(i.type in ("network", "autonomous-system", "payment-fingerprint") for i in found)
