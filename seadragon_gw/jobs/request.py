"""What a job asks for, checked before anything is written: its route, body and webhook.

A job's answer is kept whole, so `stream` is forced false (and the client is told when it had
asked for a stream). The model is required here, not only when the job runs, so a job that
could never be queued is refused with 400 instead of failing later.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from ..errors import InvalidInput
from ..lifecycle.route import INFERENCE, RouteSpec

STREAM_FORCED = "stream is not available for jobs: it was set to false and the result is the whole answer"
MAX_URL = 2048


@dataclass(frozen=True, slots=True)
class JobRequest:
    route: str
    model: str | None
    body: bytes
    stream_forced: bool
    callback_url: str | None
    profile: str | None = None  # the managed profile it must run with (an OCR resolution)


def inference_routes() -> str:
    return ", ".join(INFERENCE)


def job_request(route: str, spec: RouteSpec, body: Any, *, callback_url: Any = None,
                callback_hosts: Sequence[str] = (), default_model: str | None = None,
                profile: str | None = None) -> JobRequest:
    """`route` is the upstream path of an inference route (`spec`); raises InvalidInput.
    `profile`: the managed profile the job must run with (checked by its route beforehand)."""
    if not spec.queued or route not in INFERENCE:
        raise InvalidInput(f"route '{route}' cannot run as a job: only inference routes can ({inference_routes()})")
    if not isinstance(body, dict):
        raise InvalidInput("body must be a JSON object: the request the route takes")
    payload = dict(body)
    model = _model(spec, payload, default_model)
    forced = _force_no_stream(spec, payload)
    url = checked_callback(callback_url, callback_hosts)
    return JobRequest(route, model, orjson.dumps(payload), forced, url, profile)


def _model(spec: RouteSpec, payload: dict[str, Any], default_model: str | None) -> str | None:
    field = spec.model_field
    if field is None:
        return None
    name = payload.get(field)
    if name is None and field == "model":
        name = payload.get("name")  # older Ollama clients send `name`
    if name is None and default_model is not None and field == "model":
        name = payload[field] = default_model
    if name is None:
        raise InvalidInput(f"{field} is required")
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput(f"{field} must be a non-empty string")
    return name


def _force_no_stream(spec: RouteSpec, payload: dict[str, Any]) -> bool:
    """Set `stream: false`; True when the client had asked for a stream."""
    if not spec.streams:
        return False
    asked = payload.get("stream")
    if asked is not None and not isinstance(asked, bool):
        raise InvalidInput("stream must be a boolean")
    payload["stream"] = False
    return asked is True


def checked_callback(url: Any, hosts: Sequence[str]) -> str | None:
    """The webhook URL if its host is one of `hosts` exactly (no wildcard, no user info):
    the gateway must never be made to POST wherever a client likes."""
    if url is None:
        return None
    if not isinstance(url, str) or not url:
        raise InvalidInput("callback_url must be a URL string")
    if not hosts:
        raise InvalidInput("callback_url: webhooks are off on this gateway (jobs.callback_hosts is empty)")
    if len(url) > MAX_URL or any(c <= " " or c == "\x7f" for c in url):
        raise InvalidInput(f"callback_url must be a URL of at most {MAX_URL} characters without spaces")
    try:
        parts = urlsplit(url)
        host, _ = parts.hostname, parts.port
    except ValueError:
        raise InvalidInput("callback_url is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidInput("callback_url must be an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("callback_url must not carry a user name or password")
    if host not in hosts:
        raise InvalidInput(f"callback_url host '{host}' is not one of jobs.callback_hosts")
    return url


def text_generation(body: dict[str, Any]) -> dict[str, Any]:
    """Seed 003's `{"model_name", "prompt", "max_length", "temperature"}` as an /api/generate body."""
    unknown = sorted(set(body) - {"model_name", "prompt", "max_length", "temperature", "callback_url"})
    if unknown:
        raise InvalidInput(f"unknown field '{unknown[0]}'")
    model, prompt = body.get("model_name"), body.get("prompt")
    if not isinstance(model, str) or not model.strip():
        raise InvalidInput("model_name is required (a model name)")
    if not isinstance(prompt, str):
        raise InvalidInput("prompt is required (a string)")
    options: dict[str, Any] = {}
    length = body.get("max_length")
    if length is not None:
        if not isinstance(length, int) or isinstance(length, bool) or length < 1:
            raise InvalidInput("max_length must be a positive integer")
        options["num_predict"] = length
    temperature = body.get("temperature")
    if temperature is not None:
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or temperature < 0:
            raise InvalidInput("temperature must be a number of 0 or more")
        options["temperature"] = temperature
    generate: dict[str, Any] = {"model": model, "prompt": prompt, "stream": False}
    if options:
        generate["options"] = options
    return generate
