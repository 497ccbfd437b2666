"""Reading a user's YAML file (policy, gateway settings, keys) into a pydantic model, with the
one-line errors the CLI shows: the file, then what is wrong with it, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from distillguard.errors import UserError

M = TypeVar("M", bound=BaseModel)


def read(path: str | Path, what: str) -> Any:
    """The parsed file; ``what`` names it in errors ("policy", "gateway config")."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{path}: cannot read {what} ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: {what} is not UTF-8 text (byte {exc.start})") from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise UserError(f"{path}: not valid YAML ({where}{exc.problem or exc.context})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    # what the YAML resolver takes for a date but no calendar has (2026-13-45), and nesting
    # deeper than the parser's recursion: the file's fault, not a bug
    except (ValueError, OverflowError, RecursionError) as exc:
        raise UserError(f"{path}: not valid YAML ({type(exc).__name__}: {exc})") from None


def validated(model: type[M], raw: Any, where: str | Path, field_label: str) -> M:
    """``model`` from ``raw``; the first problem as "<where>: <field_label> a.b: message"."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(_field(p) for p in first["loc"]) or "(top level)"
        raise UserError(f"{where}: {field_label} {path}: {first['msg']}") from None


def _field(part: Any) -> str:
    """One step of a field's path as the error line shows it: a key the file spelt oddly (empty,
    with spaces, dots or control characters) quoted and escaped, so that the line stays one line."""
    text = str(part)
    if text and text.isprintable() and not any(c.isspace() or c in ".\"'" for c in text):
        return text
    return json.dumps(text)
