"""How the gateway's uvicorn server is configured: the one place `serve` and the tests share."""

from __future__ import annotations

from typing import Any

from ..config import ServerConfig
from .limits import EdgeLimits
from .protocol import protocol_class


def uvicorn_options(server: ServerConfig) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run(app, **...)` / `uvicorn.Config(app, **...)`.

    Call it once per server: the protocol class in it carries that server's connection cap and
    deadline sweep. Override `host`/`port` with command-line values by updating the dict.
    `proxy_headers=False`: the gateway decides itself (auth.trusted_proxies) whose forwarded
    address to believe; uvicorn's default would rewrite the client address before it looks.
    `interface="asgi3"`: the app's `__call__` returns the route's coroutine itself (api/
    fastpath.py), which uvicorn's guess would take for an ASGI 2 app.
    """
    return {
        "host": server.host,
        "port": server.port,
        "http": protocol_class(EdgeLimits.from_config(server)),
        "log_level": server.log_level,
        "access_log": server.access_log,
        "interface": "asgi3",
        "proxy_headers": False,
        "server_header": False,
        "timeout_keep_alive": server.keepalive_s,
        "timeout_graceful_shutdown": server.shutdown_grace_s,
        "ws_max_size": server.max_body_bytes,  # a WebSocket message is a request body too (/api/ws)
    }
