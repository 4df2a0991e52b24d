"""Checking JSON request bodies for the admin and account routes; errors name the field."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from .errors import ApiError

MAX_ADMIN_BODY = 64 * 1024


async def json_body(request: Request) -> dict[str, Any]:
    body = await request.body()
    if len(body) > MAX_ADMIN_BODY:
        raise ApiError(413, "request body too large")
    return parse_json_object(body) if body else {}


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid JSON in request body") from None
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    return data


def reject_unknown(data: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ApiError(400, f"{unknown[0]}: unknown field (allowed: {', '.join(sorted(allowed))})")


def string(data: dict[str, Any], name: str, default: str | None = None, required: bool = False) -> str | None:
    value = data.get(name, default)
    if value is None:
        if required:
            raise ApiError(400, f"{name}: required")
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise ApiError(400, f"{name}: must be a non-empty string")
    return value


def integer(data: dict[str, Any], name: str, default: int | None = None,
            low: int | None = None, high: int | None = None) -> int | None:
    value = data.get(name, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ApiError(400, f"{name}: must be an integer")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ApiError(400, f"{name}: must be between {low} and {high}")
    return value


def number(data: dict[str, Any], name: str, low: float = 0.0) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= low:
        raise ApiError(400, f"{name}: must be a number above {low:g}")
    return float(value)


def boolean(data: dict[str, Any], name: str, default: bool = False) -> bool:
    value = data.get(name, default)
    if not isinstance(value, bool):
        raise ApiError(400, f"{name}: must be true or false")
    return value


def string_list(data: dict[str, Any], name: str) -> list[str] | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ApiError(400, f"{name}: must be a list of strings")
    return value
