"""MISP events in: the attributes distillguard can match, loaded with pymisp's own model.

Attribute types taken: ``ip-src``/``ip-dst`` (an address or CIDR range), ``AS``, ``domain`` (an
e-mail domain), ``email-src`` and ``email`` (stored as the address's fingerprint, as ingest keeps it, never the
address; its domain is not taken: one sender at a webmail domain says nothing of the domain's
other users), ``user-agent``, and ``hex`` values (or hashes) filed under the ``Financial fraud`` category,
which is where MISP puts payment data (a ``sha256`` elsewhere is a file's hash). TLP comes
from the event's and the attribute's ``tlp:`` tags (the strictest); confidence from an
``admiralty-scale`` or ``misp:confidence-level`` tag where present, else the event's threat
level is not read as confidence and it stays empty. An attribute marked ``deleted`` or with
``to_ids`` false is context, not an indicator, and is skipped: MISP's defaults leave ``AS`` and
``user-agent`` attributes out of detection unless their producer says otherwise.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from pymisp import MISPEvent

from distillguard.intel.indicators import (
    TLP_ORDER,
    UNMARKED_TLP,
    Indicator,
    IntelError,
    normalise,
)

#: MISP attribute type -> indicator type
TYPES = {"ip-src": "network", "ip-dst": "network", "AS": "autonomous-system", "domain": "email-domain",
         "email-src": "email-fingerprint", "email": "email-fingerprint", "user-agent": "user-agent"}
#: MISP's Financial fraud category takes ``hex`` (not the file-hash types) for an opaque fingerprint
HASH_TYPES = ("hex", "sha256", "sha1", "md5", "sha512")
PAYMENT_CATEGORY = "Financial fraud"
#: MISP confidence tags -> 0..100 (the misp taxonomy's confidence-level, admiralty-scale's credibility)
_CONFIDENCE_TAGS = {
    'misp:confidence-level="completely-confident"': 100, 'misp:confidence-level="usually-confident"': 75,
    'misp:confidence-level="fairly-confident"': 50, 'misp:confidence-level="rarely-confident"': 25,
    'misp:confidence-level="unconfident"': 0,
    'admiralty-scale:information-credibility="1"': 90, 'admiralty-scale:information-credibility="2"': 70,
    'admiralty-scale:information-credibility="3"': 50, 'admiralty-scale:information-credibility="4"': 30,
    'admiralty-scale:information-credibility="5"': 10,
}
_TLP_TAGS = {"tlp:white": "clear", "tlp:clear": "clear", "tlp:green": "green", "tlp:amber": "amber",
             "tlp:amber+strict": "amber+strict", "tlp:red": "red"}


def _tags(obj: Any) -> list[str]:
    """The names of ``obj``'s tags (``tlp:`` ones in lower case); a tag without a name is none."""
    names = [str(getattr(t, "name", "")).strip() for t in getattr(obj, "tags", []) or []]
    return [n.lower() if n.lower().startswith("tlp:") else n for n in names if n]


def _tlp(tags: list[str]) -> str | None:
    levels = [_TLP_TAGS[t] for t in tags if t in _TLP_TAGS]
    return max(levels, key=TLP_ORDER.index) if levels else None


def _confidence(tags: list[str]) -> int | None:
    found = [_CONFIDENCE_TAGS[t] for t in tags if t in _CONFIDENCE_TAGS]
    return min(found) if found else None


def _stamp(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None


def read_event(text: str | bytes, source: str) -> tuple[list[Indicator], Counter]:
    """The indicators of one MISP event (``{"Event": ...}`` or the bare event) given as JSON text."""
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise IntelError(f"{source}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("Event", doc), dict):
        raise IntelError(f"{source}: Event: not a MISP event")
    body = doc.get("Event", doc)
    if (not isinstance(body.get("Attribute", []), list) or not isinstance(body.get("Object", []), list)
            or "info" not in body):
        raise IntelError(f"{source}: Event.info/Attribute/Object: not a MISP event")
    event = MISPEvent()
    try:
        event.from_dict(**doc)
    except Exception as exc:  # noqa: BLE001 (pymisp raises its own, KeyError, ValueError, TypeError)
        raise IntelError(f"{source}: Event: pymisp cannot load it ({str(exc).splitlines()[0][:120]})") from None
    event_tags = _tags(event)
    found: list[Indicator] = []
    skipped: Counter = Counter()
    attributes = list(event.attributes) + [a for o in event.objects for a in o.attributes]
    for n, attribute in enumerate(attributes):
        where = f"{source}: Event.Attribute[{n}]"
        kind = TYPES.get(attribute.type)
        if kind is None and attribute.type in HASH_TYPES and attribute.category == PAYMENT_CATEGORY:
            kind = "payment-fingerprint"
        if kind is None:
            skipped[f"type {attribute.type}"] += 1
            continue
        if getattr(attribute, "deleted", False) or not getattr(attribute, "to_ids", True):
            skipped["not for detection (to_ids false or deleted)"] += 1
            continue
        tags = _tags(attribute) + event_tags
        value = str(attribute.value)
        common = {"source": source,
                  "external_id": str(attribute.uuid) if getattr(attribute, "uuid", None) else None,
                  "confidence": _confidence(tags), "tlp": _tlp(tags) or UNMARKED_TLP,
                  # MISP has no validity window: an attribute applies from when it was first seen
                  "valid_from": _stamp(getattr(attribute, "first_seen", None))
                  or _stamp(getattr(attribute, "timestamp", None)),
                  "name": getattr(event, "info", None)}
        found.append(Indicator(type=kind, value=normalise(kind, value, f"{where}.value"), **common))
    return found, skipped
