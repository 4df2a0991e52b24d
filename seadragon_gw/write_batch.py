"""Socket writes gathered per turn of the event loop, so the peers are woken once, not each time.

On this kind of machine (a VM whose idle cores halt at once: `guest_halt_poll_ns` 0) a write
to a peer whose core is idle makes the kernel wake that core with an inter-processor
interrupt, and sending one costs the writer a VM exit: ~15-20 us of system time, as much as
the gateway's whole socket work per request. Under load the gateway is the slowest process:
its peers (clients, backends) answer a request in a few microseconds and go idle again before
the gateway, busy with the next request, writes to them once more. So nearly every write
woke a core: 1.2 interrupts per proxied request, against nginx's none (/proc/interrupts;
bench/RESULTS.md).

`WriteBatch.write` holds the writes of a turn while other requests are in progress, until the
loop has run what was ready (one `call_soon`); they then leave back to back, and the peers
wake once and find the whole turn's work. Holding every write of a turn measured better than
sending the first at once and holding the rest (same run: 1.18 -> 0.26 interrupts and 150 ->
127 us of CPU per request at c=16, against 1.18 -> 0.63 and no CPU change): the peers answer
in bursts, and the gateway then reads them in fewer, larger turns. A lone request (the only
one in progress) is sent at once, as before: holding its answer would delay it by the rest of
its own turn (the record, the release: +37 us at c=1 in that run), and holding its request to
the backend cost an idle loop turn (+11 us p50 at c=1). "Alone" is the server's to say (its
set of request tasks, `DirectBody.alone`), for its answers and, through the proxy, for the
requests it sends upstream: a backend pool alone cannot tell, since at the start of a burst
the pool has nothing else in flight while the burst's other requests are about to be sent.

Order on a connection: a held write is the whole of something (an answer, a request), and the
connection's next bytes come from a later request or from bytes that arrive on it; the owner
of such a connection calls `flush` before it writes anything else (the server protocol does
in `data_received` and `shutdown`). A held write whose transport is closing by the time the
batch leaves is dropped, as the transport would have dropped it.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("seadragon_gw.writes")


class WriteBatch:
    """The held writes of one turn of the loop (one batch per server, one per backend pool).
    `held` is the owner's "anything waiting?" check."""

    __slots__ = ("held", "_open")

    def __init__(self) -> None:
        self.held: list[tuple[asyncio.WriteTransport, bytes]] = []
        self._open = False  # writes are held this turn and the flush is scheduled

    def write(self, transport: asyncio.WriteTransport, data: bytes, loop: asyncio.AbstractEventLoop,
              alone: bool) -> None:
        """`alone`: the writer's only request in progress (nothing else will write this turn):
        sent at once. Otherwise held, and sent with the turn's others once the loop has run
        what was ready."""
        if alone and not self._open:
            transport.write(data)
            return
        if not self._open:
            self._open = True
            loop.call_soon(self.flush)
        self.held.append((transport, data))

    def flush(self) -> None:
        """Send what is held, in the order it came, and start a new turn."""
        self._open = False
        held = self.held
        if not held:
            return
        self.held = []
        for transport, data in held:
            if transport.is_closing():
                continue
            try:
                transport.write(data)
            except RuntimeError:  # closed between the check and the write: it is gone either way
                log.debug("a held write found its transport closed", exc_info=True)
