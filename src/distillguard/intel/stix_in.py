"""STIX 2.1 bundles in: indicators whose pattern names values distillguard can match.

A pattern is parsed with the ``stix2`` library's pattern visitor (over the OASIS stix2-patterns
grammar), never with regular expressions. Only patterns that are a disjunction (OR) of
equalities (``=``, and ``ISSUBSET`` for address ranges) are taken, one row per value: each term
alone suffices, so a term whose path is unknown is dropped without loosening the rest. A
conjunction (AND), a negation, ``LIKE``/``MATCHES``, a qualifier (REPEATS, WITHIN) or a
FOLLOWEDBY asks more than one value can show; such an indicator is counted as skipped, never
matched looser than its producer meant.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from stix2 import patterns as p
from stix2.pattern_visitor import create_pattern_object

from distillguard.intel.indicators import (
    TLP_ORDER,
    UNMARKED_TLP,
    Indicator,
    IntelError,
    normalise,
)

#: TLP 2.0 level -> the fixed id of its marking-definition object (OASIS cti-stix-common-objects,
#: extension-definition-specifications/tlp-2.0/, commit 24f80135d9b1fc1485d17d39aea1a38d010249cb)
TLP2_IDS = {
    "clear": "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
    "green": "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
    "amber": "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
    "amber+strict": "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
    "red": "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
}
#: the TLP 1.0 marking definitions the STIX 2.1 specification itself fixes (section 7.2.1.4)
TLP1_IDS = {
    "clear": "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9",
    "green": "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da",
    "amber": "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82",
    "red": "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed",
}
_LEVEL_OF_ID = {v: k for k, v in (*TLP1_IDS.items(), *TLP2_IDS.items())}

#: (object type, property path) -> indicator type; an ``x-`` object's ``user_agent`` or
#: ``fingerprint`` path is matched by its last component (custom objects name them freely)
PATHS = {
    ("ipv4-addr", ("value",)): "network",
    ("ipv6-addr", ("value",)): "network",
    ("autonomous-system", ("number",)): "autonomous-system",
    ("domain-name", ("value",)): "email-domain",
    ("email-addr", ("value",)): "email-fingerprint",  # stored as the address's fingerprint (normalise)
    ("network-traffic", ("extensions", "http-request-ext", "request_header", "User-Agent")): "user-agent",
}
#: (read with ``_`` as ``-``)
CUSTOM_PATHS = {"user-agent": "user-agent", "fingerprint": "payment-fingerprint",
                "payment-fingerprint": "payment-fingerprint"}
#: words in a custom object's type that say its fingerprint is a payment method's
PAYMENT_WORDS = ("pay", "card")


def _path_type(path: p.ObjectPath) -> str | None:
    obj = path.object_type_name
    parts = tuple(str(getattr(c, "property_name", "")).strip("'") for c in path.property_path)
    if (obj, parts) in PATHS:
        return PATHS[(obj, parts)]
    if obj.startswith("x-") and parts:
        kind = CUSTOM_PATHS.get(parts[-1].replace("_", "-"))
        # a fingerprint is a payment method's only on an object that says so
        return kind if kind != "payment-fingerprint" or any(w in obj for w in PAYMENT_WORDS) else None
    return None


def pattern_values(pattern: str) -> list[tuple[str, str]] | None:
    """(indicator type, raw value) for each matchable term of ``pattern``; None when the pattern
    is not a disjunction of equalities (see the module's docstring). ValueError when it does
    not parse."""
    tree = create_pattern_object(pattern, version="2.1")
    terms: list[Any] = []

    def disjuncts(node: Any) -> bool:
        if isinstance(node, (p.OrObservationExpression, p.OrBooleanExpression)):
            return all(disjuncts(o) for o in node.operands)
        if type(node) is p.ObservationExpression:
            return disjuncts(node.operand)
        if isinstance(node, (p.EqualityComparisonExpression, p.IsSubsetComparisonExpression)) and not node.negated:
            terms.append(node)
            return True
        return False

    if not disjuncts(tree):
        return None
    out = []
    for term in terms:
        kind = _path_type(term.lhs)
        if kind is not None and (kind == "network" or isinstance(term, p.EqualityComparisonExpression)):
            out.append((kind, str(term.rhs.value)))
    return out


def _time(value: Any, where: str) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        stamp = datetime.fromisoformat(str(value))
    except ValueError:
        raise IntelError(f"{where}: {str(value)[:40]!r} is not a STIX timestamp") from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def tlp_of(obj: dict, markings: dict[str, str], where: str) -> str:
    """The TLP level of ``obj`` from its object_marking_refs (the strictest, if several)."""
    refs = obj.get("object_marking_refs") or []
    if not isinstance(refs, list):
        raise IntelError(f"{where}.object_marking_refs: not a list")
    levels = [markings.get(r) or _LEVEL_OF_ID.get(r) for r in refs if isinstance(r, str)]
    levels = [lv for lv in levels if lv]
    return max(levels, key=TLP_ORDER.index) if levels else UNMARKED_TLP


def _marking_levels(objects: list) -> dict[str, str]:
    """marking-definition id -> TLP level, for the bundle's own TLP definitions (1.0 or 2.0)."""
    out = {}
    for obj in objects:
        if not isinstance(obj, dict) or obj.get("type") != "marking-definition":
            continue
        level = None
        for ext in (obj.get("extensions") or {}).values():
            if isinstance(ext, dict) and isinstance(ext.get("tlp_2_0"), str):
                level = ext["tlp_2_0"].lower()
        definition = obj.get("definition")
        if obj.get("definition_type") == "tlp" and isinstance(definition, dict):
            level = {"white": "clear"}.get(str(definition.get("tlp")).lower(), str(definition.get("tlp")).lower())
        if level in TLP2_IDS and isinstance(obj.get("id"), str):
            out[obj["id"]] = level
    return out


def read_objects(objects: Any, source: str, where: str) -> tuple[list[Indicator], Counter]:
    """The matchable indicators among STIX ``objects`` (a bundle's list), and what was skipped by reason."""
    if not isinstance(objects, list):
        raise IntelError(f"{where}.objects: not a list")
    markings = _marking_levels(objects)
    found: list[Indicator] = []
    skipped: Counter = Counter()
    for n, obj in enumerate(objects):
        at = f"{where}.objects[{n}]"
        if not isinstance(obj, dict):
            raise IntelError(f"{at}: not a JSON object")
        if obj.get("type") != "indicator":
            continue
        if obj.get("pattern_type", "stix") != "stix":
            skipped["pattern_type not stix"] += 1
            continue
        pattern = obj.get("pattern")
        if not isinstance(pattern, str):
            raise IntelError(f"{at}.pattern: missing or not a string")
        try:
            values = pattern_values(pattern)
        except Exception as exc:  # noqa: BLE001 (the grammar's and the visitor's errors come in many classes)
            raise IntelError(f"{at}.pattern: not a STIX 2.1 pattern ({str(exc).splitlines()[0][:120]})") from None
        if values is None:
            skipped["not a disjunction of equalities"] += 1
            continue
        if not values:
            skipped["no value distillguard can match"] += 1
            continue
        confidence = obj.get("confidence")
        if confidence is not None and (not isinstance(confidence, int) or isinstance(confidence, bool)
                                       or not 0 <= confidence <= 100):
            raise IntelError(f"{at}.confidence: {confidence!r} is not an integer 0..100")
        if obj.get("revoked") is True:
            skipped["revoked"] += 1
            continue
        ext_id = obj.get("id") if isinstance(obj.get("id"), str) else None
        name = obj.get("name") if isinstance(obj.get("name"), str) else None
        common = {"source": source, "external_id": ext_id, "confidence": confidence, "name": name,
                  "valid_from": _time(obj.get("valid_from"), f"{at}.valid_from"),
                  "valid_until": _time(obj.get("valid_until"), f"{at}.valid_until"),
                  "tlp": tlp_of(obj, markings, at)}
        for kind, value in values:
            found.append(Indicator(type=kind, value=normalise(kind, value, f"{at}.pattern"), **common))
    return found, skipped


def read_bundle(text: str | bytes, source: str) -> tuple[list[Indicator], Counter]:
    """The indicators of a STIX 2.1 bundle given as JSON text; ``source`` names it in errors."""
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise IntelError(f"{source}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("type") != "bundle":
        raise IntelError(f"{source}: type: not a STIX bundle")
    return read_objects(doc.get("objects", []), source, source)
