"""User accounts: registration with one-time tokens, password login, token refresh.

argon2 hashing is deliberately slow, so it runs in a worker thread and never stalls the
event loop that is streaming other users' tokens.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..api.errors import ApiError
from ..store.bundle import Store
from ..store.errors import AlreadyExists
from ..store.users import User
from .jwt_tokens import JwtCodec, JwtError
from .passwords import PasswordHasher, validate_password

log = logging.getLogger("seadragon_gw.auth")
USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
BOOTSTRAP_NOTE = "bootstrap admin"
BOOTSTRAP_TTL_S = 24 * 3600


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int

    def as_json(self) -> dict[str, object]:
        return {"access_token": self.access_token, "refresh_token": self.refresh_token,
                "token_type": "bearer", "expires_in": self.expires_in}


def validate_username(username: object) -> str:
    if not isinstance(username, str) or not USERNAME.match(username):
        raise ApiError(400, "username: 1-64 letters, digits or . _ @ -")
    return username


class Accounts:
    def __init__(self, store: Store, jwt: JwtCodec, hasher: PasswordHasher,
                 on_change: Callable[[], object], clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.jwt = jwt
        self.hasher = hasher
        self.on_change = on_change
        self.clock = clock
        self._dummy_hash: str | None = None

    async def register(self, username: object, password: object, token: object) -> User:
        name = validate_username(username)
        problem = "required" if password is None else validate_password(password)
        if problem:
            raise ApiError(400, f"password: {problem}")
        if not isinstance(token, str) or not token:
            raise ApiError(400, "registration_token: required")
        if await self.store.users.get_by_username(name) is not None:
            raise ApiError(409, f"username '{name}' is taken")
        password_hash = await asyncio.to_thread(self.hasher.hash, password)
        grant = await self.store.registration_tokens.consume(token, name, self.clock())
        if grant is None:
            raise ApiError(403, "registration token is invalid, used or expired")
        try:
            user = await self.store.users.create(name, password_hash, is_admin=grant.is_admin)
        except AlreadyExists:
            raise ApiError(409, f"username '{name}' is taken") from None
        log.info("user %s registered (admin=%s)", name, user.is_admin)
        await self._changed()
        return user

    async def login(self, username: str, password: str) -> TokenPair:
        user = await self.store.users.get_by_username(username) if username else None
        hash_ = user.password_hash if user else await self._dummy()
        ok = await asyncio.to_thread(self.hasher.verify, hash_, password)
        if user is None or not ok or not user.is_active:
            raise ApiError(401, "unauthorized: wrong username or password", {"WWW-Authenticate": "Bearer"})
        if self.hasher.needs_rehash(user.password_hash):
            new_hash = await asyncio.to_thread(self.hasher.hash, password)
            await self.store.users.update_password_hash(user.id, new_hash)
        await self.store.users.record_login(user.id, self.clock())
        return self._issue(user.username)

    async def refresh(self, refresh_token: object) -> TokenPair:
        if not isinstance(refresh_token, str) or not refresh_token:
            raise ApiError(400, "refresh_token: required")
        try:
            claims = self.jwt.decode(refresh_token, "refresh")
        except JwtError as exc:
            raise ApiError(401, f"unauthorized: {exc}", {"WWW-Authenticate": "Bearer"}) from None
        user = await self.store.users.get_by_username(str(claims["sub"]))
        if user is None or not user.is_active:
            raise ApiError(401, "unauthorized: user is unknown or deactivated")
        return self._issue(user.username)

    async def create_bootstrap_token(self) -> str | None:
        """With no active admin, a one-time token that registers one (valid for a day); it
        replaces any earlier unused bootstrap token, so only the last one printed works."""
        if await self.store.users.count_admins() > 0:
            return None
        await self.store.registration_tokens.expire_unused(BOOTSTRAP_NOTE, self.clock())
        _, plaintext = await self.store.registration_tokens.create(
            is_admin=True, expires_at=self.clock() + BOOTSTRAP_TTL_S, note=BOOTSTRAP_NOTE)
        return plaintext

    async def _dummy(self) -> str:
        """Verified against when the user does not exist, so a wrong name costs as long as a
        wrong password (no user enumeration by timing)."""
        if self._dummy_hash is None:
            self._dummy_hash = await asyncio.to_thread(self.hasher.hash, secrets.token_urlsafe(16))
        return self._dummy_hash

    def _issue(self, username: str) -> TokenPair:
        return TokenPair(self.jwt.issue(username, "access"), self.jwt.issue(username, "refresh"),
                         self.jwt.access_ttl_s)

    async def _changed(self) -> None:
        result = self.on_change()
        if asyncio.iscoroutine(result):
            await result

