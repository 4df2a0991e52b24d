"""User accounts: registration with one-time tokens, password login, refresh, logout.

A login opens a session; its refresh tokens rotate (each works once) and logout revokes it.
Tokens carry the user's token generation (`gen`) and session (`sid`), so deactivating a user
or logging out ends them. Password hashing is slow on purpose, so logins are throttled
(`LoginThrottle`) before any hash is computed, and hashes run in a few bounded slots
(`BoundedHasher`) off the event loop.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInput
from ..store.bundle import Store
from ..store.errors import AlreadyExists
from ..store.registration_tokens import Refusal
from ..store.sessions import Rotation, SessionRepo
from ..store.users import User
from .credentials import CredentialCache
from .errors import HashingBusy, RegistrationRefused, Unauthorized, UsernameTaken
from .hashing import BoundedHasher
from .jwt_tokens import JwtCodec, JwtError, TokenType, new_token_id, token_generation
from .passwords import MAX_PASSWORD_LEN, validate_password
from .throttle import LoginThrottle

log = logging.getLogger("seadragon_gw.auth")
USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
BOOTSTRAP_NOTE = "bootstrap admin"
BOOTSTRAP_TTL_S = 24 * 3600
_REFUSALS = {
    Refusal.ADMIN_EXISTS: "the bootstrap registration token no longer works: an admin exists",
}
_TOKEN_REFUSED = "registration token is invalid, used or expired"
_ROTATION_REFUSALS = {
    Rotation.UNKNOWN: "refresh token is unknown",
    Rotation.REUSED: "refresh token was already used; the session is revoked",
    Rotation.REVOKED: "the session is logged out",
}


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
        raise InvalidInput("username: 1-64 letters, digits or . _ @ -")
    return username


def check_password(password: object) -> str:
    """The password if acceptable, else InvalidInput naming the field."""
    problem = "required" if password is None else validate_password(password)
    if problem or not isinstance(password, str):
        raise InvalidInput(f"password: {problem}")
    return password


class Accounts:
    def __init__(self, store: Store, sessions: SessionRepo, jwt: JwtCodec, hasher: BoundedHasher,
                 throttle: LoginThrottle, cache: CredentialCache,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.sessions = sessions
        self.jwt = jwt
        self.hasher = hasher
        self.throttle = throttle
        self.cache = cache
        self.clock = clock
        self._dummy_hash: str | None = None

    async def register(self, username: object, password: object, token: object) -> User:
        """A new user from a one-time token. The token is looked at before any hashing and
        spent in the same transaction that inserts the user, so a failed registration
        leaves it unused."""
        name = validate_username(username)
        secret = check_password(password)
        if not isinstance(token, str) or not token:
            raise InvalidInput("registration_token: required")
        if await self.store.users.get_by_username(name) is not None:
            raise UsernameTaken(name)
        _refuse(await self.store.registration_tokens.check(token, self.clock()))
        password_hash = await self.hasher.hash(secret)
        try:
            redemption = await self.store.registration_tokens.redeem(token, name, password_hash, self.clock())
        except AlreadyExists:
            raise UsernameTaken(name) from None
        _refuse(redemption.refusal)
        assert redemption.user is not None
        log.info("user %s registered (admin=%s)", name, redemption.user.is_admin)
        await self.cache.put_user(redemption.user)
        return redemption.user

    async def login(self, username: object, password: object, address: str) -> TokenPair:
        """Throttled per username and per address before any hashing; a wrong name costs
        the same hash as a wrong password (no user enumeration by timing)."""
        if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
            raise InvalidInput("username and password are required")
        with self.throttle.attempt(username, address) as attempt:
            try:
                user = await self._verify(username, password)
            except HashingBusy:
                attempt.void()
                raise
            attempt.success()
        await self.store.users.record_login(user.id, self.clock())
        await self.cache.put_user(user)
        return await self._open_session(user)

    async def refresh(self, refresh_token: object) -> TokenPair:
        claims = self._decode(refresh_token, "refresh")
        user = await self._live_user(claims)
        next_jti = new_token_id()
        result = await self.sessions.rotate(user.id, str(claims.get("jti", "")), next_jti,
                                            self._session_end())
        if result.outcome is not Rotation.ROTATED:
            if result.outcome is Rotation.REUSED:
                log.warning("refresh token of %s reused: session revoked", user.username)
                await self.cache.reload()
            raise Unauthorized(_ROTATION_REFUSALS[result.outcome])
        assert result.session_id is not None
        return self._issue(user, result.session_id, next_jti)

    async def logout(self, refresh_token: object, access_token: str | None) -> None:
        """Revoke the session of the refresh token given, else of the Bearer access token."""
        if refresh_token is not None:
            claims = self._decode(refresh_token, "refresh")
            session_id = await self.sessions.session_of(str(claims.get("jti", "")))
        elif access_token is not None:
            claims = self._decode(access_token, "access")
            session_id = claims.get("sid")
        else:
            raise InvalidInput("refresh_token: required (or send the access token as Bearer)")
        if not isinstance(session_id, str):
            raise Unauthorized("this token belongs to no session")
        if await self.sessions.revoke(session_id):
            log.info("user %s logged out", claims["sub"])
        await self.cache.reload()

    async def create_bootstrap_token(self) -> str | None:
        """With no active admin, a one-time token that registers one (valid for a day); it
        replaces any earlier unused bootstrap token, so only the last one printed works."""
        if await self.store.users.count_admins() > 0:
            return None
        await self.store.registration_tokens.expire_unused_bootstrap(self.clock())
        _, plaintext = await self.store.registration_tokens.create(
            is_admin=True, expires_at=self.clock() + BOOTSTRAP_TTL_S, note=BOOTSTRAP_NOTE, is_bootstrap=True)
        return plaintext

    async def _verify(self, username: str, password: str) -> User:
        if len(password) > MAX_PASSWORD_LEN:  # no stored password is that long: skip the hash
            raise Unauthorized("wrong username or password")
        user = await self.store.users.get_by_username(username)
        hash_ = user.password_hash if user else await self._dummy()
        ok = await self.hasher.verify(hash_, password)
        if user is None or not ok or not user.is_active:
            raise Unauthorized("wrong username or password")
        if self.hasher.needs_rehash(user.password_hash):
            await self._rehash(user, password)
        return user

    async def _rehash(self, user: User, password: str) -> None:
        """Upgrade a hash made with other costs; skipped (until the next login) when every
        hashing slot is busy, since the login itself has succeeded."""
        try:
            new_hash = await self.hasher.hash(password)
        except HashingBusy:
            return
        await self.store.users.update_password_hash(user.id, new_hash)

    async def _open_session(self, user: User) -> TokenPair:
        jti = new_token_id()
        session_id = await self.sessions.open(user.id, jti, self._session_end())
        return self._issue(user, session_id, jti)

    def _session_end(self) -> float:
        """Long enough for the last access or refresh token issued in it."""
        return self.clock() + max(self.jwt.access_ttl_s, self.jwt.refresh_ttl_s)

    def _decode(self, token: object, kind: TokenType) -> dict[str, Any]:
        if not isinstance(token, str) or not token:
            raise InvalidInput("refresh_token: required")
        try:
            return self.jwt.decode(token, kind)
        except JwtError as exc:
            raise Unauthorized(str(exc)) from None

    async def _live_user(self, claims: dict[str, Any]) -> User:
        user = await self.store.users.get_by_username(str(claims["sub"]))
        if user is None or not user.is_active or token_generation(claims) != user.token_generation:
            raise Unauthorized("user is unknown or deactivated")
        return user

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await self.hasher.hash(secrets.token_urlsafe(16))
        return self._dummy_hash

    def _issue(self, user: User, session_id: str, refresh_jti: str) -> TokenPair:
        claims = {"sid": session_id, "gen": user.token_generation}
        return TokenPair(self.jwt.issue(user.username, "access", claims),
                         self.jwt.issue(user.username, "refresh", claims, jti=refresh_jti),
                         self.jwt.access_ttl_s)


def _refuse(refusal: Refusal | None) -> None:
    if refusal is not None:
        raise RegistrationRefused(_REFUSALS.get(refusal, _TOKEN_REFUSED))

