"""Checking the fields of an admin request, whoever sends it (JSON body, CLI flags).

Each check names the field first (`priority: must be between 0 and 1000`), so every caller
shows the same message for the same mistake.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from ..errors import InvalidInput

Fields = Mapping[str, object]


def reject_unknown(data: Fields, allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise InvalidInput(f"{unknown[0]}: unknown field (allowed: {', '.join(sorted(allowed))})")


def required_string(data: Fields, name: str) -> str:
    value = data.get(name)
    if value is None:
        raise InvalidInput(f"{name}: required")
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{name}: must be a non-empty string")
    return value


def optional_string(data: Fields, name: str, default: str = "") -> str:
    value = data.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise InvalidInput(f"{name}: must be a string")
    return value


def integer(data: Fields, name: str, default: int | None, low: int, high: int) -> int | None:
    value = data.get(name, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(f"{name}: must be an integer")
    if not low <= value <= high:
        raise InvalidInput(f"{name}: must be between {low} and {high}")
    return value


def positive_number(data: Fields, name: str) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise InvalidInput(f"{name}: must be a number above 0")
    return float(value)


def boolean(data: Fields, name: str, default: bool = False) -> bool:
    value = data.get(name, default)
    if not isinstance(value, bool):
        raise InvalidInput(f"{name}: must be true or false")
    return value


def model_list(data: Fields, name: str) -> list[str] | None:
    """None (the field absent or null) means every model; an empty list is refused, since
    "no models" and "all models" must not be one typo apart."""
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise InvalidInput(f"{name}: must be a list of model names")
    if not value:
        raise InvalidInput(f"{name}: must name at least one model (leave it out for all models)")
    return [v.strip() for v in value]


def tier(data: Fields, known: Collection[str]) -> str | None:
    """A rate-limit tier name from `rate_limits.tiers`; None (absent) means the default limits."""
    value = data.get("tier")
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("tier: must be a tier name")
    if value not in known:
        if not known:
            raise InvalidInput(f"tier: no tier '{value}': no tiers are configured (rate_limits.tiers)")
        raise InvalidInput(f"tier: no tier '{value}' (configured: {', '.join(sorted(known))})")
    return value
