"""The HTTP server's edges: limits on what one client can make uvicorn hold or parse.

`uvicorn_options(config.server)` is what both `seadragon-gw serve` and the test servers pass to
uvicorn; it plugs in `GatewayHttpProtocol` (head limits, deadlines, connection cap, redacted
access log).
"""

from .limits import EdgeLimits
from .options import uvicorn_options
from .protocol import GatewayHttpProtocol, protocol_class
from .redact import redact_target

__all__ = ["EdgeLimits", "GatewayHttpProtocol", "protocol_class", "redact_target", "uvicorn_options"]
