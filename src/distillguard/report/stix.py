"""STIX 2.1 export: a campaign's indicators in the format other providers' tools read.

What is shared is what another provider can match in its own logs: the client addresses and
subnets only this campaign's stopped members used, the user agents, and the prompt-template
fingerprints (sha256 of a normalised four-word framing n-gram or system prompt, computed as
enrich.scaffold_keys and inherit.system_prompt_key do; docs/reports.md says how to compute
them elsewhere). Payment fingerprints are left out: they are opaque to anyone but the issuer.

Objects are built with the ``stix2`` library, so each is checked against the specification
as it is made; tests validate the bundle with the official stix2-validator. Ids are UUIDv5
of the content and every timestamp comes from the scan, so the same scan exports the same
bundle, byte for byte.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import uuid
from datetime import datetime

import stix2

from distillguard.detect.evidence import KINDS
from distillguard.report.document import rows_as_dicts

_NAMESPACE = uuid.UUID("4f0c9d1e-6b7a-5c3e-9d2f-8a1b0c6e7f55")
#: the custom observable type of prompt-template fingerprints in indicator patterns
PROMPT_OBJECT = "x-distillguard-prompt-template"


def _id(kind: str, *parts: str) -> str:
    """A deterministic id in UUIDv4 form (the specification asks v4 of SDOs and SROs): the
    version and variant bits set on the first 16 bytes of a sha256 of the object's kind and content."""
    digest = hashlib.sha256("|".join((str(_NAMESPACE), kind, *parts)).encode()).digest()
    return f"{kind}--{uuid.UUID(bytes=digest[:16], version=4)}"


def _quote(value: str) -> str:
    """A STIX pattern string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ip_object(value: str) -> stix2.v21._Observable | None:
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return None
    text = str(net.network_address) if net.num_addresses == 1 else str(net)
    return stix2.IPv4Address(value=text) if net.version == 4 else stix2.IPv6Address(value=text)


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def campaign_objects(doc: dict, campaign: dict, producer: stix2.Identity) -> list:
    """The STIX objects of one campaign of the report document ``doc``."""
    scan = doc["scan"]
    cid = campaign["campaign_id"]
    s = campaign["sections"]
    summary = rows_as_dicts(s["summary"])[0]
    stamp = _ts(scan["as_of"])
    first, last = _ts(summary["first_seen"] or scan["as_of"]), _ts(summary["last_seen"] or scan["as_of"])
    common = {"created": stamp, "modified": stamp, "created_by_ref": producer.id}
    policy = f"scan {scan['scan_id']}, policy sha256 {scan['policy_sha256']}, distillguard {scan['distillguard_version']}"
    camp = stix2.Campaign(
        id=_id("campaign", scan["scan_id"], cid), name=f"LLM distillation campaign {cid}",
        description=(f"{summary['accounts']:,} accounts sent {summary['exchanges']:,} exchanges and received "
                     f"{summary['output_tokens']:,} output tokens; campaign score {campaign['score']:.3f}, "
                     f"action {campaign['action']} ({policy})."),
        objective="Harvest model outputs to train another model (adversarial distillation).",
        first_seen=first, last_seen=last, **common)
    objects: list = [camp]
    keys = rows_as_dicts(s["indicator_keys"])
    labels = campaign["subnet_labels"]

    # infrastructure: the campaign's exclusive subnets, grouped by hosting label
    by_label: dict[str, list] = {}
    for row in keys:
        if KINDS[row["kind"]].key_form != "range":
            continue
        sco = _ip_object(row["key"])
        if sco is None:
            continue
        label = labels.get(row["key"], {}).get("category") or "unlisted"
        by_label.setdefault(label, []).append((row, sco))
    for label, items in sorted(by_label.items()):
        scos = [sco for _, sco in items]
        objects.extend(scos)
        infra = stix2.Infrastructure(
            id=_id("infrastructure", scan["scan_id"], cid, label), name=f"{cid} client addresses ({label})",
            description=(f"{len(scos):,} subnets used only by stopped members of {cid}; hosting label from "
                         f"public IP lists ('unlisted' = residential, mobile or unlisted networks)."),
            infrastructure_types=["anonymization" if label in ("vpn", "privacy_relay", "unlisted") else "unknown"],
            first_seen=first, last_seen=last, **common)
        objects.append(infra)
        objects.append(stix2.Relationship(id=_id("relationship", infra.id, "uses", camp.id),
                                          relationship_type="uses", source_ref=camp.id, target_ref=infra.id, **common))
        for _, sco in items:
            objects.append(stix2.Relationship(id=_id("relationship", infra.id, "consists-of", sco.id),
                                              relationship_type="consists-of", source_ref=infra.id,
                                              target_ref=sco.id, **common))
        observed = stix2.ObservedData(
            id=_id("observed-data", scan["scan_id"], cid, label), first_observed=first, last_observed=last,
            # how many member accounts were seen on these subnets (docs/reports.md)
            number_observed=max(1, sum(row["holders"] for row, _ in items)),
            object_refs=[sco.id for sco in scos], **common)
        objects.append(observed)

    for row in keys:
        kind, key = row["kind"], row["key"]
        declared = KINDS[kind]
        if declared.stix == "address":
            sco = _ip_object(key)
            if sco is None:
                continue
            pattern = f"[{sco.type}:value = {_quote(sco.value)}]"
            name = f"{declared.wording} {sco.value}"
        elif declared.stix == "user-agent":
            pattern = f"[network-traffic:extensions.'http-request-ext'.request_header.'User-Agent' = {_quote(key)}]"
            name = f"{declared.wording} {key}"
        elif declared.stix == "prompt-template":
            pattern = f"[{PROMPT_OBJECT}:{kind}_sha256 = {_quote(row['key_sha256'])}]"
            name = f"{declared.wording} fingerprint {row['key_sha256'][:16]}"
        else:  # payment and sign-up keys mean nothing outside this provider
            continue
        shown = "" if doc["redaction"]["enabled"] and declared.text else f" Key: {key}."
        indicator = stix2.Indicator(
            id=_id("indicator", scan["scan_id"], cid, kind, key), name=name,
            description=(f"Held by {row['holders']:,} accounts, every one a stopped member of {cid}, in the "
                         f"producer's logs (an address of a shared cloud or proxy may serve others elsewhere: "
                         f"match it together with the campaign's other indicators).{shown}"),
            indicator_types=["malicious-activity"], pattern=pattern, pattern_type="stix",
            valid_from=first, **common, allow_custom=declared.stix == "prompt-template")
        objects.append(indicator)
        objects.append(stix2.Relationship(id=_id("relationship", indicator.id, "indicates", camp.id),
                                          relationship_type="indicates", source_ref=indicator.id,
                                          target_ref=camp.id, **common))
    return objects


#: actions strong enough to share a campaign with others as malicious activity
SHARED_ACTIONS = ("throttle", "fallback", "block")


def bundle(doc: dict, producer_name: str = "distillguard", named: bool = False) -> str:
    """The STIX 2.1 bundle of the campaigns in ``doc``, as JSON text with sorted keys.

    Only campaigns the policy throttles or stops are exported unless the campaign was
    ``named`` by the user: a monitored cluster is a suspicion to look into, not an accusation
    to send to another provider.
    """
    stamp = _ts(doc["scan"]["as_of"])
    producer = stix2.Identity(id=_id("identity", producer_name), name=producer_name, identity_class="organization",
                              created=stamp, modified=stamp)
    objects = [producer]
    shared = [c for c in doc["campaigns"] if named or c["action"] in SHARED_ACTIONS]
    for campaign in shared:
        objects.extend(campaign_objects(doc, campaign, producer))
    seen, unique = set(), []
    for obj in objects:  # an address shared by two campaigns' infrastructure is one object
        if obj.id not in seen:
            seen.add(obj.id)
            unique.append(obj)
    ids = ",".join(c["campaign_id"] for c in shared)
    out = stix2.Bundle(id=_id("bundle", doc["scan"]["scan_id"], ids), objects=unique, allow_custom=True)
    return json.dumps(json.loads(out.serialize()), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
