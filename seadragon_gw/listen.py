"""The listening socket, bound before anything else starts.

Binding first turns "port in use" into one clear line and exit code 2 before the gateway opens
its database, contacts backends or says it is ready; uvicorn then serves on this socket.
"""

from __future__ import annotations

import errno
import socket


class ListenError(Exception):
    """The address cannot be bound; `in_use` tells the common case apart."""

    def __init__(self, reason: str, *, in_use: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.in_use = in_use


def bind(host: str, port: int) -> socket.socket:
    """A bound (not yet listening) TCP socket for host:port, or `ListenError`."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"unknown address: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # As asyncio does: a restart may reuse a port whose old connections sit in TIME_WAIT;
        # a port another process listens on still fails with EADDRINUSE.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        in_use = exc.errno == errno.EADDRINUSE
        raise ListenError("address already in use" if in_use else (exc.strerror or str(exc)),
                          in_use=in_use) from None
    return sock
