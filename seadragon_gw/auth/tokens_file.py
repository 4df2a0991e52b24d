"""Bearer tokens from `tokens.json`, reloaded when the file changes.

Formats accepted: `{"user": "token"}` and
`{"user": {"token": "...", "priority": 2, "admin": false, "tier": "pro"}}` (`tier`: a rate-limit
tier from `rate_limits.tiers`; absent: the default limits).
Tokens are kept only as SHA-256 digests; a lookup hashes the presented token, finds the entry
by digest and confirms with a constant-time compare, so no plaintext is held or compared.

A file that does not parse, or gives two users the same token (which user would a request
be?), is refused as a whole and the last good set stays; a deleted file revokes its tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from .principal import Principal

log = logging.getLogger("seadragon_gw.auth")


@dataclass(frozen=True, slots=True)
class TokenEntry:
    digest: bytes
    principal: Principal
    tier: str | None = None


def parse_tokens(data: object, default_priority: int,
                 tiers: Collection[str] | None = None) -> dict[bytes, TokenEntry]:
    """Validate the decoded JSON; raise ValueError naming the bad entry (never the token).
    `tiers`: the configured rate-limit tier names an entry may name (None: any)."""
    if not isinstance(data, dict):
        raise ValueError("top level must be an object of user -> token")
    entries: dict[bytes, TokenEntry] = {}
    for user, spec in data.items():
        entry = _entry(str(user), spec, default_priority, tiers)
        clash = entries.get(entry.digest)
        if clash is not None:
            raise ValueError(f"entries {clash.principal.name!r} and {user!r} have the same token")
        entries[entry.digest] = entry
    return entries


def _entry(user: str, spec: object, default_priority: int, tiers: Collection[str] | None) -> TokenEntry:
    if isinstance(spec, str):
        spec = {"token": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("token"), str) or not spec["token"]:
        raise ValueError(f"entry {user!r}: expected a token string or an object with 'token'")
    unknown = set(spec) - {"token", "priority", "admin", "tier"}
    if unknown:
        raise ValueError(f"entry {user!r}: unknown field(s) {', '.join(sorted(unknown))}")
    priority = spec.get("priority", default_priority)
    if not isinstance(priority, (int, float)) or isinstance(priority, bool):
        raise ValueError(f"entry {user!r}: priority must be a number")
    admin = spec.get("admin", False)
    if not isinstance(admin, bool):
        raise ValueError(f"entry {user!r}: admin must be true or false")
    tier = _tier(user, spec.get("tier"), tiers)
    digest = hashlib.sha256(spec["token"].encode()).digest()
    return TokenEntry(digest, Principal(kind="token", name=user, priority=priority, is_admin=admin), tier)


def _tier(user: str, tier: object, tiers: Collection[str] | None) -> str | None:
    if tier is None:
        return None
    if not isinstance(tier, str) or not tier:
        raise ValueError(f"entry {user!r}: tier must be a tier name")
    if tiers is not None and tier not in tiers:
        known = ", ".join(sorted(tiers)) or "none configured"
        raise ValueError(f"entry {user!r}: unknown tier {tier!r} (rate_limits.tiers: {known})")
    return tier


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """`object_pairs_hook`: a user listed twice is an error, not "the last one wins"."""
    seen: dict[str, object] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"user {key!r} is listed twice")
        seen[key] = value
    return seen


def read_tokens(path: str, default_priority: int, tiers: Collection[str] | None = None) -> dict[bytes, TokenEntry]:
    """Parse the file; ValueError (or OSError) with a one-line reason, naming line and
    column for a JSON syntax error."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    return parse_tokens(data, default_priority, tiers)


class TokenFile:
    """The token set from one file; `lookup` re-reads the file at most every `check_interval_s`."""

    def __init__(
        self,
        path: str | None,
        default_priority: int = 2,
        check_interval_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        tiers: Collection[str] | None = None,
    ) -> None:
        self.path = path
        self.default_priority = default_priority
        self.tiers = None if tiers is None else frozenset(tiers)
        self._tier_of: dict[str, str] = {}
        self._names: frozenset[str] = frozenset()
        self.check_interval_s = check_interval_s
        self._clock = clock
        self._entries: dict[bytes, TokenEntry] = {}
        self._mtime: int | None = None
        self._next_check = 0.0
        self.reload_if_changed(force=True)

    def lookup(self, token: str) -> Principal | None:
        now = self._clock()
        if now >= self._next_check:
            self._next_check = now + self.check_interval_s
            self.reload_if_changed()
        digest = hashlib.sha256(token.encode()).digest()
        entry = self._entries.get(digest)
        if entry is None or not hmac.compare_digest(entry.digest, digest):
            return None
        return entry.principal

    def has(self, name: str) -> bool:
        """Whether an entry called `name` is in the file now (re-read as `lookup` does)."""
        now = self._clock()
        if now >= self._next_check:
            self._next_check = now + self.check_interval_s
            self.reload_if_changed()
        return name in self._names

    def tier_of(self, name: str) -> str | None:
        """The rate-limit tier of the entry called `name` (None: the default limits)."""
        return self._tier_of.get(name)

    def reload_if_changed(self, force: bool = False) -> None:
        """Reload on an mtime change; a broken file keeps the last good set and logs one error,
        a missing one revokes every token with one warning."""
        if self.path is None:
            return
        try:
            mtime: int | None = os.stat(self.path).st_mtime_ns
        except OSError:
            mtime = None
        if mtime == self._mtime and not force:
            return
        self._mtime = mtime
        if mtime is None:
            self._missing()
            return
        try:
            entries = read_tokens(self.path, self.default_priority, self.tiers)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            log.error("tokens file %s: %s; keeping the last good set", self.path, reason)
            return
        self._entries = entries
        self._tier_of = {e.principal.name: e.tier for e in entries.values() if e.tier is not None}
        self._names = frozenset(e.principal.name for e in entries.values())
        log.info("tokens file %s: loaded %d token(s)", self.path, len(entries))

    def _missing(self) -> None:
        revoked, self._entries, self._tier_of, self._names = len(self._entries), {}, {}, frozenset()
        if revoked:
            log.warning("tokens file %s: deleted; its %d token(s) no longer work", self.path, revoked)
        else:
            log.warning("tokens file %s: not found; no tokens from it", self.path)
