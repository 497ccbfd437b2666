"""Input key handling shared by every record shape: flatten nesting, map aliases."""

from __future__ import annotations

from typing import Any

from distillguard.schema import ALIASES, BY_NAME

#: input names that are an alias and also the head of dotted aliases (``email``, ``email.domain``):
#: an object under such a name is read as its fields, a scalar as the alias
PARENTS = frozenset({a.split(".")[0] for a in ALIASES if "." in a} & set(ALIASES))


def flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects become dotted names (``usage.prompt_tokens``), except under the names of
    canonical fields that are not also PARENTS (an object there is the wrong type)."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = prefix + str(key)
        if isinstance(value, dict) and (name not in ALIASES or name in PARENTS):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def canonical_keys(flat: dict[str, Any]) -> dict[str, Any]:
    """Keep known names, mapped to canonical ones; the canonical name beats its aliases."""
    out: dict[str, Any] = {}
    ranks: dict[str, int] = {}
    for name, value in flat.items():
        target = ALIASES.get(name)
        if target is None or value is None:
            continue
        rank = 0 if name == target else 1 + BY_NAME[target].aliases.index(name)
        if target not in ranks or rank < ranks[target]:
            out[target], ranks[target] = value, rank
    return out
