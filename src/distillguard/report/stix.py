"""STIX 2.1 export: a campaign's indicators in the format other providers' tools read.

What is shared is what another provider can match in its own logs: the client addresses and
subnets only this campaign's stopped members used, the user agents, and the prompt-template
fingerprints (sha256 of a normalised four-word framing n-gram or system prompt, computed as
enrich.scaffold_keys and inherit.system_prompt_key do; docs/reports.md says how to compute
them elsewhere). Payment fingerprints are left out: they are opaque to anyone but the issuer.

Objects are built with the ``stix2`` library, so each is checked against the specification
as it is made; tests validate the bundle with the official stix2-validator. Every object
carries the TLP 2.0 marking chosen (the marking-definition objects OASIS publishes, with their
fixed ids), a campaign's ``confidence`` follows from its score and the corrected p-values of
the tests that accepted its members (:func:`confidence`), and ids are derived from what an
object is (a campaign from its id, an indicator from its campaign and pattern), so the same
campaign exports the same ids whenever it is exported. Every timestamp comes from the store: a
campaign's objects were ``created`` by the scan that first found the campaign's id (its lineage,
detect/lineage.py), so that ``created`` stays the same in every version, and ``modified`` by the
scan exported.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import re
import uuid
from datetime import datetime, timedelta

import stix2

from distillguard.detect.evidence import KINDS
from distillguard.errors import UserError
from distillguard.intel import stix_in
from distillguard.report.document import rows_as_dicts

_NAMESPACE = uuid.UUID("4f0c9d1e-6b7a-5c3e-9d2f-8a1b0c6e7f55")
#: the custom observable type of prompt-template fingerprints in indicator patterns
PROMPT_OBJECT = "x-distillguard-prompt-template"

#: the extension that defines TLP 2.0 markings for STIX 2.1 (OASIS cti-stix-common-objects,
#: extension-definition-specifications/tlp-2.0/, commit 24f80135d9b1fc1485d17d39aea1a38d010249cb)
TLP2_EXTENSION = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d"
#: TLP 2.0 level -> the fixed id of its marking-definition object (declared where imports read them)
TLP2_IDS = stix_in.TLP2_IDS
TLP_LEVELS = tuple(TLP2_IDS)
DEFAULT_TLP = "amber"
#: how long after the scan an indicator stays valid: addresses and user agents of a campaign
#: are rented and rotated, so a consumer should not match them forever
DEFAULT_VALID_DAYS = 90
#: the highest confidence the statistical tests alone can give: a corrected p-value bounds the
#: chance that the members' shared keys are a coincidence, not the intent behind them
TEST_CONFIDENCE_CAP = 95
#: how blocks.Block.reason and cohorts.Cohort.reason state a test's p-value corrected for looks
_CORRECTED_P = re.compile(r"corrected for looks p=([0-9]+(?:\.[0-9]*)?(?:e[-+]?[0-9]+)?)")


def tlp_marking(level: str) -> stix2.MarkingDefinition:
    """The TLP 2.0 marking-definition object of ``level``, exactly as OASIS publishes it."""
    if level not in TLP2_IDS:
        raise UserError(f"--tlp must be one of {', '.join(TLP_LEVELS)}, got {level!r}")
    return stix2.MarkingDefinition(
        id=TLP2_IDS[level], created="2022-10-01T00:00:00.000Z", name=f"TLP:{level.upper()}",
        extensions={TLP2_EXTENSION: {"extension_type": "property-extension", "tlp_2_0": level}})


def _id(kind: str, *parts: str) -> str:
    """A deterministic id in UUIDv4 form (the specification asks v4 of SDOs and SROs, and the
    official validator's strict mode rejects a v5 one): name-based like a UUIDv5, the version and
    variant bits set on the first 16 bytes of a sha256 of the object's kind and identifying content."""
    digest = hashlib.sha256("|".join((str(_NAMESPACE), kind, *parts)).encode()).digest()
    return f"{kind}--{uuid.UUID(bytes=digest[:16], version=4)}"


def corrected_p_value(campaign: dict) -> float | None:
    """The smallest p-value, corrected for looks, of the calibrated tests (BiCM blocks, arrival
    cohorts) that accepted members of ``campaign``; None when no test accepted any."""
    found = [float(m) for row in rows_as_dicts(campaign["sections"]["members"])
             for m in _CORRECTED_P.findall(row.get("own_reasons") or "")]
    return min(found) if found else None


def confidence(score: float, p_corrected: float | None) -> int:
    """STIX ``confidence`` (0..100) of a campaign: 100 x its score (0..1, higher = more like an
    operation), raised to 100 x (1 - p) when a calibrated test accepted its members at corrected
    p-value p, that part capped at TEST_CONFIDENCE_CAP. docs/reports.md has the table."""
    by_score = round(100 * min(1.0, max(0.0, score)))
    if p_corrected is None:
        return by_score
    by_test = min(TEST_CONFIDENCE_CAP, math.floor(100 * (1.0 - min(1.0, max(0.0, p_corrected)))))
    return max(by_score, by_test)


def _quote(value: str) -> str:
    """A STIX pattern string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ip_object(value: str, marking: str) -> stix2.v21._Observable | None:
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return None
    text = str(net.network_address) if net.num_addresses == 1 else str(net)
    kind = stix2.IPv4Address if net.version == 4 else stix2.IPv6Address
    return kind(value=text, object_marking_refs=[marking])


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def campaign_objects(doc: dict, campaign: dict, producer: stix2.Identity, marking: str = TLP2_IDS[DEFAULT_TLP],
                     valid_days: int = DEFAULT_VALID_DAYS, withheld: frozenset[str] = frozenset()) -> list:
    """The STIX objects of one campaign of the report document ``doc``, each marked ``marking``
    (a marking-definition id); indicators are valid until ``valid_days`` after the scan. A key in
    ``withheld`` (an imported indicator's value whose TLP forbids this marking's audience,
    intel.indicators.withheld) is left out, whatever else found it."""
    scan = doc["scan"]
    cid = campaign["campaign_id"]
    s = campaign["sections"]
    summary = rows_as_dicts(s["summary"])[0]
    stamp = _ts(scan["as_of"])
    first, last = _ts(summary["first_seen"] or scan["as_of"]), _ts(summary["last_seen"] or scan["as_of"])
    # the scan that first found the campaign (a scan stored before lineage existed has none: its own)
    lineage = rows_as_dicts(s["lineage"])[0] if s.get("lineage", {}).get("rows") else {}
    created = min(stamp, _ts(lineage.get("first_scan") or scan["as_of"]))
    common = {"created": created, "modified": stamp, "created_by_ref": producer.id, "object_marking_refs": [marking]}
    p_corrected = corrected_p_value(campaign)
    certainty = confidence(campaign["score"], p_corrected)
    tested = "no calibrated test" if p_corrected is None else f"smallest corrected test p-value {p_corrected:.3g}"
    policy = f"scan {scan['scan_id']}, policy sha256 {scan['policy_sha256']}, distillguard {scan['distillguard_version']}"
    camp = stix2.Campaign(
        id=_id("campaign", cid), name=f"LLM distillation campaign {cid}",
        description=(f"{summary['accounts']:,} accounts sent {summary['exchanges']:,} exchanges and received "
                     f"{summary['output_tokens']:,} output tokens; campaign score {campaign['score']:.3f}, "
                     f"{tested}, action {campaign['action']} ({policy})."),
        objective="Harvest model outputs to train another model (adversarial distillation).",
        first_seen=first, last_seen=last, confidence=certainty, **common)
    objects: list = [camp]
    keys = [row for row in rows_as_dicts(s["indicator_keys"]) if row["key"] not in withheld]
    labels = campaign["subnet_labels"]

    # infrastructure: the campaign's exclusive subnets, grouped by hosting label
    by_label: dict[str, list] = {}
    for row in keys:
        if KINDS[row["kind"]].key_form != "range":
            continue
        sco = _ip_object(row["key"], marking)
        if sco is None:
            continue
        label = labels.get(row["key"], {}).get("category") or "unlisted"
        by_label.setdefault(label, []).append((row, sco))
    for label, items in sorted(by_label.items()):
        scos = [sco for _, sco in items]
        objects.extend(scos)
        infra = stix2.Infrastructure(
            id=_id("infrastructure", cid, label), name=f"{cid} client addresses ({label})",
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
            id=_id("observed-data", cid, label), first_observed=first, last_observed=last,
            # how many member accounts were seen on these subnets (docs/reports.md)
            number_observed=max(1, sum(row["holders"] for row, _ in items)),
            object_refs=[sco.id for sco in scos], **common)
        objects.append(observed)

    for row in keys:
        kind, key = row["kind"], row["key"]
        declared = KINDS[kind]
        if declared.stix == "address":
            sco = _ip_object(key, marking)
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
            id=_id("indicator", cid, pattern), name=name,
            description=(f"Held by {row['holders']:,} accounts, every one a stopped member of {cid}, in the "
                         f"producer's logs (an address of a shared cloud or proxy may serve others elsewhere: "
                         f"match it together with the campaign's other indicators).{shown}"),
            indicator_types=["malicious-activity"], pattern=pattern, pattern_type="stix",
            valid_from=first, valid_until=max(stamp, first) + timedelta(days=valid_days), confidence=certainty,
            **common, allow_custom=declared.stix == "prompt-template")
        objects.append(indicator)
        objects.append(stix2.Relationship(id=_id("relationship", indicator.id, "indicates", camp.id),
                                          relationship_type="indicates", source_ref=indicator.id,
                                          target_ref=camp.id, **common))
    return objects


def actor_objects(actors: list[dict], exported: set[str], producer: stix2.Identity, marking: str,
                  stamp: datetime) -> list:
    """An intrusion-set per actor (intel.actors) with a campaign in ``exported``, and an
    ``attributed-to`` relationship from each such campaign, describing the test that linked it."""
    out: list = []
    for actor in actors:
        mine = [c for c in actor["campaigns"] if c in exported]
        if not mine:
            continue
        first = _ts(actor["first_seen"]) if actor["first_seen"] else stamp
        last = max(first, _ts(actor["last_seen"]) if actor["last_seen"] else stamp)
        common = {"created_by_ref": producer.id, "object_marking_refs": [marking], "created": min(first, stamp),
                  "modified": stamp}
        intrusion = stix2.IntrusionSet(
            id=_id("intrusion-set", actor["actor_id"]), name=f"LLM distillation actor {actor['actor_id']}",
            description=(f"{len(actor['campaigns'])} campaigns ({', '.join(actor['campaigns'])}) whose members share "
                         f"more keys than their sizes and the keys' popularity predict; {actor['members']:,} "
                         f"accounts, {actor['exchanges']:,} exchanges."),
            first_seen=first, last_seen=last, confidence=actor["confidence"], **common)
        out.append(intrusion)
        for cid in mine:
            tests = [k for k in actor["links"] if cid in (k["a"], k["b"])]
            said = "; ".join(f"with {k['b'] if k['a'] == cid else k['a']}: {k['shared_keys']} shared keys "
                             f"({', '.join(f'{n} {kind}' for kind, n in k['by_kind'].items())}) against "
                             f"{k['expected']:.3g} expected, corrected p={k['p_corrected']:.3g}" for k in tests)
            source = _id("campaign", cid)
            out.append(stix2.Relationship(
                id=_id("relationship", source, "attributed-to", intrusion.id), relationship_type="attributed-to",
                source_ref=source, target_ref=intrusion.id, description=said or "linked through other campaigns",
                **common))
    return out


#: actions strong enough to share a campaign with others as malicious activity
SHARED_ACTIONS = ("throttle", "fallback", "block")


def bundle_objects(doc: dict, producer_name: str = "distillguard", named: bool = False, tlp: str = DEFAULT_TLP,
                   valid_days: int = DEFAULT_VALID_DAYS, withheld: frozenset[str] = frozenset(),
                   actors: list[dict] = ()) -> list:
    """The STIX objects of the campaigns in ``doc`` (each once), the TLP marking definition first.

    Only campaigns the policy throttles or stops are exported unless the campaign was
    ``named`` by the user: a monitored cluster is a suspicion to look into, not an accusation
    to send to another provider. ``withheld``: values no object may carry (campaign_objects).
    ``actors`` (intel.actors.stored): each actor with an exported campaign is an intrusion-set,
    and each of its exported campaigns is ``attributed-to`` it, with the link's test.
    """
    if valid_days < 1:
        raise UserError(f"--valid-days must be at least 1, got {valid_days}")
    marking = tlp_marking(tlp)
    stamp = _ts(doc["scan"]["as_of"])
    producer = stix2.Identity(id=_id("identity", producer_name), name=producer_name, identity_class="organization",
                              created=stamp, modified=stamp, object_marking_refs=[marking.id])
    objects = [marking, producer]
    shared = [c for c in doc["campaigns"] if named or c["action"] in SHARED_ACTIONS]
    for campaign in shared:
        objects.extend(campaign_objects(doc, campaign, producer, marking.id, valid_days, withheld))
    objects.extend(actor_objects(actors, {c["campaign_id"] for c in shared}, producer, marking.id, stamp))
    seen, unique = set(), []
    for obj in objects:  # an address shared by two campaigns' infrastructure is one object
        if obj.id not in seen:
            seen.add(obj.id)
            unique.append(obj)
    return unique


def bundle(doc: dict, producer_name: str = "distillguard", named: bool = False, tlp: str = DEFAULT_TLP,
           valid_days: int = DEFAULT_VALID_DAYS, withheld: frozenset[str] = frozenset(),
           actors: list[dict] = ()) -> str:
    """The STIX 2.1 bundle of the campaigns in ``doc`` (see bundle_objects), as JSON text with sorted keys."""
    objects = bundle_objects(doc, producer_name, named, tlp, valid_days, withheld, actors)
    ids = ",".join(o.id for o in objects if o.type == "campaign")
    out = stix2.Bundle(id=_id("bundle", doc["scan"]["scan_id"], ids, tlp), objects=objects, allow_custom=True)
    return json.dumps(json.loads(out.serialize()), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
