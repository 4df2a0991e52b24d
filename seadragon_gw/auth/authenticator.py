"""Deciding who a request is from, and whether that may reach a route."""

from __future__ import annotations

from typing import Literal

from starlette.types import Scope

from ..api.errors import ApiError
from ..config import AuthConfig
from .principal import ANONYMOUS, Principal
from .tokens_file import TokenFile

Access = Literal["read", "user", "admin"]
UNAUTHORIZED = "unauthorized: missing or invalid credentials"


def bearer_token(headers: dict[bytes, bytes]) -> str | None:
    value = headers.get(b"authorization")
    if value is None:
        return None
    scheme, _, token = value.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class Authenticator:
    """`authenticate` returns the caller's Principal or raises 401/403 as an ApiError.

    `read` routes (`/`, `/api/version`, `/api/tags`) admit anonymous callers when
    `auth.anonymous_read` is on: Cline's model picker and Roo's embedder send no header.
    """

    def __init__(self, config: AuthConfig, tokens: TokenFile) -> None:
        self.config = config
        self.tokens = tokens

    def authenticate(self, scope: Scope, headers: dict[bytes, bytes], access: Access) -> Principal:
        principal = self.identify(scope, headers)
        if principal is None:
            if access == "read" and self.config.anonymous_read:
                return ANONYMOUS
            raise ApiError(401, UNAUTHORIZED, {"WWW-Authenticate": "Bearer"})
        if access == "admin" and not principal.is_admin:
            raise ApiError(403, "forbidden: this route needs an admin credential")
        return principal

    def identify(self, scope: Scope, headers: dict[bytes, bytes]) -> Principal | None:
        token = bearer_token(headers)
        if token is None:
            return None
        principal = self.tokens.lookup(token)
        if principal is None:
            raise ApiError(401, UNAUTHORIZED, {"WWW-Authenticate": "Bearer"})
        return principal
