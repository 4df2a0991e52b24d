"""`AsyncGatewayClient`: the SDK on asyncio with httpx.AsyncClient."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import httpx

from .api import AsyncDriver, ClientApi
from .operations import Context, Priority
from .protocol import END, SKIP, Call, Plan, Reply, Sleep, StreamPlan, T
from .session import Session
from .transport import DEFAULT_TIMEOUT_S, connection_failed, reply_of, request_args


class AsyncTransport(AsyncDriver):
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def run(self, plan: Plan[T]) -> T:
        reply: Reply | None = None
        try:
            while True:
                step = plan.send(reply)
                if isinstance(step, Sleep):
                    await asyncio.sleep(step.seconds)
                    reply = None
                else:
                    reply = await self._send(step)
        except StopIteration as done:
            result: T = done.value
            return result

    async def _send(self, call: Call) -> Reply:
        try:
            if not call.stream:
                response = await self.http.request(call.method, call.path, **request_args(call))
                return reply_of(response, response.content)
            request = self.http.build_request(call.method, call.path, **request_args(call))
            response = await self.http.send(request, stream=True)
            if 200 <= response.status_code < 300:
                return reply_of(response, b"", response)
            try:
                return reply_of(response, await response.aread())
            finally:
                await response.aclose()
        except httpx.TransportError as exc:
            raise connection_failed(call, exc) from exc

    async def stream(self, plan: StreamPlan) -> AsyncIterator[Any]:
        response: httpx.Response = (await self.run(plan.open)).stream
        try:
            async for line in response.aiter_lines():
                item = plan.decode(line)
                if item is END:
                    return
                if item is not SKIP:
                    yield item
        except httpx.TransportError as exc:
            raise connection_failed(Call("GET", str(response.request.url)), exc) from exc
        finally:
            await response.aclose()


class AsyncGatewayClient(ClientApi[AsyncDriver]):
    """The gateway's Python SDK on asyncio; the same methods as `GatewayClient`, awaited
    (streams are async iterators).

        async with AsyncGatewayClient(url, username="ann", password="...") as gw:
            async for chunk in gw.chat_stream("llama3.2", messages):
                print(chunk["message"]["content"], end="")
    """

    def __init__(self, base_url: str, *, username: str | None = None, password: str | None = None,
                 api_key: str | None = None, token: str | None = None, refresh_token: str | None = None,
                 client_id: str | None = None, priority: Priority | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S, http: httpx.AsyncClient | None = None) -> None:
        session = Session(api_key=api_key, token=token, username=username, password=password,
                          refresh_token=refresh_token)
        self.http = http or httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout)
        super().__init__(AsyncTransport(self.http), Context(session, client_id, priority))

    @property
    def session(self) -> Session:
        return self._ctx.session

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncGatewayClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()
