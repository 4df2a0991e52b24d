"""Module-scoped gateways, so files with many small HTTP tests do not start a server per test.

Every gateway in the suite is started by `GatewayFactory.start` (tests/conftest.py): the
function-scoped `gateways` fixture for tests that change what a reset does not restore, and
`SharedGateways` here, which keeps one fake Ollama backend and one gateway per distinct
configuration for a whole module. `fresh()` forgets what the last test did to the backend
(recorded requests, holds, delays, forced statuses); `settle()` also waits until every
gateway's queues and slots are empty, so tests cannot see each other.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import GatewayFactory, RunningGateway
from tests.support.fakebackend import FakeBackend
from tests.support.gwclient import GatewayClient, wait_until


class SharedGateways:
    def __init__(self, mktemp: Callable[[str], Any], headers: dict[str, str] | None = None) -> None:
        self._mktemp = mktemp
        self.headers = headers or {}
        self.backend = FakeBackend().start()
        self._started: dict[str, tuple[GatewayFactory, RunningGateway]] = {}
        self._clients: dict[str, GatewayClient] = {}

    def get(self, backends: list[dict[str, Any]] | None = None, *, clock: Callable[[], float] | None = None,
            **sections: Any) -> RunningGateway:
        """The gateway for this configuration (default: the shared backend), started once."""
        key = json.dumps([backends, id(clock) if clock else None, sections], sort_keys=True, default=str)
        if key not in self._started:
            factory = GatewayFactory(self._mktemp("gw"))
            gw = factory.start(backends if backends is not None else [self.backend], clock=clock, **sections)
            self._started[key] = (factory, gw)
        return self._started[key][1]

    def queued(self, clock: Callable[[], float] | None = None, **queue: Any) -> tuple[RunningGateway, GatewayClient]:
        """A gateway with these `queue:` settings and a client for it (queue tests)."""
        gw = self.get(clock=clock, queue=queue)
        if gw.url not in self._clients:
            self._clients[gw.url] = GatewayClient(gw.url, self.headers)
        return gw, self._clients[gw.url]

    def fresh(self) -> FakeBackend:
        self.backend.reset()
        return self.backend

    def settle(self) -> None:
        self.backend.reset()
        for _, gw in self._started.values():
            wait_until(gw.drained, "the gateway to drain after the test")
        self.backend.wait_idle()
        self.backend.reset()

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        for factory, _ in reversed(list(self._started.values())):
            factory.close()
        self.backend.stop()


def module_gateways(name: str, headers: dict[str, str] | None = None) -> Any:
    """A module-scoped `SharedGateways` fixture: `shared = module_gateways("errors")` in a test file."""

    @pytest.fixture(scope="module")
    def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedGateways]:
        root = tmp_path_factory.mktemp(name)
        counter = iter(range(10**6))
        gateways = SharedGateways(lambda prefix: _subdir(root, f"{prefix}{next(counter)}"), headers)
        yield gateways
        gateways.close()

    return shared


def _subdir(root: Any, name: str) -> Any:
    path = root / name
    path.mkdir()
    return path


def shared_fixtures(name: str) -> tuple[Any, Any, Any]:
    """`shared, backend, gw = shared_fixtures("errors")`: the module's SharedGateways, its fake
    Ollama with the last test's requests and scripting forgotten, and the default gateway."""
    shared = module_gateways(name)

    @pytest.fixture
    def backend(shared: SharedGateways) -> FakeBackend:
        return shared.fresh()

    @pytest.fixture
    def gw(shared: SharedGateways, backend: FakeBackend) -> RunningGateway:
        return shared.get()

    return shared, backend, gw


Fleet = SharedGateways


def fleet_fixtures(headers: dict[str, str]) -> tuple[Any, Any]:
    """`module_fleet, fleet = fleet_fixtures(ALICE)`: the module's SharedGateways (queue tests
    use `fleet.queued(...)`), settled after every test."""
    module_fleet = module_gateways("fleet", headers)

    @pytest.fixture
    def fleet(module_fleet: SharedGateways) -> Iterator[SharedGateways]:
        yield module_fleet
        module_fleet.settle()

    return module_fleet, fleet
