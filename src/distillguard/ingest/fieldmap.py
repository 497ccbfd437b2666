"""A user's own field names -> canonical fields (``distillguard ingest --map FILE``).

The file is YAML: canonical field -> where its value is in one input record, either a column
name as written (``customer_ref``, ``"usage.in"``) or a path into nested JSON
(``request.headers.user-agent``, ``messages[-1].content``; a leading ``$.`` is allowed)::

    fields:
      account_id: customer_ref
      prompt: body.messages[-1].content
      client_ip: request.headers.x-forwarded-for

A column of that exact name wins over the path reading of the same text. Mapped values win
over what the format itself found; a path that leads nowhere leaves the field to the format.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, field_validator

from distillguard import yamlfile
from distillguard.errors import UserError
from distillguard.schema import COLUMN_NAMES

_STEP = re.compile(r"([^.\[\]]+)|\[(-?\d+)\]")


class _MapFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fields: dict[str, str]

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, value: dict[str, str]) -> dict[str, str]:
        for name, path in value.items():
            if name not in COLUMN_NAMES:
                raise ValueError(f"unknown canonical field {name!r}; known: {', '.join(COLUMN_NAMES)}")
            if not path.strip():
                raise ValueError(f"{name}: empty source name")
        return value


def _steps(path: str) -> list[str | int] | None:
    """``a.b[0].c`` -> ["a", "b", 0, "c"]; None if the text is not a path."""
    text = path[2:] if path.startswith("$.") else path
    steps: list[str | int] = []
    pos = 0
    while pos < len(text):
        if text[pos] == "." and steps:
            pos += 1
        match = _STEP.match(text, pos)
        if match is None:
            return None
        steps.append(match.group(1) if match.group(1) is not None else int(match.group(2)))
        pos = match.end()
    return steps


class FieldMap:
    """Reads mapped fields out of one record (see the module docstring for the file)."""

    def __init__(self, fields: Mapping[str, str]) -> None:
        self.fields = dict(fields)
        self._paths = {name: _steps(path) for name, path in self.fields.items()}

    @classmethod
    def load(cls, path: str | Path) -> "FieldMap":
        raw = yamlfile.read(path, "field map")
        if not isinstance(raw, dict):
            raise UserError(f"{path}: field map must be a mapping with a 'fields' section")
        if "fields" not in raw:
            raw = {"fields": raw}
        if isinstance(raw.get("fields"), dict):
            unknown = [k for k in raw["fields"] if k not in COLUMN_NAMES]
            if unknown:
                raise UserError(f"{path}: field map fields.{unknown[0]}: unknown canonical field; "
                                f"known: {', '.join(COLUMN_NAMES)}")
        return cls(yamlfile.validated(_MapFile, raw, path, "field map").fields)

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """The mapped fields found in ``obj`` (absent or null ones left out)."""
        out: dict[str, Any] = {}
        for name, source in self.fields.items():
            value = obj[source] if source in obj else _follow(obj, self._paths[name])
            if value is not None:
                out[name] = value
        return out


def _follow(obj: Any, steps: list[str | int] | None) -> Any:
    if not steps:
        return None
    for step in steps:
        if isinstance(step, int) and isinstance(obj, list):
            if not -len(obj) <= step < len(obj):
                return None
            obj = obj[step]
        elif isinstance(step, str) and isinstance(obj, dict):
            if step not in obj:
                return None
            obj = obj[step]
        else:
            return None
    return obj
