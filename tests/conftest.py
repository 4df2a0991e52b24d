"""Shared fixtures: fake backends and a gateway, each a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from seadragon_gw.app import create_app
from seadragon_gw.auth.passwords import PasswordHasher
from seadragon_gw.config import GatewayConfig, parse_config
from seadragon_gw.gateway import Clocks, Gateway
from tests.support.fakebackend import FakeBackend
from tests.support.server import ThreadedServer

T = TypeVar("T")

TOKENS = {
    "alice": "tok-alice",
    "bob": {"token": "tok-bob", "priority": 1},
    "carol": {"token": "tok-carol", "priority": 3},
    "root": {"token": "tok-admin", "priority": 2, "admin": True},
}
ALICE = {"Authorization": "Bearer tok-alice"}
ADMIN = {"Authorization": "Bearer tok-admin"}

# argon2id with tiny costs: the default ones take ~0.3 s a hash on a small test machine.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)

# Credential changes made by another process (the CLI) and last-used times show up within
# these intervals; the tests wait on conditions, so small values only make them quick.
FAST_AUTH = {"credentials_poll_s": 0.05, "last_used_flush_s": 0.05, "tokens_check_s": 0.02}


class FakeClock:
    """An injectable monotonic clock for aging tests."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class RunningGateway:
    server: ThreadedServer
    app: Any
    config: GatewayConfig
    tokens_path: Path

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def gateway(self) -> Gateway:
        """The gateway object; read its state only through `on_loop`."""
        gateway = self.app.state.gateway
        assert isinstance(gateway, Gateway)
        return gateway

    def on_loop(self, fn: Callable[[Gateway], T]) -> T:
        """`fn(gateway)` run on the server's event loop: the gateway's state belongs to that
        loop, so tests read and change it there, never from the test thread."""

        async def run() -> T:
            return fn(self.gateway)

        return self.server.call(run)

    def waiting(self, key: tuple[str, str | None] | None = None) -> int:
        """Requests waiting in the gateway's queues (of one queue key, if given)."""
        return self.on_loop(lambda g: g.scheduler.waiting(key))

    def active(self) -> list[int]:
        """Slots in use per backend."""
        return self.on_loop(lambda g: [b.active for b in g.registry.backends])

    def drained(self) -> bool:
        return self.on_loop(lambda g: g.scheduler.waiting() == 0 and all(b.active == 0 for b in g.registry.backends))

    def await_on_loop(self, fn: Callable[[Gateway], Awaitable[T]], timeout: float = 10) -> T:
        """`await fn(gateway)` on the server's event loop."""

        async def run() -> T:
            return await fn(self.gateway)

        return self.server.call(run, timeout=timeout)


@dataclass
class GatewayFactory:
    tmp_path: Path
    started: list[ThreadedServer] = field(default_factory=list)

    def config(self, backends: Sequence[FakeBackend | dict[str, Any]], **sections: Any) -> GatewayConfig:
        specs = [
            b if isinstance(b, dict) else {"name": f"b{i}", "kind": b.kind, "url": b.url, "max_concurrent": 1}
            for i, b in enumerate(backends)
        ]
        raw: dict[str, Any] = {"backends": specs, "auth": {"tokens_file": "tokens.json", **FAST_AUTH},
                               "database": "gw.db"}
        for section, values in sections.items():
            if isinstance(values, dict):
                raw.setdefault(section, {}).update(values)
            else:
                raw[section] = values
        config = parse_config(raw)
        config.base_dir = str(self.tmp_path)
        return config

    def start(self, backends: list[FakeBackend] | list[dict[str, Any]] | None = None, *,
              config: GatewayConfig | None = None, clock: Callable[[], float] | None = None,
              clocks: Clocks | None = None, tokens: dict[str, Any] | None = None,
              hasher: PasswordHasher = FAST_HASHER, uvicorn: dict[str, Any] | None = None,
              **sections: Any) -> RunningGateway:
        """A gateway on a real uvicorn server, run as `seadragon-gw serve` runs it (the
        gateway's protocol and limits, `proxy_headers=False`), in front of `backends`.

        `sections` are config sections (`queue={...}`); `clock` is the queue's monotonic clock
        (aging tests), `clocks` both clocks; `uvicorn` overrides server options.
        """
        tokens_path = self.tmp_path / "tokens.json"
        tokens_path.write_text(json.dumps(TOKENS if tokens is None else tokens))
        config = config or self.config(backends or [], **sections)
        clocks = clocks or (Clocks(monotonic=clock) if clock else None)
        app = create_app(config, clocks, hasher=hasher)
        server = ThreadedServer(app, server=config.server, **(uvicorn or {})).start()
        self.started.append(server)
        return RunningGateway(server, app, config, tokens_path)

    def close(self) -> None:
        for server in reversed(self.started):
            server.stop()


@pytest.fixture
def backend() -> Iterator[FakeBackend]:
    with FakeBackend() as fb:
        yield fb


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[GatewayFactory]:
    factory = GatewayFactory(tmp_path)
    yield factory
    factory.close()


@pytest.fixture
def gw(gateways: GatewayFactory, backend: FakeBackend) -> RunningGateway:
    """A gateway in front of one fake Ollama backend with one slot."""
    return gateways.start([backend])
