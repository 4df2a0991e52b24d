"""Every SDK operation, once: which request it makes and what it returns (as plans).

Each function takes the client's `Context` (credential and default options) and the call's
arguments and returns a plan (`protocol.py`) or a `StreamPlan`; `api.py` binds them to the
sync and async clients. `priority` and `client_id` become `X-Priority` and `X-Client-ID`.
"""

from __future__ import annotations

import base64
import mimetypes
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from .errors import GatewayError, WaitTimeout
from .protocol import Call, Plan, Reply, StreamPlan, check, json_of, ndjson_line, sse_line, wait
from .session import Session

JSON = dict[str, Any]
Priority = Literal["high", "normal", "low"]  # X-Priority: never better than the credential's own
ENDED = frozenset({"completed", "failed", "cancelled"})


@dataclass
class Context:
    session: Session
    client_id: str | None = None
    priority: Priority | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)

    def headers(self, priority: Priority | None = None, client_id: str | None = None) -> dict[str, str]:
        out = dict(self.extra_headers)
        chosen_client = client_id if client_id is not None else self.client_id
        chosen_priority = priority if priority is not None else self.priority
        if chosen_client is not None:
            out["X-Client-ID"] = chosen_client
        if chosen_priority is not None:
            out["X-Priority"] = chosen_priority
        return out


def _params(values: Mapping[str, object]) -> dict[str, str]:
    """Query parameters without the ones left out; booleans as the gateway reads them."""
    return {k: ("true" if v else "false") if isinstance(v, bool) else str(v) for k, v in values.items()
            if v is not None}


def _body(fields: Mapping[str, object]) -> JSON:
    return {k: v for k, v in fields.items() if v is not None}


def request_any(ctx: Context, /, method: str, path: str, body: Any = None,
                params: Mapping[str, object] | None = None, headers: Mapping[str, str] | None = None) -> Plan[Any]:
    """One request with the credential and default headers; the answer's JSON."""
    reply = yield from ctx.session.send(Call(method, path, json=body, params=_params(params or {}),
                                             headers={**ctx.headers(), **(headers or {})}))
    return json_of(reply)


def request(ctx: Context, /, method: str, path: str, body: Any = None, params: Mapping[str, object] | None = None,
            headers: Mapping[str, str] | None = None) -> Plan[JSON]:
    """`request_any` for the routes that answer a JSON object (all of the gateway's own)."""
    answer = yield from request_any(ctx, method, path, body, params, headers)
    if not isinstance(answer, dict):
        raise GatewayError(200, f"expected a JSON object from {method} {path}, got {type(answer).__name__}")
    return answer


def _opened(ctx: Context, /, call: Call) -> Plan[Reply]:
    reply = yield from ctx.session.send(call)
    return check(reply)


# -- inference ---------------------------------------------------------------------------
def _chat_body(model: str, messages: Sequence[Mapping[str, Any]], stream: bool, extra: Mapping[str, Any]) -> JSON:
    return _body({"model": model, "messages": list(messages), "stream": stream, **extra})


def chat(ctx: Context, /, model: str, messages: Sequence[Mapping[str, Any]], *,
         priority: Priority | None = None, client_id: str | None = None, **fields: Any) -> Plan[JSON]:
    """`POST /api/chat` with `stream: false`: the whole answer (`["message"]["content"]`).
    `fields` are Ollama's (`options`, `format`, `tools`, `keep_alive`, `think`, ...)."""
    return (yield from request(ctx, "POST", "/api/chat", _chat_body(model, messages, False, fields),
                               headers=ctx.headers(priority, client_id)))


def chat_stream(ctx: Context, /, model: str, messages: Sequence[Mapping[str, Any]], *,
                priority: Priority | None = None, client_id: str | None = None, **fields: Any) -> StreamPlan:
    """`POST /api/chat` streamed: one dict per NDJSON line (the last has `done: true`)."""
    call = Call("POST", "/api/chat", json=_chat_body(model, messages, True, fields),
                headers=ctx.headers(priority, client_id), stream=True)
    return StreamPlan(_opened(ctx, call), ndjson_line)


def generate(ctx: Context, /, model: str, prompt: str, *, priority: Priority | None = None,
             client_id: str | None = None, **fields: Any) -> Plan[JSON]:
    """`POST /api/generate` with `stream: false` (`["response"]`)."""
    body = _body({"model": model, "prompt": prompt, "stream": False, **fields})
    return (yield from request(ctx, "POST", "/api/generate", body, headers=ctx.headers(priority, client_id)))


def generate_stream(ctx: Context, /, model: str, prompt: str, *, priority: Priority | None = None,
                    client_id: str | None = None, **fields: Any) -> StreamPlan:
    call = Call("POST", "/api/generate", json=_body({"model": model, "prompt": prompt, "stream": True, **fields}),
                headers=ctx.headers(priority, client_id), stream=True)
    return StreamPlan(_opened(ctx, call), ndjson_line)


def embed(ctx: Context, /, model: str, input: str | Sequence[str], *, priority: Priority | None = None,
          client_id: str | None = None, **fields: Any) -> Plan[JSON]:
    """`POST /api/embed` (`["embeddings"]`: one vector per input)."""
    body = _body({"model": model, "input": input if isinstance(input, str) else list(input), **fields})
    return (yield from request(ctx, "POST", "/api/embed", body, headers=ctx.headers(priority, client_id)))


def chat_completion(ctx: Context, /, model: str, messages: Sequence[Mapping[str, Any]], *,
                    priority: Priority | None = None, client_id: str | None = None, **fields: Any) -> Plan[JSON]:
    """`POST /v1/chat/completions` (OpenAI's shape, `["choices"][0]["message"]["content"]`)."""
    return (yield from request(ctx, "POST", "/v1/chat/completions", _chat_body(model, messages, False, fields),
                               headers=ctx.headers(priority, client_id)))


def chat_completion_stream(ctx: Context, /, model: str, messages: Sequence[Mapping[str, Any]], *,
                           priority: Priority | None = None, client_id: str | None = None,
                           **fields: Any) -> StreamPlan:
    """`POST /v1/chat/completions` streamed: one `chat.completion.chunk` per SSE event."""
    call = Call("POST", "/v1/chat/completions", json=_chat_body(model, messages, True, fields),
                headers=ctx.headers(priority, client_id), stream=True)
    return StreamPlan(_opened(ctx, call), sse_line)


def ocr_body(image_path: str | Path, prompt: str) -> JSON:
    """An OpenAI chat body with the image as a data URL, as `/api/ocr` takes it."""
    path = Path(image_path)
    media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    image = {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
    content = [{"type": "text", "text": prompt}, image]
    return {"messages": [{"role": "user", "content": content}], "stream": False}


def ocr(ctx: Context, /, image_path: str | Path, *, resolution: str | None = None,
        prompt: str = "Read the text in this image.", priority: Priority | None = None,
        client_id: str | None = None) -> Plan[JSON]:
    """`POST /api/ocr` with the image; `resolution` is sent as `X-Resolution` (a profile of the
    OCR backend, e.g. "1024"). The answer is a chat completion whose content is the text."""
    headers = ctx.headers(priority, client_id)
    if resolution is not None:
        headers["X-Resolution"] = resolution
    return (yield from request(ctx, "POST", "/api/ocr", ocr_body(image_path, prompt), headers=headers))


def models(ctx: Context, /) -> Plan[JSON]:
    """`GET /api/tags`: the models every backend serves."""
    return (yield from request(ctx, "GET", "/api/tags"))


def health(ctx: Context, /) -> Plan[JSON]:
    """`GET /health`, also when it answers 503 (unhealthy): the report either way."""
    reply = yield from ctx.session.send(Call("GET", "/health"))
    if reply.status == 503 and reply.body.startswith(b'{"status"'):
        reply = Reply(200, reply.headers, reply.body)
    answer: JSON = json_of(reply)
    return answer


def me(ctx: Context, /) -> Plan[JSON]:
    """`GET /auth/me`: who the credential is, its priority and limits."""
    return (yield from request(ctx, "GET", "/auth/me"))


def logout(ctx: Context, /) -> Plan[None]:
    yield from ctx.session.logout()


# -- jobs --------------------------------------------------------------------------------
def submit_job(ctx: Context, /, route: str, body: Mapping[str, Any], *, callback_url: str | None = None,
               priority: Priority | None = None, client_id: str | None = None) -> Plan[JSON]:
    """`POST /api/jobs`: `{"request_id", "status": "queued"}`."""
    payload = _body({"route": route, "body": dict(body), "callback_url": callback_url})
    return (yield from request(ctx, "POST", "/api/jobs", payload, headers=ctx.headers(priority, client_id)))


def get_job(ctx: Context, /, job_id: str) -> Plan[JSON]:
    return (yield from request(ctx, "GET", f"/api/jobs/{quote(job_id, safe='')}"))


def cancel_job(ctx: Context, /, job_id: str) -> Plan[JSON]:
    return (yield from request(ctx, "DELETE", f"/api/jobs/{quote(job_id, safe='')}"))


def list_jobs(ctx: Context, /, *, status: str | None = None, limit: int | None = None,
              everyone: bool = False) -> Plan[list[JSON]]:
    answer = yield from request(ctx, "GET", "/api/jobs", params={"status": status, "limit": limit,
                                                                "all": "1" if everyone else None})
    return list(answer["jobs"])


def wait_job(ctx: Context, /, job_id: str, *, timeout: float | None = None, poll_s: float = 0.5) -> Plan[JSON]:
    """Poll the job until it is completed, failed or cancelled, and return it (a failed job is
    an answer too: see its `error`); `WaitTimeout` after `timeout` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        job = yield from get_job(ctx, job_id)
        if job["status"] in ENDED:
            return job
        if deadline is not None and time.monotonic() >= deadline:
            raise WaitTimeout(0, f"job {job_id} is still {job['status']} after {timeout} s")
        yield from wait(poll_s)


# -- queue -------------------------------------------------------------------------------
def queue_status(ctx: Context, /) -> Plan[JSON]:
    """`GET /api/queue/status`: load per model and the caller's waiting requests."""
    return (yield from request(ctx, "GET", "/api/queue/status"))


def clear_queue(ctx: Context, /, model: str | None = None) -> Plan[JSON]:
    """`POST /api/queue/clear` (admin): `{"cleared": N, "model": ...}`."""
    return (yield from request(ctx, "POST", "/api/queue/clear", _body({"model": model})))


# -- admin -------------------------------------------------------------------------------
def create_key(ctx: Context, /, name: str, *, priority: int | None = None, expires_in_s: float | None = None,
               allowed_models: Sequence[str] | None = None, rate_limit_per_min: int | None = None,
               is_admin: bool | None = None, tier: str | None = None) -> Plan[JSON]:
    """A new API key; the answer's `key` is its only showing."""
    body = _body({"name": name, "priority": priority, "expires_in_s": expires_in_s,
                  "allowed_models": None if allowed_models is None else list(allowed_models),
                  "rate_limit_per_min": rate_limit_per_min, "is_admin": is_admin, "tier": tier})
    return (yield from request(ctx, "POST", "/api/admin/apikeys", body))


def list_keys(ctx: Context, /) -> Plan[list[JSON]]:
    return list((yield from request(ctx, "GET", "/api/admin/apikeys"))["apikeys"])


def revoke_key(ctx: Context, /, key: str | int) -> Plan[JSON]:
    """Revoke by id or display prefix (never the key itself)."""
    return (yield from request(ctx, "DELETE", f"/api/admin/apikeys/{quote(str(key), safe='')}"))


def list_whitelist(ctx: Context, /) -> Plan[list[JSON]]:
    return list((yield from request(ctx, "GET", "/api/admin/whitelist"))["whitelist"])


def add_whitelist(ctx: Context, /, ip: str, *, priority: int | None = None, label: str | None = None) -> Plan[JSON]:
    return (yield from request(ctx, "POST", "/api/admin/whitelist", _body({"ip": ip, "priority": priority,
                                                                         "label": label})))


def remove_whitelist(ctx: Context, /, ip: str) -> Plan[JSON]:
    return (yield from request(ctx, "DELETE", f"/api/admin/whitelist/{quote(ip, safe='/')}"))


def create_registration_token(ctx: Context, /, *, expires_in_s: float | None = None, is_admin: bool | None = None,
                              note: str | None = None) -> Plan[JSON]:
    body = _body({"expires_in_s": expires_in_s, "is_admin": is_admin, "note": note})
    return (yield from request(ctx, "POST", "/api/admin/tokens", body))


def list_registration_tokens(ctx: Context, /) -> Plan[list[JSON]]:
    return list((yield from request(ctx, "GET", "/api/admin/tokens"))["tokens"])


def list_users(ctx: Context, /) -> Plan[list[JSON]]:
    return list((yield from request(ctx, "GET", "/api/admin/users"))["users"])


def set_user_active(ctx: Context, /, username: str, active: bool) -> Plan[JSON]:
    action = "activate" if active else "deactivate"
    return (yield from request(ctx, "POST", f"/api/admin/users/{quote(username, safe='')}/{action}"))


def set_user_tier(ctx: Context, /, username: str, tier: str | None) -> Plan[JSON]:
    return (yield from request(ctx, "PATCH", f"/api/admin/users/{quote(username, safe='')}", {"tier": tier}))


def _model_path(name: str, action: str) -> str:
    return f"/api/admin/models/{quote(name, safe=':')}/{action}"


def start_model(ctx: Context, /, name: str, *, profile: str | None = None) -> Plan[JSON]:
    """Start a managed backend (by backend name), with a profile if given; waits until it serves."""
    return (yield from request(ctx, "POST", _model_path(name, "start"), params={"profile": profile}))


def stop_model(ctx: Context, /, name: str, *, graceful: bool = True) -> Plan[JSON]:
    """Stop a managed backend: graceful lets its running requests finish first."""
    return (yield from request(ctx, "POST", _model_path(name, "stop"), params={"graceful": graceful}))


def switch_profile(ctx: Context, /, name: str, profile: str, *, graceful: bool = True) -> Plan[JSON]:
    """Restart a managed backend with another profile (e.g. an OCR resolution)."""
    return (yield from request(ctx, "POST", _model_path(name, "profile"),
                               params={"profile": profile, "graceful": graceful}))


def list_models(ctx: Context, /) -> Plan[list[JSON]]:
    """Managed backends: status, profile, pid, uptime, load."""
    return list((yield from request(ctx, "GET", "/api/admin/models"))["models"])


def list_backends(ctx: Context, /) -> Plan[list[JSON]]:
    return list((yield from request(ctx, "GET", "/api/admin/backends"))["backends"])


def model_logs(ctx: Context, /, name: str, *, lines: int | None = None) -> Plan[JSON]:
    return (yield from request(ctx, "GET", _model_path(name, "logs"), params={"lines": lines}))


def usage(ctx: Context, /, *, since: str | float | None = None, until: str | float | None = None,
          client: str | None = None, model: str | None = None, group_by: str | None = None) -> Plan[JSON]:
    """`GET /api/admin/usage`: aggregates per client, model, day or credential."""
    return (yield from request(ctx, "GET", "/api/admin/usage", params={
        "since": since, "until": until, "client": client, "model": model, "group_by": group_by}))


def crashes(ctx: Context, /, *, limit: int | None = None) -> Plan[list[JSON]]:
    return list((yield from request(ctx, "GET", "/api/admin/crashes", params={"limit": limit}))["crashes"])


def missing_models(ctx: Context, /, *, limit: int | None = None) -> Plan[list[JSON]]:
    answer = yield from request(ctx, "GET", "/api/admin/missing-models", params={"limit": limit})
    return list(answer["missing_models"])


def stats(ctx: Context, /) -> Plan[JSON]:
    return (yield from request(ctx, "GET", "/api/admin/stats"))


def model_queue(ctx: Context, /, model: str) -> Plan[JSON]:
    """`GET /api/admin/queue/{model}`: seed 004's queue figures for one model."""
    return (yield from request(ctx, "GET", f"/api/admin/queue/{quote(model, safe=':/')}"))


def raw(ctx: Context, /, method: str, path: str, *, body: Any = None,
        params: Mapping[str, object] | None = None) -> Plan[Any]:
    """Any other route, with the client's credential and error handling."""
    return (yield from request_any(ctx, method, path, body, params))
