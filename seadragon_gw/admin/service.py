"""The admin operations, with their one validation and their rules, for every caller.

The HTTP admin routes, the CLI and the admin page all call this; each passes the request's
fields as plain data and an `Actor` (who asks, and which models it may hand out). Failures
are `seadragon_gw.errors` kinds: the HTTP layer maps them to statuses, the CLI prints their
messages. Every change tells `on_change`, so this process's credential cache never serves a
revoked key or a removed address (other processes see the commit through `data_version`).

Rules enforced here:
- `allowed_models: []` is refused (absent means all models);
- a model-restricted admin key may only hand out credentials within its own models: no
  unrestricted key, no key with other models, no whitelist entry or registration token
  (those grant every model);
- the last active admin cannot be deactivated;
- a full API key is never accepted as a key reference (it would end up in logs and history).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

from ..auth.accounts import check_password, validate_username
from ..auth.hashing import BoundedHasher
from ..auth.principal import Principal
from ..errors import Conflict, InvalidInput, NotFound
from ..model_names import model_key
from ..secret_tokens import DISPLAY_PREFIX_LEN
from ..store.api_keys import ApiKey
from ..store.bundle import Store
from ..store.errors import AlreadyExists, Ambiguous
from ..store.registration_tokens import RegistrationToken
from ..store.users import User
from ..store.whitelist_repo import WhitelistEntry
from . import fields as f
from .errors import OutsideModelScope

log = logging.getLogger("seadragon_gw.admin")
KEY_FIELDS = {"name", "priority", "expires_in_s", "allowed_models", "rate_limit_per_min", "is_admin", "tier"}
WHITELIST_FIELDS = {"ip", "priority", "label"}
TOKEN_FIELDS = {"expires_in_s", "is_admin", "note"}
USER_FIELDS = {"username", "password", "is_admin", "tier"}
USER_CHANGE_FIELDS = {"tier", "is_admin"}
MAX_PRIORITY = 1000


@dataclass(frozen=True)
class Actor:
    """Who asks: a name for the log, and the models it may grant (None: every model)."""

    name: str
    allowed_models: frozenset[str] | None = None

    @classmethod
    def of(cls, principal: Principal) -> Actor:
        return cls(f"{principal.kind}:{principal.name}", principal.allowed_models)


CONSOLE = Actor("console")


@dataclass(frozen=True)
class Created:
    """A new key or token with its plaintext: the only time it is shown."""

    plaintext: str


@dataclass(frozen=True)
class CreatedKey(Created):
    key: ApiKey


@dataclass(frozen=True)
class CreatedToken(Created):
    token: RegistrationToken


class AdminService:
    def __init__(self, store: Store, hasher: BoundedHasher, *, whitelist_priority: int,
                 on_change: Callable[[], Awaitable[None]], clock: Callable[[], float] = time.time,
                 tiers: Collection[str] = ()) -> None:
        self.store = store
        self.tiers = frozenset(tiers)  # rate_limits.tiers: the names a key or user may be given
        self.hasher = hasher
        self.whitelist_priority = whitelist_priority
        self.on_change = on_change
        self.clock = clock

    # ------------------------------------------------------------------ API keys

    async def list_keys(self) -> list[ApiKey]:
        return await self.store.api_keys.list_all()

    async def create_key(self, data: f.Fields, actor: Actor) -> CreatedKey:
        f.reject_unknown(data, KEY_FIELDS)
        name = f.required_string(data, "name")
        priority = f.integer(data, "priority", 2, 0, MAX_PRIORITY)
        assert priority is not None
        expires_at = self._expires_at(data)
        models = f.model_list(data, "allowed_models")
        rate = f.integer(data, "rate_limit_per_min", None, 1, 10**6)
        is_admin = f.boolean(data, "is_admin")
        tier = f.tier(data, self.tiers)
        _within_scope(actor, models)
        key, plaintext = await self.store.api_keys.create(
            name, priority, expires_at=expires_at, allowed_models=models, rate_limit_per_min=rate,
            is_admin=is_admin, tier=tier)
        log.info("%s created API key %d (%s) '%s'", actor.name, key.id, key.prefix, key.name)
        await self.on_change()
        return CreatedKey(plaintext, key)

    async def revoke_key(self, ident: str, actor: Actor) -> ApiKey:
        """Revoke by id or display prefix; never by the full key."""
        ident = ident.strip()
        if len(ident) > DISPLAY_PREFIX_LEN:
            raise InvalidInput("key: give the key's id or its display prefix, never the key itself")
        try:
            key = await self.store.api_keys.revoke(ident)
        except Ambiguous:
            raise InvalidInput(f"key: '{ident}' matches several keys; use the id") from None
        if key is None:
            raise NotFound(f"no API key '{ident}'")
        log.info("%s revoked API key %d (%s)", actor.name, key.id, key.prefix)
        await self.on_change()
        return key

    # ------------------------------------------------------------------ whitelist

    async def list_whitelist(self) -> list[WhitelistEntry]:
        return await self.store.whitelist.list_all()

    async def add_whitelist(self, data: f.Fields, actor: Actor) -> WhitelistEntry:
        f.reject_unknown(data, WHITELIST_FIELDS)
        ip = f.required_string(data, "ip")
        priority = f.integer(data, "priority", self.whitelist_priority, 0, MAX_PRIORITY)
        assert priority is not None
        label = f.optional_string(data, "label")
        _within_scope(actor, None, "a whitelist entry")
        try:
            entry = await self.store.whitelist.add(ip, priority=priority, label=label)
        except ValueError as exc:
            raise InvalidInput(f"ip: {exc}") from None
        except AlreadyExists:
            raise Conflict(f"ip: {ip} is already whitelisted") from None
        log.info("%s whitelisted %s (priority %d)", actor.name, entry.network, entry.priority)
        await self.on_change()
        return entry

    async def remove_whitelist(self, ip: str, actor: Actor) -> str:
        try:
            removed = await self.store.whitelist.remove(ip)
        except ValueError as exc:
            raise InvalidInput(f"ip: {exc}") from None
        if not removed:
            raise NotFound(f"{ip} is not whitelisted")
        log.info("%s removed %s from the whitelist", actor.name, ip)
        await self.on_change()
        return ip

    # ------------------------------------------------------------------ registration tokens

    async def list_registration_tokens(self) -> list[RegistrationToken]:
        return await self.store.registration_tokens.list_all()

    async def create_registration_token(self, data: f.Fields, actor: Actor) -> CreatedToken:
        f.reject_unknown(data, TOKEN_FIELDS)
        expires_at = self._expires_at(data)
        is_admin = f.boolean(data, "is_admin")
        note = f.optional_string(data, "note")
        _within_scope(actor, None, "a registration token")
        token, plaintext = await self.store.registration_tokens.create(
            is_admin=is_admin, expires_at=expires_at, note=note)
        log.info("%s created registration token %d (admin=%s)", actor.name, token.id, token.is_admin)
        return CreatedToken(plaintext, token)

    # ------------------------------------------------------------------ users

    async def list_users(self) -> list[User]:
        return await self.store.users.list_all()

    async def create_user(self, data: f.Fields, actor: Actor) -> User:
        """A user with a password, no registration token needed (the console's `admin create`)."""
        f.reject_unknown(data, USER_FIELDS)
        username = validate_username(data.get("username"))
        password = check_password(data.get("password"))
        is_admin = f.boolean(data, "is_admin")
        tier = f.tier(data, self.tiers)
        _within_scope(actor, None, "a user")
        if await self.store.users.get_by_username(username) is not None:
            raise Conflict(f"user '{username}' already exists")
        password_hash = await self.hasher.hash(password)
        try:
            user = await self.store.users.create(username, password_hash, is_admin=is_admin, tier=tier)
        except AlreadyExists:
            raise Conflict(f"user '{username}' already exists") from None
        log.info("%s created user %s (admin=%s)", actor.name, user.username, user.is_admin)
        await self.on_change()
        return user

    async def set_user_active(self, username: str, active: bool, actor: Actor) -> User:
        """Raises `LastActiveAdmin` (a Conflict) rather than leave no active admin."""
        user = await self.store.users.set_active(username, active)
        if user is None:
            raise NotFound(f"no user '{username}'")
        log.info("%s %s user %s", actor.name, "activated" if active else "deactivated", user.username)
        await self.on_change()
        return user

    async def change_user(self, username: str, data: f.Fields, actor: Actor) -> User:
        """Change what may change about a user: its rate-limit tier (null: the default) and
        whether it is an admin (the last active admin is never demoted). Both take effect at
        once: the authenticator reads them from the user snapshot reloaded by `on_change`."""
        f.reject_unknown(data, USER_CHANGE_FIELDS)
        if not data:
            raise InvalidInput("tier or is_admin: required (tier null for the default limits)")
        tier = f.tier(data, self.tiers) if "tier" in data else None
        is_admin = f.boolean(data, "is_admin") if "is_admin" in data else None
        _within_scope(actor, None, "a user")
        user: User | None = None
        if "tier" in data:
            user = await self.store.users.set_tier(username, tier)
        if is_admin is not None:
            user = await self.store.users.set_admin(username, is_admin)
        if user is None:
            raise NotFound(f"no user '{username}'")
        log.info("%s changed user %s: %s", actor.name, user.username, ", ".join(sorted(data)))
        await self.on_change()
        return user

    def _expires_at(self, data: f.Fields) -> float | None:
        """`expires_in_s` (optional, positive) as an absolute time on the gateway's clock."""
        ttl = f.positive_number(data, "expires_in_s")
        return self.clock() + ttl if ttl else None


def _within_scope(actor: Actor, models: list[str] | None, what: str = "a key") -> None:
    """A model-restricted actor hands out nothing wider than its own models."""
    if actor.allowed_models is None:
        return
    if models is None:
        raise OutsideModelScope(f"a model-restricted key cannot create {what} for every model")
    outside = sorted(m for m in models if model_key(m) not in actor.allowed_models)
    if outside:
        raise OutsideModelScope(f"allowed_models: outside this key's own models: {', '.join(outside)}")
