"""Parameter domains declared as data and checked in one place (scikit-learn style)."""

from __future__ import annotations

from typing import Any, Mapping

from distillguard.errors import UserError


def check_parameters(params: Mapping[str, Any], domains: Mapping[str, tuple[float, float]]) -> None:
    """Raise UserError naming the first parameter outside its declared ``(lowest, highest)``."""
    for name, (low, high) in domains.items():
        value = params[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise UserError(f"{name} must be between {low} and {high}, got {value!r}")
