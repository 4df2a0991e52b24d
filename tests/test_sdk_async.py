"""AsyncGatewayClient: the same operations as the sync client, awaited, over one shared
request-building module; streams are async iterators."""

from __future__ import annotations

import asyncio
import time

import httpx

from seadragon_gw.client import AsyncGatewayClient, NotFound, PermissionDenied
from seadragon_gw.client.aio import AsyncTransport
from seadragon_gw.client.api import ClientApi
from seadragon_gw.client.sync import GatewayClient, SyncTransport
from seadragon_gw.gateway import Clocks
from tests.conftest import FakeClock, GatewayFactory, RunningGateway
from tests.support.fakebackend import FakeBackend

HELLO = [{"role": "user", "content": "hello"}]
PASSWORD = "a-long-password-1"


async def gateway_with_ann(gateways: GatewayFactory, backend: FakeBackend) -> tuple[RunningGateway, FakeClock]:
    """A gateway whose access tokens live 60 s on a clock the test moves, and a user "ann"."""
    wall = FakeClock(time.time())
    gw = gateways.start([backend], clocks=Clocks(wall=wall), auth={"jwt_access_ttl_s": 60})
    async with AsyncGatewayClient(gw.url, token="tok-admin") as admin:
        token = (await admin.admin.create_registration_token())["token"]
    async with AsyncGatewayClient(gw.url) as anonymous:
        await anonymous.request("POST", "/auth/register", body={
            "username": "ann", "password": PASSWORD, "registration_token": token})
    return gw, wall


async def test_inference_streams_and_jobs(gw: RunningGateway, backend: FakeBackend) -> None:
    async with AsyncGatewayClient(gw.url, token="tok-alice", client_id="async-ci") as alice:
        assert (await alice.chat("llama3", HELLO))["done"] is True
        chunks = [chunk async for chunk in alice.chat_stream("llama3", HELLO)]
        assert len(chunks) == backend.chunks + 1 and chunks[-1]["done"] is True
        events = [event async for event in alice.chat_completion_stream("llama3", HELLO)]
        assert events[-1]["choices"][0]["finish_reason"] == "stop"
        assert len((await alice.embed("nomic-embed-text", "a"))["embeddings"]) == 1
        answers = await asyncio.gather(*(alice.generate("llama3", f"n{i}") for i in range(3)))
        assert [a["done"] for a in answers] == [True, True, True]
        job = await alice.jobs.submit("/api/chat", {"model": "llama3", "messages": HELLO})
        done = await alice.jobs.wait(job["request_id"], timeout=10, poll_s=0.02)
        assert done["status"] == "completed"
        assert (await alice.queue.status())["waiting"] == []
        assert (await alice.me())["name"] == "alice"


async def test_errors_are_typed(gw: RunningGateway) -> None:
    async with AsyncGatewayClient(gw.url, token="tok-alice") as alice:
        try:
            await alice.chat("ghost", HELLO)
        except NotFound as exc:
            assert (exc.status, exc.message) == (404, "model 'ghost' not found")
        else:
            raise AssertionError("no error")
        try:
            await alice.admin.stats()
        except PermissionDenied as exc:
            assert exc.status == 403
        else:
            raise AssertionError("no error")


async def test_refresh_on_expiry_with_concurrent_calls(gateways: GatewayFactory, backend: FakeBackend) -> None:
    gw, wall = await gateway_with_ann(gateways, backend)
    async with AsyncGatewayClient(gw.url, username="ann", password=PASSWORD) as ann:
        assert (await ann.me())["name"] == "ann"
        before = ann.session.token
        wall.advance(61)
        names = await asyncio.gather(*(ann.me() for _ in range(3)))
        assert [n["name"] for n in names] == ["ann"] * 3
        assert ann.session.token != before


def test_both_clients_are_one_declaration() -> None:
    """The sync and async clients share every operation (api.ClientApi); only the transport differs."""
    assert issubclass(GatewayClient, ClientApi) and issubclass(AsyncGatewayClient, ClientApi)
    assert GatewayClient.chat is AsyncGatewayClient.chat
    assert set(vars(GatewayClient)) - set(vars(ClientApi)) <= {"__init__", "session", "close", "__enter__",
                                                              "__exit__", "__doc__", "__module__",
                                                              "__parameters__", "__orig_bases__"}
    assert SyncTransport.__mro__[1].__name__ == "SyncDriver" and AsyncTransport.__mro__[1].__name__ == "AsyncDriver"


async def test_concurrent_calls_log_in_once_and_refresh_once(gateways: GatewayFactory, backend: FakeBackend) -> None:
    """Ten calls at once, first with no token, then with an expired one: one login, one refresh
    (each refresh ends the old refresh token, and each login costs the gateway a password hash)."""
    gw, wall = await gateway_with_ann(gateways, backend)
    sent: list[str] = []

    async def note(request: httpx.Request) -> None:
        sent.append(f"{request.method} {request.url.path}")

    http = httpx.AsyncClient(base_url=gw.url, event_hooks={"request": [note]})
    async with AsyncGatewayClient(gw.url, username="ann", password=PASSWORD, http=http) as ann:
        names = await asyncio.gather(*(ann.me() for _ in range(10)))
        assert [n["name"] for n in names] == ["ann"] * 10
        assert sent.count("POST /auth/token") == 1 and sent.count("GET /auth/me") == 10
        wall.advance(61)  # the access token has expired
        names = await asyncio.gather(*(ann.me() for _ in range(10)))
        assert [n["name"] for n in names] == ["ann"] * 10
        assert sent.count("POST /auth/refresh") == 1, sent
        assert sent.count("POST /auth/token") == 1, sent
        kept = ann.session.refresh_token
    sent.clear()
    http = httpx.AsyncClient(base_url=gw.url, event_hooks={"request": [note]})
    async with AsyncGatewayClient(gw.url, refresh_token=kept, http=http) as resumed:  # no password
        names = await asyncio.gather(*(resumed.me() for _ in range(5)))
        assert [n["name"] for n in names] == ["ann"] * 5
    assert sent.count("POST /auth/refresh") == 1 and sent.count("POST /auth/token") == 0, sent
