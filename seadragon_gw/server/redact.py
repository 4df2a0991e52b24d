"""Keep credentials out of the access log.

uvicorn's access line carries the request target, and a revoke URL carries a whole API key
(`DELETE /api/admin/apikeys/sdk-...`); a client may also put a key in the query string. The
line keeps what an operator needs to tell requests apart: a secret's display prefix (`sdk-` +
8 characters, as `seadragon-gw admin keys` shows it), a query parameter's name, never its value.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import quote, unquote_plus

from ..secret_tokens import DISPLAY_PREFIX_LEN

# API keys (`sdk-`) and registration tokens (`sdr-`): the display prefix, then the rest.
_SECRET = re.compile(rf"(sd[kr]-[A-Za-z0-9_-]{{{DISPLAY_PREFIX_LEN - 4}}})[A-Za-z0-9_-]+")
_KEEP_PREFIX = r"\1..."
_SECRET_NAMES = ("token", "key", "secret", "password")
REDACTED = "[redacted]"


def redact_target(target: str) -> str:
    """`target` (a path with its query string) with secrets cut to their display prefix.

    Query parameters whose (decoded) name ends in token/key/secret/password lose their value
    whatever it is; a secret found elsewhere keeps its display prefix only. Control characters
    (a decoded `%0A` in the path) are escaped so a request cannot forge log lines.
    """
    path, sep, query = target.partition("?")
    if "-" in path:
        path = _SECRET.sub(_KEEP_PREFIX, path)
    if sep:
        query = "&".join(_redact_pair(pair) for pair in query.split("&"))
    line = path + sep + query
    return line if line.isprintable() else line.encode("unicode_escape").decode("ascii")


def _redact_pair(pair: str) -> str:
    name, eq, value = pair.partition("=")
    if eq and unquote_plus(name).lower().endswith(_SECRET_NAMES):
        return f"{name}={REDACTED}"
    decoded = unquote_plus(value)
    if _SECRET.search(decoded):  # also catches a percent-encoded key (`%73dk-...`)
        return name + eq + quote(_SECRET.sub(_KEEP_PREFIX, decoded), safe="")
    return pair


class RedactingAccessLogger(logging.LoggerAdapter[logging.Logger]):
    """The `uvicorn.access` logger as uvicorn's request cycle calls it, with every string
    argument (the request target among them) passed through `redact_target` first."""

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        super().info(msg, *[redact_target(a) if isinstance(a, str) else a for a in args], **kwargs)
