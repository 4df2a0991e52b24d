"""Module-scoped gateways, so files with many small HTTP tests do not start a server per test.

A gateway starts in about half a second, so a file of 40 tests against fresh gateways spends
most of its time starting and stopping servers. `SharedGateways` keeps one fake Ollama backend
and one gateway per distinct configuration for a whole module; `fresh()` forgets what the last
test did to the backend (recorded requests, holds, delays, forced statuses). Tests that change
state which `FakeBackend.reset()` does not restore (its model list, tokens.json) must use the
function-scoped `gateways`/`backend` fixtures instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GatewayFactory, RunningGateway
from tests.support.fakebackend import FakeBackend


class SharedGateways:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.backend = FakeBackend().start()
        self._factories: list[GatewayFactory] = []
        self._started: dict[str, RunningGateway] = {}

    def get(self, backends: list[dict[str, Any]] | None = None, **sections: Any) -> RunningGateway:
        """The gateway for this configuration (default: the shared backend), started once."""
        key = json.dumps([backends, sections], sort_keys=True)
        if key not in self._started:
            factory = GatewayFactory(self.tmp / f"gw{len(self._factories)}")
            factory.tmp_path.mkdir(parents=True)
            self._factories.append(factory)
            self._started[key] = factory.start(backends if backends is not None else [self.backend], **sections)
        return self._started[key]

    def fresh(self) -> FakeBackend:
        self.backend.reset()
        return self.backend

    def close(self) -> None:
        for factory in reversed(self._factories):
            factory.close()
        self.backend.stop()


def module_gateways(name: str) -> Any:
    """A module-scoped `SharedGateways` fixture: `shared = module_gateways("errors")` in a test file."""

    @pytest.fixture(scope="module")
    def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedGateways]:
        gateways = SharedGateways(tmp_path_factory.mktemp(name))
        yield gateways
        gateways.close()

    return shared


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
