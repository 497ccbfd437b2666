"""Reading a user's YAML file (policy, gateway settings, keys) into a pydantic model, with the
one-line errors the CLI shows: the file, then what is wrong with it, never a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from distillguard.errors import UserError

M = TypeVar("M", bound=BaseModel)


def read(path: str | Path, what: str) -> Any:
    """The parsed file; ``what`` names it in errors ("policy", "gateway config")."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise UserError(f"{path}: cannot read {what} ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({exc})") from None


def validated(model: type[M], raw: Any, where: str | Path, field_label: str) -> M:
    """``model`` from ``raw``; the first problem as "<where>: <field_label> a.b: message"."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise UserError(f"{where}: {field_label} {path}: {first['msg']}") from None
