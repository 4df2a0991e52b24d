"""Full garbage collections kept short while thousands of requests wait.

CPython's cyclic collector runs a full collection about every 70,000 objects the heap grows by
(once the old generation has also grown by a quarter), and a full collection visits every object
it tracks. A waiting stream is ~45 of them, so with 10,000 streams arriving, each full
collection visited more than the last: six ran while they connected, the last took 113 ms, and
every stream on the gateway stalled for ~380 ms in all (bench/RESULTS.md). Nothing in them was
garbage.

What survives a full collection is alive at that moment: start-up state, and requests that
stay alive until they end, when reference counting frees them (10,000 closed streams left
837 objects for the collector). So after a full collection that took at least
`freeze_after_s`, its survivors are frozen (`gc.freeze()`, which splices the generation lists:
O(1)). Later collections skip them; each full collection again visits only what came since.

The price: cyclic garbage that includes a frozen object is not collected while it is frozen.
So the pacer thaws (`gc.unfreeze()`, a full collection, then a freeze of what survived it)
when the gateway holds no request, the heap then being at its smallest, once something was
frozen since the last thaw or `thaw_every_s` has passed; and, on a gateway that is never idle,
at least every `thaw_every_s` whatever it holds (one long collection then, not one per quarter
of growth).

With `freeze_after_s` None the pacer freezes nothing and only measures the full collections
(`/metrics` shows them either way). Process-wide, as the collector is: `seadragon-gw serve`
makes one and hands it to the app; an app built in a test has none unless the test gives it
one.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .config import GatewayConfig

CHECK_EVERY_S = 1.0  # how often the pacer looks whether it is time to thaw


@dataclass
class GcStats:
    """Full collections since the pacer started (`seconds`: their total pause; `longest`: the
    longest one), and how often survivors were frozen and thawed."""

    full_collections: int = 0
    seconds: float = 0.0
    longest_s: float = 0.0
    freezes: int = 0
    thaws: int = 0


class GcPacer:
    def __init__(self, freeze_after_s: float | None, thaw_every_s: float, *,
                 clock: Callable[[], float] = time.monotonic, check_every_s: float = CHECK_EVERY_S) -> None:
        """`clock` times the thaws (a test moves it); pauses are timed on `time.perf_counter`."""
        self.freeze_after_s = freeze_after_s
        self.thaw_every_s = thaw_every_s
        self.stats = GcStats()
        self._clock = clock
        self._check_every_s = check_every_s
        self._busy: Callable[[], int] = lambda: 0
        self._began = 0.0
        self._frozen = False  # something was frozen since the last thaw
        self._thawing = False
        self._last_thaw = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop, busy: Callable[[], int]) -> None:
        """Freeze the start-up state (unless measuring only), then watch full collections.
        `busy()`: how many requests the gateway holds (waiting or served); 0 is the moment to thaw."""
        self._busy, self._loop = busy, loop
        if self.freeze_after_s is not None:
            gc.collect()
            gc.freeze()  # what start-up built lives as long as the process
            self.stats.freezes += 1
            self._last_thaw = self._clock()
            self._timer = loop.call_later(self._check_every_s, self._tick)
        gc.callbacks.append(self._on_gc)

    def close(self) -> None:
        """Stop watching, and hand everything frozen back to the collector."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        gc.unfreeze()

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        """A `gc.callbacks` entry: runs before and after every collection, in whichever thread
        triggered it; young collections return at the first compare."""
        if info["generation"] != 2:
            return
        if phase == "start":
            self._began = time.perf_counter()
            return
        took = time.perf_counter() - self._began
        stats = self.stats
        stats.full_collections += 1
        stats.seconds += took
        if took > stats.longest_s:
            stats.longest_s = took
        after = self.freeze_after_s
        if after is not None and took >= after and not self._thawing:  # a thaw freezes once it is done
            gc.freeze()  # the collection is over: the lists are whole, and all it kept is alive
            stats.freezes += 1
            self._frozen = True

    def _tick(self) -> None:
        assert self._loop is not None
        self._timer = self._loop.call_later(self._check_every_s, self._tick)
        self.check()

    def check(self) -> bool:
        """Thaw if it is time (see the module docstring); True if it thawed."""
        if self.freeze_after_s is None:
            return False  # nothing is ever frozen
        due = self._clock() - self._last_thaw >= self.thaw_every_s
        if due or (self._frozen and self._busy() == 0):
            self.thaw()
            return True
        return False

    def thaw(self) -> None:
        """Give the frozen objects back, collect them all once, freeze what is still alive."""
        gc.unfreeze()
        self._thawing = True
        try:
            gc.collect()
        finally:
            self._thawing = False
        gc.freeze()
        self.stats.freezes += 1
        self.stats.thaws += 1
        self._frozen = False
        self._last_thaw = self._clock()


def gc_pacer_for(config: GatewayConfig) -> GcPacer:
    """The process's pacer as `server.gc_freeze_after_ms` / `gc_thaw_interval_s` say."""
    after_ms = config.server.gc_freeze_after_ms
    return GcPacer(None if after_ms is None else after_ms / 1000.0, config.server.gc_thaw_interval_s)
