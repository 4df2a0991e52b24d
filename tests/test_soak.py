"""A bounded mixed load with clients giving up at random moments: no slot or queue entry leaks.

Races between a grant, a timeout and a disconnect are where a gateway loses capacity for good
(a slot that is never given back). This drives 240 requests through two slots, native and /v1,
streamed and not, a third of them cancelled at a random point (queued, waiting for headers or
mid-stream), then checks that every slot and queue is empty and the gateway still serves.
"""

from __future__ import annotations

import asyncio
import random

import httpx
import orjson

from tests.conftest import ALICE, GatewayFactory
from tests.support.fakebackend import FakeBackend
from tests.support.gwclient import wait_until

REQUESTS = 240
CONCURRENCY = 24


def body(i: int) -> tuple[str, dict]:
    messages = [{"role": "user", "content": f"soak {i}"}]
    native = i % 2 == 0
    stream = i % 4 < 2
    path = "/api/chat" if native else "/v1/chat/completions"
    return path, {"model": "llama3", "messages": messages, "stream": stream}


async def complete(client: httpx.AsyncClient, i: int) -> None:
    """One request read to the end; a finished answer must be whole."""
    path, payload = body(i)
    async with client.stream("POST", path, json=payload) as response:
        assert response.status_code == 200, (i, response.status_code)
        lines = [line async for line in response.aiter_lines() if line]
    if path == "/api/chat" and payload["stream"]:
        assert orjson.loads(lines[-1])["done"] is True
    elif payload["stream"]:
        assert lines[-1] == "data: [DONE]"
    else:
        assert orjson.loads("".join(lines))


async def drive(url: str, seed: int) -> tuple[int, int]:
    rng = random.Random(seed)
    limit = asyncio.Semaphore(CONCURRENCY)
    finished = cancelled = 0

    async def one(client: httpx.AsyncClient, i: int) -> None:
        nonlocal finished, cancelled
        async with limit:
            task = asyncio.create_task(complete(client, i))
            if rng.random() < 1 / 3:
                await asyncio.sleep(rng.uniform(0, 0.08))
                task.cancel()
            try:
                await task
                finished += 1
            except asyncio.CancelledError:
                cancelled += 1

    async with httpx.AsyncClient(base_url=url, headers=ALICE, timeout=10) as client:
        await asyncio.gather(*(one(client, i) for i in range(REQUESTS)))
    return finished, cancelled


def test_random_cancellations_leak_no_slot(gateways: GatewayFactory) -> None:
    with FakeBackend(chunks=5) as fake:
        fake.delay_s = 0.01  # answers overlap, so requests really queue behind two slots
        gw = gateways.start([{"name": "b0", "kind": "ollama", "url": fake.url, "max_concurrent": 2}],
                            queue={"sse_keepalive_s": 0.02})
        finished, cancelled = asyncio.run(drive(gw.url, seed=7))
        assert finished + cancelled == REQUESTS and cancelled > 20 and finished > 100

        wait_until(gw.drained, "slots and queues to drain")
        fake.wait_idle()
        assert len(fake.inference_requests()) < REQUESTS  # some left while still queued
        reply = httpx.post(gw.url + "/api/chat", headers=ALICE, json={**body(0)[1], "stream": False}, timeout=10)
        assert reply.status_code == 200 and reply.json()["done"] is True
