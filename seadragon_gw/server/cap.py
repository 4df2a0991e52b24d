"""The open-connection cap and its one WARNING line."""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("seadragon_gw.server")


@dataclass
class ConnectionCap:
    """Shared by every connection of one server: whether the cap WARNING is due.

    One line when the cap is reached, not one per refused connection; the next one only after
    the count fell to `rearm_at` and the cap was reached again.
    """

    limit: int
    rearm_at: int
    warned: bool = False

    def refused(self) -> None:
        """A connection was refused because `limit` are open."""
        if not self.warned:
            self.warned = True
            log.warning("%d connections are open (server.max_connections): new connections are "
                        "refused with 503 until some close", self.limit)

    def closed(self, still_open: int) -> None:
        """An accepted connection closed, leaving `still_open`."""
        if self.warned and still_open <= self.rearm_at:
            self.warned = False
