"""The MISP export, read back with pymisp's own model: what a MISP instance would import."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest
from pymisp import MISPEvent

from distillguard.report import misp, stix, write_report
from distillguard.store import Store


@pytest.fixture(scope="module")
def events(intel_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("misp")
    with Store(intel_store, read_only=True) as store:
        written = write_report(store, out, "misp", tlp="green")
        actions = dict(store.con.execute("SELECT campaign_id, action FROM campaigns").fetchall())
        indicators = store.con.execute("SELECT campaign_id, kind, key FROM indicators").fetchall()
    return written, actions, indicators


@pytest.mark.slow
def test_one_event_per_shared_campaign_loads_into_pymisps_model(events):
    written, actions, _ = events
    shared = {c for c, a in actions.items() if a in stix.SHARED_ACTIONS}
    assert shared and {p.name.removesuffix(".misp.json") for p in written} == shared
    for path in written:
        event = MISPEvent()
        event.load(path.read_text())
        cid = path.name.removesuffix(".misp.json")
        assert event.info == f"LLM distillation campaign {cid}"
        assert [t.name for t in event.tags] == ["tlp:green"]
        assert event.distribution == misp.DISTRIBUTION["green"]
        assert event.threat_level_id == misp.THREAT_LEVEL[actions[cid]]


@pytest.mark.slow
def test_the_event_holds_the_campaigns_exclusive_addresses_and_its_members_asns(events, intel_store):
    written, _, indicators = events
    event = MISPEvent()
    event.load(written[0].read_text())
    cid = written[0].name.removesuffix(".misp.json")
    by_type: dict[str, set] = {}
    for attribute in event.attributes:
        by_type.setdefault(attribute.type, set()).add(attribute.value)
    assert by_type["campaign-id"] == {cid}
    # the addresses are the campaign's exclusive ones the store holds (none where a blocked and a
    # monitored member share every address: such an address is no indicator)
    addresses = {key for c, kind, key in indicators if c == cid and kind in ("ip", "subnet")}
    assert by_type.get("ip-src", set()) == addresses
    assert all(a.to_ids for a in event.attributes if a.type == "ip-src")
    templates = {f"{stix.PROMPT_OBJECT}:{kind}_sha256={hashlib.sha256(key.encode()).hexdigest()}"
                 for c, kind, key in indicators if c == cid and kind in ("scaffold", "system_prompt")}
    assert templates and {v for v in by_type["text"] if v.startswith(f"{stix.PROMPT_OBJECT}:")} == templates
    with Store(intel_store, read_only=True) as store:
        member_asns = {str(asn) for (asn,) in store.con.execute(
            "SELECT DISTINCT client_asn FROM exchanges WHERE client_asn IS NOT NULL AND account_id IN "
            "(SELECT account_id FROM verdicts WHERE campaign_id = ?)", [cid]).fetchall()}
    assert by_type["AS"] and by_type["AS"] <= member_asns
    assert not any(a.to_ids for a in event.attributes if a.type == "AS")


@pytest.mark.slow
def test_an_exported_event_round_trips_through_pymisp_unchanged(events):
    written, _, _ = events
    exported = json.loads(written[0].read_text())
    event = MISPEvent()
    event.from_dict(**copy.deepcopy(exported))  # from_dict consumes the dict it is given
    assert json.loads(event.to_json()) == exported["Event"]
    again = MISPEvent()
    again.load(event.to_json())
    assert again.uuid == event.uuid and len(again.attributes) == len(event.attributes)


@pytest.mark.slow
def test_exporting_twice_gives_the_same_bytes(intel_store, events, tmp_path):
    written, _, _ = events
    with Store(intel_store, read_only=True) as store:
        again = write_report(store, tmp_path, "misp", tlp="green")
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in written]
