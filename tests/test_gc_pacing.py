"""The garbage-collection pacer on CPython's real collector: what it freezes, when it thaws,
and that frozen garbage is collected at the thaw. `freeze_after_s=0` makes every full
collection "slow", so no test depends on how fast this machine collects; each test leaves the
collector as it found it (nothing frozen, no callback of ours)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from seadragon_gw.config import ConfigError, parse_config
from seadragon_gw.gc_pacing import GcPacer, gc_pacer_for
from tests.conftest import FakeClock

NEVER_CHECK_S = 3600.0  # the tests call check() themselves


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def pacers() -> Iterator[list[GcPacer]]:
    made: list[GcPacer] = []
    yield made
    for pacer in made:
        pacer.close()
    gc.unfreeze()


def started(pacers: list[GcPacer], busy: list[int], freeze_after_s: float = 0.0, thaw_every_s: float = 600.0,
            clock: FakeClock | None = None) -> GcPacer:
    pacer = GcPacer(freeze_after_s, thaw_every_s, clock=clock or FakeClock(0.0), check_every_s=NEVER_CHECK_S)
    pacers.append(pacer)
    pacer.start(asyncio.get_running_loop(), lambda: busy[0])
    return pacer


def tracked(obj: object) -> bool:
    """Whether the collector still visits `obj` (frozen objects are in no generation)."""
    return any(o is obj for o in gc.get_objects())


def pair() -> Node:
    """Two nodes that refer to each other: once the caller drops the one it holds, cyclic
    garbage that only the collector can free."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a


async def test_start_freezes_what_start_up_built(pacers: list[GcPacer]) -> None:
    before = Node()
    pacer = started(pacers, [0], freeze_after_s=3600.0)
    assert not tracked(before) and pacer.stats.freezes == 1
    after = Node()
    assert tracked(after)


async def test_a_slow_full_collection_freezes_its_survivors(pacers: list[GcPacer]) -> None:
    pacer = started(pacers, [1])
    survivor = Node()
    gc.collect()
    assert not tracked(survivor)
    assert pacer.stats.full_collections == 1 and pacer.stats.freezes == 2  # start-up, then this one


async def test_a_quick_full_collection_freezes_nothing(pacers: list[GcPacer]) -> None:
    pacer = started(pacers, [1], freeze_after_s=3600.0)
    survivor = Node()
    gc.collect()
    assert tracked(survivor)
    assert pacer.stats.full_collections == 1 and pacer.stats.freezes == 1
    assert 0 < pacer.stats.longest_s <= pacer.stats.seconds


async def test_young_collections_freeze_nothing_and_are_not_counted(pacers: list[GcPacer]) -> None:
    pacer = started(pacers, [1])
    survivor = Node()
    gc.collect(0)
    gc.collect(1)
    assert tracked(survivor)
    assert pacer.stats.full_collections == 0


async def test_frozen_garbage_is_kept_while_busy_and_collected_at_the_idle_thaw(pacers: list[GcPacer]) -> None:
    busy = [3]
    pacer = started(pacers, busy)
    held = pair()
    gc.collect()  # the pair is alive: frozen
    node = weakref.ref(held)
    del held
    gc.collect()
    assert node() is not None  # frozen: the collector does not see the pair is garbage
    assert pacer.check() is False and node() is not None  # requests in progress: no thaw
    busy[0] = 0
    assert pacer.check() is True
    assert node() is None and pacer.stats.thaws == 1
    assert pacer.check() is False  # nothing frozen since: nothing to thaw


async def test_a_gateway_never_idle_thaws_every_interval(pacers: list[GcPacer]) -> None:
    clock = FakeClock(0.0)
    pacer = started(pacers, [5], thaw_every_s=600.0, clock=clock)
    held = pair()
    gc.collect()
    node = weakref.ref(held)
    del held
    clock.advance(599)
    assert pacer.check() is False and node() is not None
    clock.advance(1)
    assert pacer.check() is True and node() is None


async def test_an_idle_gateway_thaws_its_start_up_state_every_interval(pacers: list[GcPacer]) -> None:
    """Start-up state may turn into cyclic garbage later (a reloaded file, a replaced backend):
    with nothing frozen since, an idle gateway still thaws once the interval has passed."""
    clock = FakeClock(0.0)
    pacer = started(pacers, [0], freeze_after_s=3600.0, clock=clock)
    assert pacer.check() is False
    clock.advance(600)
    assert pacer.check() is True and pacer.stats.thaws == 1


async def test_the_thaw_freezes_what_is_still_alive(pacers: list[GcPacer]) -> None:
    pacer = started(pacers, [0])
    alive = Node()
    gc.collect()
    pacer.thaw()
    assert not tracked(alive) and pacer.stats.freezes == 3  # start-up, the collection, the thaw's


async def test_measuring_only_freezes_nothing_and_never_thaws(pacers: list[GcPacer]) -> None:
    clock = FakeClock(0.0)
    pacer = GcPacer(None, 600.0, clock=clock, check_every_s=NEVER_CHECK_S)
    pacers.append(pacer)
    before = Node()
    pacer.start(asyncio.get_running_loop(), lambda: 0)
    gc.collect()
    clock.advance(601)
    assert pacer.check() is False
    assert tracked(before) and gc.get_freeze_count() == 0
    assert pacer.stats.full_collections == 1 and pacer.stats.freezes == 0 and pacer.stats.longest_s > 0


async def test_close_unfreezes_and_stops_watching(pacers: list[GcPacer]) -> None:
    pacer = started(pacers, [1])
    gc.collect()
    assert gc.get_freeze_count() > 0
    pacer.close()
    assert gc.get_freeze_count() == 0 and pacer._on_gc not in gc.callbacks
    gc.collect()
    assert pacer.stats.full_collections == 1


@pytest.mark.parametrize("raw, message", [
    ({"gc_freeze_after_ms": -1}, "server.gc_freeze_after_ms: must be 0 or more (leave it null to never freeze)"),
    ({"gc_freeze_after_ms": "soon"}, "server.gc_freeze_after_ms: expected float, got str 'soon'"),
    ({"gc_thaw_interval_s": 0}, "server.gc_thaw_interval_s: must be positive"),
])
def test_the_pacing_config_is_checked(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"server": raw})
    assert str(caught.value) == message


def test_the_config_makes_the_pacer() -> None:
    pacer = gc_pacer_for(parse_config({"server": {"gc_freeze_after_ms": 20, "gc_thaw_interval_s": 60}}))
    assert (pacer.freeze_after_s, pacer.thaw_every_s) == (0.02, 60)
    assert gc_pacer_for(parse_config({"server": {"gc_freeze_after_ms": None}})).freeze_after_s is None
    assert gc_pacer_for(parse_config({})).freeze_after_s == 0.005  # the default: 5 ms
