"""`GatewayClient`: the SDK with blocking httpx calls."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import httpx

from .api import ClientApi, SyncDriver
from .operations import Context, Priority
from .protocol import END, SKIP, Call, Plan, Reply, Sleep, StreamPlan, T
from .session import Session
from .transport import DEFAULT_TIMEOUT_S, connection_failed, reply_of, request_args


class SyncTransport(SyncDriver):
    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def run(self, plan: Plan[T]) -> T:
        reply: Reply | None = None
        try:
            while True:
                step = plan.send(reply)
                if isinstance(step, Sleep):
                    time.sleep(step.seconds)
                    reply = None
                else:
                    reply = self._send(step)
        except StopIteration as done:
            result: T = done.value
            return result

    def _send(self, call: Call) -> Reply:
        try:
            if not call.stream:
                response = self.http.request(call.method, call.path, **request_args(call))
                return reply_of(response, response.content)
            response = self.http.send(self.http.build_request(call.method, call.path, **request_args(call)),
                                      stream=True)
            if 200 <= response.status_code < 300:
                return reply_of(response, b"", response)
            try:
                return reply_of(response, response.read())
            finally:
                response.close()
        except httpx.TransportError as exc:
            raise connection_failed(call, exc) from exc

    def stream(self, plan: StreamPlan) -> Iterator[Any]:
        response: httpx.Response = self.run(plan.open).stream
        try:
            for line in response.iter_lines():
                item = plan.decode(line)
                if item is END:
                    return
                if item is not SKIP:
                    yield item
        except httpx.TransportError as exc:
            raise connection_failed(Call("GET", str(response.request.url)), exc) from exc
        finally:
            response.close()


class GatewayClient(ClientApi[SyncDriver]):
    """The gateway's Python SDK (blocking). Give one credential: `username` and `password` (a web
    chat login, renewed as needed), `api_key`, or `token` (a tokens.json token or an access token).

        with GatewayClient("http://127.0.0.1:11435", api_key="sdr-...") as gw:
            print(gw.chat("llama3.2", [{"role": "user", "content": "Hello"}])["message"]["content"])
    """

    def __init__(self, base_url: str, *, username: str | None = None, password: str | None = None,
                 api_key: str | None = None, token: str | None = None, refresh_token: str | None = None,
                 client_id: str | None = None, priority: Priority | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S, http: httpx.Client | None = None) -> None:
        session = Session(api_key=api_key, token=token, username=username, password=password,
                          refresh_token=refresh_token)
        self.http = http or httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout)
        super().__init__(SyncTransport(self.http), Context(session, client_id, priority))

    @property
    def session(self) -> Session:
        return self._ctx.session

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
