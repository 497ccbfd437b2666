"""MISP export: one MISP event per campaign, as the JSON a MISP instance imports.

The event carries what STIX shares (stix.py), in MISP's attribute types: the exclusive client
addresses and subnets as ``ip-src`` (flagged for IDS), the user agents as ``user-agent``, the
members' autonomous systems as ``AS`` (context, not for IDS: a cloud's ASN serves everyone),
the prompt-template fingerprints and the campaign's summary as ``text``, and the campaign id as
``campaign-id``. It is tagged with the TLP 2.0 level (MISP's ``tlp`` taxonomy) and the
distribution that level allows. Events are built with pymisp's own model, so what is written
is what a MISP instance's API would accept; uuids are derived from the campaign and each
attribute's content and every time comes from the scan, so the same scan exports the same bytes.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime

from pymisp import MISPEvent

from distillguard.detect.evidence import KINDS
from distillguard.report import stix
from distillguard.report.document import rows_as_dicts

_NAMESPACE = uuid.UUID("0b6d2f64-31a8-5e0b-9c57-2f1d7a3e8c41")

#: TLP level -> MISP distribution (0 your organisation, 1 this community, 2 connected
#: communities, 3 all): the widest circle the level lets the event travel to
DISTRIBUTION = {"red": 0, "amber+strict": 0, "amber": 1, "green": 2, "clear": 3}
#: campaign action -> MISP threat level (1 high, 2 medium, 3 low)
THREAT_LEVEL = {"block": 1, "fallback": 2, "throttle": 2, "monitor": 3}


def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "|".join(parts)))


def campaign_event(doc: dict, campaign: dict, producer: str = "distillguard", tlp: str = stix.DEFAULT_TLP,
                   withheld: frozenset[str] = frozenset()) -> MISPEvent:
    """The MISP event of one campaign of the report document ``doc``; no attribute carries a value
    in ``withheld`` (imported indicators whose TLP forbids ``tlp``'s audience, stix.campaign_objects)."""
    stix.tlp_marking(tlp)  # a level MISP's tlp taxonomy and the STIX export both know, or a UserError
    scan = doc["scan"]
    cid = campaign["campaign_id"]
    sections = campaign["sections"]
    summary = rows_as_dicts(sections["summary"])[0]
    stamp = datetime.fromisoformat(scan["as_of"])
    p_corrected = stix.corrected_p_value(campaign)
    certainty = stix.confidence(campaign["score"], p_corrected)

    event = MISPEvent()
    event.uuid = _uuid("event", cid)
    event.info = f"LLM distillation campaign {cid}"
    event.date = stamp.date()
    event.timestamp = stamp
    event.distribution = DISTRIBUTION[tlp]
    event.threat_level_id = THREAT_LEVEL.get(campaign["action"], 4)
    event.analysis = 2  # completed: the scan is over
    event.published = False  # the importing analyst publishes it to their community
    event.add_tag(f"tlp:{tlp}")

    def add(kind: str, value: str, **fields) -> None:
        attribute = event.add_attribute(kind, value, uuid=_uuid("attribute", cid, kind, value), **fields)
        attribute.timestamp = stamp

    tested = "no calibrated test" if p_corrected is None else f"smallest corrected test p-value {p_corrected:.3g}"
    add("campaign-id", cid, comment=f"distillguard campaign of scan {scan['scan_id']}")
    add("text", (f"{summary['accounts']:,} accounts sent {summary['exchanges']:,} exchanges and received "
                 f"{summary['output_tokens']:,} output tokens between {summary['first_seen']} and "
                 f"{summary['last_seen']}; campaign score {campaign['score']:.3f}, {tested}, confidence "
                 f"{certainty}/100, action {campaign['action']} (policy sha256 {scan['policy_sha256']}, "
                 f"{producer} with distillguard {scan['distillguard_version']})."),
        category="Other", comment="campaign summary")
    text_hidden = doc["redaction"]["enabled"]
    for row in rows_as_dicts(sections["indicator_keys"]):
        if row["key"] in withheld:
            continue
        declared = KINDS[row["kind"]]
        held = f"held by {row['holders']:,} accounts, all stopped members of {cid}"
        if declared.stix == "address":
            add("ip-src", row["key"], to_ids=True, comment=f"{declared.wording}, {held}")
        elif declared.stix == "user-agent":
            add("user-agent", row["key"], to_ids=False, comment=held)
        elif declared.stix == "prompt-template":
            add("text", f"{stix.PROMPT_OBJECT}:{row['kind']}_sha256={row['key_sha256']}", category="Other",
                comment=f"{declared.wording} fingerprint (sha256 of the normalised key, docs/reports.md), {held}"
                + ("" if text_hidden and declared.text else f"; key: {row['key']}"))
    for row in rows_as_dicts(sections["asns"]):
        if str(row["asn"]) in withheld:
            continue
        label = campaign["asn_labels"].get(str(row["asn"]), {})
        add("AS", str(row["asn"]), to_ids=False,
            comment=f"autonomous system of {row['accounts']:,} members ({label.get('category', 'not listed')}"
            + (f": {label['entity']}" if label.get("entity") else "") + ")")
    return event


def export(doc: dict, producer: str = "distillguard", named: bool = False, tlp: str = stix.DEFAULT_TLP,
           withheld: frozenset[str] = frozenset()) -> dict[str, str]:
    """campaign id -> its MISP event as JSON text (``{"Event": ...}``, sorted keys), for the
    campaigns STIX would share (stix.SHARED_ACTIONS, or every campaign ``named``)."""
    out = {}
    for campaign in doc["campaigns"]:
        if named or campaign["action"] in stix.SHARED_ACTIONS:
            event = campaign_event(doc, campaign, producer, tlp, withheld)
            text = json.dumps({"Event": json.loads(event.to_json())}, indent=2, sort_keys=True, ensure_ascii=False)
            out[campaign["campaign_id"]] = text + "\n"
    return out
