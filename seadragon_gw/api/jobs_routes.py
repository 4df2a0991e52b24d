"""Async jobs over HTTP: `/api/jobs`, `Prefer: respond-async` on inference routes, and seed
003's `/api/v1/inference/text-generation` and `/api/v1/tasks/{task_id}`.

Every submission is answered 202 only once the job is in the database, with `Location` where
to read it. The work (validation, ownership, running) is `jobs.service.JobService`'s; these
routes read bodies within `server.max_body_bytes` and shape answers.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Receive, Scope, Send

from ..auth.principal import Principal
from ..errors import GatewayError, InvalidInput
from ..gateway import Gateway
from ..jobs.request import JobRequest, inference_routes, text_generation
from ..jobs.service import JobService
from ..jobs.views import accepted_json, job_json, task_json
from ..lifecycle.route import INFERENCE, RouteSpec
from .asgi import ClientGone, authorize, header_map, read_body
from .context import ECHO_REQUEST_ID, gateway_of
from .errors import ApiError, as_api_error, error_body, status_for, style_for_path
from .responses import json_response
from .validation import parse_json_object, read_limited

JOBS = "/api/jobs"
TASKS = "/api/v1/tasks"
_SUBMIT_FIELDS = frozenset({"route", "body", "callback_url"})


# -- Prefer: respond-async on the inference routes (called by proxy.forward) -------------
def respond_async(spec: RouteSpec, scope: Scope) -> bool:
    """An inference request whose `Prefer` header asks for `respond-async` (RFC 7240)."""
    if not spec.queued:
        return False
    for name, value in scope["headers"]:
        if name == b"prefer" and any(p.split(b";", 1)[0].strip().lower() == b"respond-async"
                                     for p in value.split(b",")):
            return True
    return False


async def submit_async(gateway: Gateway, spec: RouteSpec, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer 202 with the job instead of the answer. Errors are answered here, in the route's
    own error shape, as the proxy answers them (the fast path has no Starlette handlers)."""
    try:
        response = await _submit_async(gateway, spec, scope, receive)
    except ClientGone:
        return
    except (ApiError, GatewayError) as exc:
        error = exc if isinstance(exc, ApiError) else as_api_error(exc)
        response = Response(error_body(style_for_path(scope["path"]), error.status, error.message),
                            status_code=error.status, headers=error.headers,
                            media_type="application/json; charset=utf-8")
    echo = scope.get(ECHO_REQUEST_ID)
    if echo is not None:
        response.headers["x-request-id"] = echo.decode("latin-1")
    await response(scope, receive, send)


async def _submit_async(gateway: Gateway, spec: RouteSpec, scope: Scope, receive: Receive) -> Response:
    headers = header_map(scope)
    principal = gateway.auth.authenticate(scope, headers, spec.access)
    body = await read_body(receive, headers, gateway.config.server.max_body_bytes)
    payload = parse_json_object(body) if body else {}
    job = gateway.jobs.request(spec.upstream_path or scope["path"], spec, payload)
    response = await _submitted(gateway, principal, job, JOBS)
    response.headers["Preference-Applied"] = "respond-async"
    return response


# -- /api/jobs ---------------------------------------------------------------------------
async def submit(request: Request) -> Response:
    gateway, principal = gateway_of(request), authorize(request, "user")
    fields = await _body(request)
    unknown = sorted(set(fields) - _SUBMIT_FIELDS)
    if unknown:
        raise InvalidInput(f"unknown field '{unknown[0]}' (a job is {{\"route\", \"body\", \"callback_url\"}})")
    route, spec = _resolve(request, fields.get("route"))
    job = gateway.jobs.request(route, spec, fields.get("body"), fields.get("callback_url"))
    return await _submitted(gateway, principal, job, JOBS)


async def list_jobs(request: Request) -> Response:
    jobs, principal = _caller(request)
    query = request.query_params
    everyone = query.get("all", "").lower() in ("1", "true", "yes")
    listed = await jobs.listing(principal, query.get("status"), _limit(query.get("limit")), everyone)
    return json_response({"jobs": [job_json(job, status, with_result=False) for job, status in listed]})


async def get_job(request: Request) -> Response:
    jobs, principal = _caller(request)
    job, status = await jobs.get(principal, request.path_params["job_id"])
    return json_response(job_json(job, status))


async def cancel_job(request: Request) -> Response:
    jobs, principal = _caller(request)
    job, status = await jobs.cancel(principal, request.path_params["job_id"])
    return json_response(job_json(job, status))


# -- seed 003 ----------------------------------------------------------------------------
async def text_generation_task(request: Request) -> Response:
    jobs, principal = _caller(request)
    fields = await _body(request)
    job = jobs.request("/api/generate", INFERENCE["/api/generate"], text_generation(fields),
                       fields.get("callback_url"))
    job_id = await submit_job(gateway_of(request), principal, job)
    stored, _ = await jobs.get(principal, job_id)
    accepted = task_json(stored, "queued")  # what it was when accepted, as every 202 says
    accepted["result"] = None
    return json_response(accepted, status=202, headers={"Location": f"{TASKS}/{job_id}"})


async def get_task(request: Request) -> Response:
    jobs, principal = _caller(request)
    job, status = await jobs.get(principal, request.path_params["task_id"])
    return json_response(task_json(job, status))


async def cancel_task(request: Request) -> Response:
    jobs, principal = _caller(request)
    job, status = await jobs.cancel(principal, request.path_params["task_id"])
    return json_response(task_json(job, status))


# -- helpers -----------------------------------------------------------------------------
def _caller(request: Request) -> tuple[JobService, Principal]:
    principal = authorize(request, "user")
    return gateway_of(request).jobs, principal


async def _body(request: Request) -> dict[str, Any]:
    body = await read_limited(request, gateway_of(request).config.server.max_body_bytes)
    if not body:
        raise InvalidInput("request body must be a JSON object")
    return parse_json_object(body)


async def submit_job(gateway: Gateway, principal: Principal, job: JobRequest) -> str:
    """Submit a job; a refused submission (rate limit, quota, shutting down, database) is
    recorded as any refused request is: a usage row, and the metrics' refusal counters."""
    record = gateway.jobs.record(principal, job)
    try:
        return await gateway.jobs.submit(principal, job, record)
    except GatewayError as exc:
        gateway.requests.reject(record, exc, status_for(exc))
        raise


async def _submitted(gateway: Gateway, principal: Principal, job: JobRequest, base: str) -> Response:
    job_id = await submit_job(gateway, principal, job)
    return json_response(accepted_json(job_id, job.stream_forced), status=202,
                         headers={"Location": f"{base}/{job_id}"})


def _resolve(request: Request, route: Any) -> tuple[str, RouteSpec]:
    """The upstream path and spec of the inference route a job names (aliases such as
    `/api/chat/completions` or `/generate` count); a clear 400 for anything else."""
    if not isinstance(route, str) or not route.startswith("/"):
        raise InvalidInput(f"route is required: the path of an inference route ({inference_routes()})")
    spec = INFERENCE.get(route)
    if spec is not None:
        return route, spec
    probe: Scope = {"type": "http", "path": route, "method": "POST", "root_path": ""}
    for candidate in request.app.routes:
        match, _ = candidate.matches(probe)
        if match is Match.NONE:
            continue
        found = getattr(getattr(candidate, "endpoint", None), "spec", None)
        if match is Match.FULL and isinstance(found, RouteSpec) and found.queued:
            return found.upstream_path or route, found
        raise InvalidInput(f"route '{route}' cannot run as a job: only inference routes can ({inference_routes()})")
    raise InvalidInput(f"unknown route '{route}': a job runs one of {inference_routes()}")


def _limit(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.isdigit():
        raise InvalidInput("limit must be a positive integer")
    return int(value)


def jobs_routes() -> list[BaseRoute]:
    return [
        Route(JOBS, submit, methods=["POST"]),
        Route(JOBS, list_jobs, methods=["GET"]),
        Route(JOBS + "/{job_id}", get_job, methods=["GET"]),
        Route(JOBS + "/{job_id}", cancel_job, methods=["DELETE"]),
        Route("/api/v1/inference/text-generation", text_generation_task, methods=["POST"]),
        Route(TASKS + "/{task_id}", get_task, methods=["GET"]),
        Route(TASKS + "/{task_id}", cancel_task, methods=["DELETE"]),
    ]
