"""Which limits apply to a caller: the tier its credential names, or the default.

The tier lives with the credential (an API key's or a user's `tier` column, a tokens.json
entry's `"tier"`), so it is looked up here from the credential cache's snapshot and the token
file, both in memory: a lookup is a dict access or two. A key's own `rate_limit_per_min`
overrides its tier's rate. A tier name the config no longer has falls back to the default,
with one WARNING per name.
"""

from __future__ import annotations

import logging

from ..auth.credentials import CredentialCache, CredentialSnapshot
from ..auth.principal import Principal
from ..auth.tokens_file import TokenFile
from ..config import RateLimitsConfig
from ..store.api_keys import ApiKey
from .policy import Limits

log = logging.getLogger("seadragon_gw.limits")


class TierResolver:
    def __init__(self, config: RateLimitsConfig, credentials: CredentialCache, tokens: TokenFile) -> None:
        self.default = Limits.of(None, config.default)
        self.tiers = {name: Limits.of(name, tier) for name, tier in config.tiers.items()}
        self._credentials = credentials
        self._tokens = tokens
        self._snapshot: CredentialSnapshot | None = None
        self._keys: dict[int, ApiKey] = {}
        self._overridden: dict[tuple[str | None, float], Limits] = {}
        self._unknown: set[str] = set()

    def limits_for(self, principal: Principal) -> Limits:
        tier, per_minute = self._credential_tier(principal)
        limits = self.default if tier is None else self._tier(tier)
        if per_minute is None or per_minute == limits.per_minute:
            return limits
        key = (limits.tier, per_minute)
        found = self._overridden.get(key)
        if found is None:
            found = self._overridden[key] = limits.with_per_minute(per_minute)
        return found

    def _credential_tier(self, principal: Principal) -> tuple[str | None, float | None]:
        kind = principal.kind
        if kind == "apikey" and principal.key_id is not None:
            key = self._key(principal.key_id)
            if key is None:
                return None, None
            return key.tier, key.rate_limit_per_min
        if kind == "jwt":
            user = self._credentials.snapshot.users.get(principal.name.lower())
            return (user.tier if user is not None else None), None
        if kind == "token":
            return self._tokens.tier_of(principal.name), None
        return None, None

    def _key(self, key_id: int) -> ApiKey | None:
        """Keys by id, re-indexed only when the cache has a new snapshot."""
        snapshot = self._credentials.snapshot
        if snapshot is not self._snapshot:
            self._keys = {k.id: k for k in snapshot.keys_by_hash.values()}
            self._snapshot = snapshot
        return self._keys.get(key_id)

    def _tier(self, name: str) -> Limits:
        limits = self.tiers.get(name)
        if limits is not None:
            return limits
        if name not in self._unknown:
            self._unknown.add(name)
            log.warning("rate limits: tier '%s' is not in rate_limits.tiers; its clients get the default limits",
                        name)
        return self.default
