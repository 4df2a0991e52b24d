"""The numbers that bound what one client may make the HTTP server hold or parse."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ServerConfig


@dataclass(frozen=True)
class EdgeLimits:
    """Limits enforced per connection by `GatewayHttpProtocol`.

    The head limits are fixed (no legitimate client of an LLM API comes near them); the
    deadlines and the connection cap come from `server.*` in the config.
    """

    max_header_fields: int = 100
    max_field_bytes: int = 8 * 1024  # one header field: name + value
    max_head_bytes: int = 64 * 1024  # request line + all header fields + line ends
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keepalive_s: float = 5.0  # an idle kept-alive connection is closed after this
    max_connections: int = 1024

    @classmethod
    def from_config(cls, server: ServerConfig) -> EdgeLimits:
        return cls(header_timeout_s=server.header_timeout_s, body_timeout_s=server.body_timeout_s,
                   keepalive_s=server.keepalive_s, max_connections=server.max_connections)

    @property
    def rearm_connections(self) -> int:
        """Open connections at or below which a later return to the cap is worth a new WARNING.

        Hysteresis of a tenth of the cap: under a flood held at the cap, every close lets one
        new connection in, and a WARNING per such turn would be the log flood the cap prevents.
        """
        return self.max_connections - max(1, self.max_connections // 10)
