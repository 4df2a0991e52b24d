"""Deciding who a request is from, and whether that may reach a route.

Resolution order: an explicit credential (tokens.json token, API key, JWT) decides, and an
invalid one is 401 even from a whitelisted address; with no credential the IP whitelist
decides; otherwise the caller is anonymous (allowed on read routes only, if configured).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Literal

from starlette.types import Scope

from ..config import AuthConfig
from ..errors import InvalidInput
from ..model_names import model_key
from ..secret_tokens import hash_secret
from ..store.api_keys import ApiKey
from ..store.write_behind import LastUsedBatcher
from .client_ip import ClientAddress
from .credentials import CredentialCache
from .errors import Forbidden, Unauthorized
from .jwt_tokens import JwtCodec, JwtError, token_generation
from .principal import ANONYMOUS, Principal
from .tokens_file import TokenFile

Access = Literal["read", "user", "admin"]
PRIORITY_LEVELS = {"high": 1, "normal": 2, "low": 3}


def bearer_token(headers: dict[bytes, bytes]) -> str | None:
    """The Bearer credential, None without an Authorization header; any other scheme or an
    empty token is an invalid explicit credential (401), never "no credential"."""
    value = headers.get(b"authorization")
    if value is None:
        return None
    scheme, _, token = value.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization must be 'Bearer <token>'")
    return token.strip()


class Authenticator:
    """`authenticate` returns the caller's Principal or raises `Unauthorized`/`Forbidden`.

    `read` routes (`/`, `/api/version`, `/api/tags`) admit anonymous callers when
    `auth.anonymous_read` is on: Cline's model picker and Roo's embedder send no header.
    """

    def __init__(self, config: AuthConfig, tokens: TokenFile, cache: CredentialCache, jwt: JwtCodec,
                 last_used: LastUsedBatcher, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.tokens = tokens
        self.cache = cache
        self.addresses = ClientAddress(config.trusted_proxies)
        self.last_used = last_used
        self.jwt = jwt
        self.clock = clock

    def authenticate(self, scope: Scope, headers: dict[bytes, bytes], access: Access) -> Principal:
        principal = self.identify(scope, headers)
        if principal is None:
            if access == "read" and self.config.anonymous_read:
                return ANONYMOUS
            raise Unauthorized()
        if access == "admin" and not principal.is_admin:
            raise Forbidden("forbidden: this route needs an admin credential")
        return _with_request_hints(principal, headers)

    def identify(self, scope: Scope, headers: dict[bytes, bytes]) -> Principal | None:
        api_key = headers.get(b"x-api-key")
        if api_key is not None:
            return self._api_key(api_key.decode("latin-1").strip())
        token = bearer_token(headers)
        if token is not None:
            return self._bearer(token)
        entry = self.cache.snapshot.whitelist.match(self.addresses.resolve(scope, headers))
        if entry is None:
            return None
        return Principal(kind="whitelist", name=entry.label or entry.network, priority=entry.priority)

    def _bearer(self, token: str) -> Principal:
        principal = self.tokens.lookup(token)
        if principal is not None:
            return principal
        if token.count(".") == 2:
            return self._jwt(token)
        return self._api_key(token)

    def _api_key(self, key: str) -> Principal:
        record = self.cache.snapshot.keys_by_hash.get(hash_secret(key))
        now = self.clock()
        if record is None or not record.is_usable(now):
            reason = "API key expired" if record is not None and record.is_active else ""
            raise Unauthorized(reason)
        self.last_used.mark(record.id, now)
        return _key_principal(record)

    def _jwt(self, token: str) -> Principal:
        """A JWT is good while its user is active, was not deactivated since it was issued
        (token generation) and its session is not logged out. A user the snapshot does not
        know yet (just made by the CLI) asks the cache for an early reload."""
        try:
            claims = self.jwt.decode(token, "access")
        except JwtError as exc:
            raise Unauthorized(str(exc)) from None
        snapshot = self.cache.snapshot
        user = snapshot.users.get(str(claims["sub"]).lower())
        if user is None:
            self.cache.request_reload()
        if user is None or not user.is_active:
            raise Unauthorized("user is unknown or deactivated")
        if token_generation(claims) != user.token_generation:
            raise Unauthorized("token was issued before the user was deactivated")
        if claims.get("sid") in snapshot.revoked_sessions:
            raise Unauthorized("the session is logged out")
        return Principal(kind="jwt", name=user.username, priority=self.config.jwt_priority,
                         is_admin=user.is_admin, generation=user.token_generation)


def _key_principal(record: ApiKey) -> Principal:
    allowed = frozenset(model_key(m) for m in record.allowed_models) if record.allowed_models else None
    return Principal(kind="apikey", name=record.name, priority=record.priority, is_admin=record.is_admin,
                     allowed_models=allowed, key_id=record.id)


def _with_request_hints(principal: Principal, headers: dict[bytes, bytes]) -> Principal:
    """Apply `X-Priority` (high=1, normal=2, low=3, never better than the credential's own
    priority) and record `X-Client-ID` as the client name."""
    level = headers.get(b"x-priority")
    client = headers.get(b"x-client-id")
    if level is None and client is None:
        return principal
    priority = principal.priority
    if level is not None:
        wanted = PRIORITY_LEVELS.get(level.decode("latin-1").strip().lower())
        if wanted is None:
            raise InvalidInput("X-Priority must be high, normal or low")
        priority = max(wanted, principal.priority)
    name = client.decode("latin-1").strip()[:128] if client is not None else principal.client
    return dataclasses.replace(principal, priority=priority, client=name)
