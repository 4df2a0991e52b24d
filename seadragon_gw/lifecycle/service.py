"""The request lifecycle: admit, wait in the queue, lease a backend slot, open the upstream,
release. Every way in (the HTTP writer, async jobs, the WebSocket writer) uses this and
nothing else to reach a backend, so queueing, leasing, passive health and the request record
behave the same everywhere.

    exchange = service.admit(record, principal, spec, payload)   # refusals raise here
    while not await exchange.wait(step):                          # queued: keepalives between
        ...
    response = await exchange.open(method, path, headers, body)
    ...relay, feeding exchange.record...
    exchange.release("ok", status)                                # always, exactly once
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from ..aio import until
from ..auth.principal import Principal
from ..backends.backend import Backend
from ..backends.registry import Registry
from ..backends.upstream import BackendUnreachable, FixedResponse, UpstreamError, UpstreamResponse
from ..config import QueueConfig
from ..errors import GatewayError, InvalidInput, NotFound, NotPermitted, Unavailable
from ..model_names import QueueKey, model_key
from ..queue.entry import QueueEntry
from ..queue.errors import QueueCleared, QueueTimeout
from ..queue.scheduler import Scheduler
from ..records.observers import Recorder
from ..records.record import Outcome, RequestRecord
from ..translate import ollama_calls
from ..translate.ollama_over_openai import TRANSLATED_PATHS, OllamaOverOpenAI
from . import failover
from .errors import ModelNotFound
from .forwarding import Rewrite, body_for
from .route import RouteSpec

log = logging.getLogger("seadragon_gw.requests")

Body = bytes | AsyncIterator[bytes] | None


def outcome_of(error: BaseException) -> Outcome:
    """How a request ended, from the error that ended it."""
    if isinstance(error, QueueTimeout):
        return "queue_timeout"
    if isinstance(error, QueueCleared):
        return "cleared"
    if isinstance(error, UpstreamError):
        return "upstream_error"
    return "rejected"


@dataclass(eq=False, slots=True)
class Exchange:
    """One admitted request on its way through the lifecycle (slots: one per waiting request)."""

    service: RequestService
    record: RequestRecord
    spec: RouteSpec
    principal: Principal
    model: str | None
    entry: QueueEntry | None
    backend: Backend | None
    position: int
    rewrite: Rewrite | None = None
    rebody: bool = False  # the payload gained a field (default_model): send it, not the bytes
    adapter: OllamaOverOpenAI | None = None  # a native request served by an OpenAI-kind backend
    unload: bool = False  # native `keep_alive: 0`: a managed backend's process stops after it
    answer: bytes | None = None  # answered by the gateway, not the backend (Ollama's load/unload calls)
    _released: bool = field(default=False, init=False)

    @property
    def leased(self) -> bool:
        return self.backend is not None

    async def wait(self, step: float | None = None) -> bool:
        """Wait for the slot: True once leased, False after `step` seconds without it (so
        the caller can send a keepalive), or the error the request was rejected with: the
        scheduler's QueueTimeout at the deadline, queue cleared, shutting down."""
        if self.backend is not None:
            return True
        assert self.entry is not None
        granted = self.entry.granted
        if step is not None and not granted.done():
            await until(granted, step, self.service.scheduler.loop)
            if not granted.done():
                return False
        # Awaited directly: no timer or future of this request's own while it waits (the
        # scheduler keeps the deadline). A cancel here cancels `granted`: entry.py says why
        # that is safe.
        self.backend = await granted
        self.record.granted_at = self.service.recorder.clock()
        return True

    async def open(self, method: str, path: str, headers: list[tuple[bytes, bytes]], body: Body,
                   payload: dict[str, Any] | None = None, alone: bool = True) -> UpstreamResponse:
        """Send the request to the leased backend and return once its headers are in. A
        connection failure marks the backend down at once; an answer from a backend marked
        down marks it up (passive health). A backend that fails before answering hands the
        request to another backend of its model (the rule: lifecycle/failover.py). `alone`
        False: the caller's server has other requests in progress (`Upstream.open`)."""
        if self.answer is None and self.adapter is not None and payload is not None:
            self._control_call(payload)
        if self.answer is not None:
            assert self.backend is not None, "open() before the slot was leased"
            self.record.backend = self.backend.name
            return FixedResponse.of(200, ollama_calls.CONTENT_TYPE, self.answer, self.backend.upstream.label)
        tried: list[Backend] = []
        while True:
            backend = self.backend
            assert backend is not None, "open() before the slot was leased"
            try:
                response = await self._send(backend, method, path, headers, body, payload, alone)
            except UpstreamError as exc:
                if not (failover.after_error(exc, body) and self._may_fail_over(backend, tried)):
                    raise
                await self._fail_over(backend, tried, exc.message)
                continue
            if failover.after_answer(response.status, body) and self._may_fail_over(backend, tried):
                await response.aclose()
                await self._fail_over(backend, tried, f"it answered HTTP {response.status}")
                continue
            return response if self.adapter is None else self.adapter.wrap(response)

    def _control_call(self, payload: dict[str, Any]) -> None:
        """Ollama's load call (no prompt) reaches here once the slot is leased, so the model
        is loaded: answered without generating. An unload call not answered at admission (a
        job's) is answered the same way, and its process stops after it."""
        assert self.adapter is not None
        call = ollama_calls.control_call(self.adapter.route, payload)
        if call is not None:
            self.answer = ollama_calls.answer(self.adapter.route, self.adapter.client_model, call)
            self.unload = self.unload or call == "unload"

    def _may_fail_over(self, backend: Backend, tried: list[Backend]) -> bool:
        """A queued request, retries left, and another backend of its model to go to."""
        if self.entry is None or len(tried) >= backend.config.retries:
            return False
        avoid = {backend, *tried}
        return any(b not in avoid for b in self.service.registry.routable(self.entry.queue_key))

    async def _fail_over(self, backend: Backend, tried: list[Backend], reason: str) -> None:
        """Give the failed backend's slot back and wait for one of another backend, with the
        request's priority and age (it goes to the front of its queue, not the back)."""
        tried.append(backend)
        log.warning("request %s: backend %s failed before answering (%s); trying another backend of model '%s'",
                    self.record.request_id, backend.name, reason, self.model)
        scheduler = self.service.scheduler
        failed = self.entry
        assert failed is not None
        scheduler.release(failed)
        self.entry, self.position = scheduler.resubmit(failed, frozenset(tried))
        self.backend = self.entry.backend if self.position == 0 else None
        await self.wait()

    async def _send(self, backend: Backend, method: str, path: str, headers: list[tuple[bytes, bytes]], body: Body,
                    payload: dict[str, Any] | None, alone: bool) -> UpstreamResponse:
        """One try on one backend: its body (renamed model, translated), passive health."""
        self.record.backend = backend.name
        adapter = self.adapter
        if adapter is not None and payload is not None:
            path = adapter.upstream_path(payload)
            body = adapter.request_body(payload, _backend_name(backend, self.model))
        elif isinstance(body, bytes) or body is None:
            if self.rebody and payload is not None:
                body = orjson.dumps(payload)
            body, self.rewrite = body_for(backend, body, payload)
        registry = self.service.registry
        try:
            response = await backend.upstream.open(method, path, headers, body, alone)
        except BackendUnreachable as exc:
            registry.report_unreachable(backend, exc.message)
            raise
        registry.report_answered(backend)
        return response

    def release(self, outcome: Outcome, status: int, error: str | None = None) -> None:
        """Give the slot back (or leave the queue) and finish the record: the one place."""
        if self._released:
            return
        self._released = True
        if self.entry is not None:
            self.service.scheduler.release(self.entry)
        if self.spec.changes_models and self.backend is not None:
            self.service.registry.refresh_soon(self.backend)
        if self.unload and self.backend is not None:
            self.service.registry.unload_soon(self.backend)
        self.service.recorder.finish(self.record, outcome, status, error)


class AdmissionCheck(Protocol):
    """A rule a request must pass after it is routed and before it queues (rate limits,
    quotas): raise a GatewayError (e.g. TooManyRequests) to refuse it."""

    def check(self, record: RequestRecord, principal: Principal) -> None: ...


class RequestService:
    def __init__(self, registry: Registry, scheduler: Scheduler, recorder: Recorder,
                 config: QueueConfig, checks: list[AdmissionCheck] | None = None,
                 default_model: str | None = None) -> None:
        self.registry = registry
        self.default_model = default_model
        self.scheduler = scheduler
        self.recorder = recorder
        self.config = config
        self.checks = list(checks or [])
        self.limits: list[AdmissionCheck] = []  # rate limits, quotas: paid once per request
        self._refusal: GatewayError | None = None

    @property
    def refusing(self) -> bool:
        """True once the gateway stopped admitting (shutting down)."""
        return self._refusal is not None

    def refuse_new(self, error: GatewayError) -> None:
        """From now on, admit nothing (shutdown): every new request gets `error`."""
        self._refusal = error

    def admit(self, record: RequestRecord, principal: Principal, spec: RouteSpec,
              payload: dict[str, Any] | None, stream: bool = False, *, enqueued_at: float | None = None,
              timeout_s: float | None = None, profile: str | None = None, prepaid: bool = False) -> Exchange:
        """Check the request, find its backend or queue, and enter the queue (inference).
        Raises for anything refused: bad model field, model not allowed, not found, queue
        full, shutting down. An async job passes `enqueued_at` (its submission, on the
        scheduler's clock: it ages from then) and its own queue `timeout_s`. A `profile`
        (e.g. an OCR resolution) is served only by a managed backend running it: the request
        waits while one is switched to it. `prepaid`: the limits were checked already (an
        async job pays them when it is submitted, not again when it runs)."""
        record.credential_kind, record.credential_name = principal.kind, principal.name
        record.key_id = principal.key_id
        record.client_id, record.priority, record.stream = principal.client, principal.priority, stream
        if self._refusal is not None:
            raise self._refusal
        rebody = self._fill_default_model(spec, payload)
        name = self._model_name(spec, payload)
        record.model = name
        self._check_model_fields(spec, payload, principal)
        if spec.native and name is not None and ollama_calls.control_call(record.route, payload) == "unload":
            unloaded = self._unload_call(record, principal, spec, name, prepaid)
            if unloaded is not None:
                return unloaded
        key, backend = self._route(spec, principal, name, profile)
        self._pay(record, principal, prepaid)
        adapter = _adapter_for(spec, record, key, name)
        record.profile, unload = profile, spec.native and ollama_calls.keep_alive_zero(payload)
        if backend is not None or not spec.queued:
            return Exchange(self, record, spec, principal, name, None, backend, 0,
                            rebody=rebody, adapter=adapter, unload=unload)
        now = self.recorder.clock()
        record.queued_at = now if enqueued_at is None else now - (self.scheduler.clock() - enqueued_at)
        deadline = self.scheduler.loop.time() + (self.config.timeout_s if timeout_s is None else timeout_s)
        entry, position = self.scheduler.submit(key, principal.priority, record, enqueued_at=enqueued_at,
                                                profile=profile, deadline=deadline)
        exchange = Exchange(self, record, spec, principal, name, entry, None, position,
                            rebody=rebody, adapter=adapter, unload=unload)
        if position == 0:
            exchange.backend = entry.backend
            record.granted_at = now
        return exchange

    def _pay(self, record: RequestRecord, principal: Principal, prepaid: bool) -> None:
        """The limits (unless paid when an async job was submitted), then the other checks."""
        if not prepaid:
            self.check_limits(record, principal)
        for rule in self.checks:
            rule.check(record, principal)

    def _unload_call(self, record: RequestRecord, principal: Principal, spec: RouteSpec, name: str,
                     prepaid: bool) -> Exchange | None:
        """Ollama's unload call (no prompt, `keep_alive: 0`) for a model only OpenAI-kind
        backends serve: answered at once, without starting, queueing or generating; its
        managed processes stop gracefully (their active requests finish). None when an
        Ollama backend has the model (it answers the call itself) or none does (the usual
        routing says why)."""
        model = model_key(name)
        if not principal.may_use(model):
            raise NotPermitted(f"this credential may not use model '{name}'")
        backends = self.registry.serving((model, "openai"))
        if not backends or self.registry.serving((model, "ollama")):
            return None
        self._pay(record, principal, prepaid)
        for backend in backends:
            self.registry.unload_soon(backend)
        return Exchange(self, record, spec, principal, name, None, backends[0], 0,
                        answer=ollama_calls.answer(record.route, name, "unload"))

    def check_limits(self, record: RequestRecord, principal: Principal) -> None:
        """Take the request from the caller's rate limit and quotas, or raise (429)."""
        for rule in self.limits:
            rule.check(record, principal)

    def reject(self, record: RequestRecord, error: BaseException, status: int) -> None:
        """Finish the record of a request refused before it was admitted."""
        message = error.message if isinstance(error, GatewayError) else None
        record.model_missing = isinstance(error, ModelNotFound)
        self.recorder.finish(record, outcome_of(error), status, message)

    # -- routing ------------------------------------------------------------------------
    def _fill_default_model(self, spec: RouteSpec, payload: dict[str, Any] | None) -> bool:
        """Seed 000: an inference request naming no model gets `default_model`, written into
        the payload so the backend is told it too. True when the payload was changed."""
        if self.default_model is None or payload is None or not spec.queued or spec.model_field != "model":
            return False
        if payload.get("model") is not None or payload.get("name") is not None:
            return False
        payload["model"] = self.default_model
        return True

    @staticmethod
    def _model_name(spec: RouteSpec, payload: dict[str, Any] | None) -> str | None:
        field_name = spec.model_field
        if field_name is None or payload is None:
            return None
        name = payload.get(field_name)
        if name is None and field_name == "model":
            name = payload.get("name")  # older Ollama clients send `name`
        if name is None:
            raise InvalidInput(f"{field_name} is required")
        if not isinstance(name, str):
            raise InvalidInput(f"{field_name} must be a string")
        if not name.strip():
            raise InvalidInput(f"{field_name} is required")
        return name

    @staticmethod
    def _check_model_fields(spec: RouteSpec, payload: dict[str, Any] | None, principal: Principal) -> None:
        """Copy's `destination` and create's `from` name models too: a model-restricted key
        may only touch models it is allowed."""
        if payload is None:
            return
        for field_name in spec.model_fields:
            value = payload.get(field_name)
            if value is None:
                continue
            if not isinstance(value, str) or not value.strip():
                raise InvalidInput(f"{field_name} must be a non-empty string")
            if not principal.may_use(model_key(value)):
                raise NotPermitted(f"this credential may not use model '{value}'")

    def _route(self, spec: RouteSpec, principal: Principal, name: str | None,
               profile: str | None = None) -> tuple[QueueKey, Backend | None]:
        """The queue (inference) or the backend (everything else) for a request."""
        kind = "ollama" if spec.native else None
        if name is None:
            return ("", kind), self.any_backend(kind)
        key: QueueKey = (model_key(name), kind)
        if not principal.may_use(key[0]):
            raise NotPermitted(f"this credential may not use model '{name}'")
        backends = self.registry.routable(key, profile)  # starts a stopped on-demand managed backend
        if not backends and spec.native and spec.queued and self.registry.serving((key[0], "openai")):
            key = (key[0], "openai")  # only an OpenAI-kind backend has it: served through translation
            backends = self.registry.routable(key, profile)  # starts a stopped on-demand managed backend
        if not backends and not spec.model_must_exist:
            return key, self.any_backend(kind)
        if not backends:
            raise self._no_backend(key, name, kind)
        if spec.queued:
            return key, None
        return key, min(backends, key=Backend.load_rank)

    def _no_backend(self, key: QueueKey, name: str, kind: str | None) -> GatewayError:
        serving = self.registry.serving(key)
        if serving:  # it has the model but takes no work now (draining)
            return Unavailable(f"every backend serving model '{name}' is draining; try again shortly",
                               retry_after_s=self.config.retry_after_s)
        if kind == "ollama" and self.registry.serving((key[0], None)):
            return NotFound(f"model '{name}' not found on any Ollama backend; use the /v1 API")
        silent = self.registry.undiscovered(kind)
        if silent:
            return Unavailable(silent[0].lifecycle.reason, retry_after_s=self.config.retry_after_s)
        return ModelNotFound(f"model '{name}' not found")

    def any_backend(self, kind: str | None) -> Backend:
        options = [b for b in self.registry.backends if kind in (None, b.kind) and b.may_try]
        if not options:
            raise NotFound("no backend can serve this route")
        return min(options, key=lambda b: not b.healthy)


def _adapter_for(spec: RouteSpec, record: RequestRecord, key: QueueKey, name: str | None
                 ) -> OllamaOverOpenAI | None:
    """A native inference request routed to OpenAI-kind backends is translated both ways."""
    if not spec.native or key[1] != "openai" or name is None:
        return None
    if record.route not in TRANSLATED_PATHS:
        raise NotFound(f"model '{name}' is only on OpenAI-kind backends, which cannot serve {record.route}")
    return OllamaOverOpenAI(record.route, name)


def _backend_name(backend: Backend, name: str | None) -> str:
    """The name the backend knows the model by (`qwen` for the client's `qwen:latest`)."""
    info = backend.models.get(model_key(name)) if name is not None else None
    return info.name if info is not None else name or ""
