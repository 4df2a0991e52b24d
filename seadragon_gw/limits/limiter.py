"""The rate limiter: a token bucket and daily quotas per client.

It hangs on the request lifecycle twice: as an admission check (`check`, run after auth and
routing and before queueing, so a request refused earlier is never counted) and as a record
observer (`request_finished`, adding the answer's prompt + completion tokens to the client's
day). Both are a dict lookup or two and a little float arithmetic.

A client is the credential: an API key by its id, any other credential by its kind and
name (`daily.client_key`), so two keys named alike never share a bucket or a day. Its bucket holds up to `burst`
requests and refills at `per_minute / 60` per second on the monotonic clock; a request takes
one, and with less than one left it is refused with 429 (`Retry-After`: when one is back;
`X-RateLimit-Reset`: seconds until the bucket is full). Buckets are kept for at most
`rate_limits.max_clients` clients, the least recently seen dropped first (a dropped bucket was
idle the longest; it comes back full). Anonymous callers (read routes only) are not limited.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from ..auth.credentials import CredentialCache
from ..auth.principal import Principal
from ..auth.tokens_file import TokenFile
from ..config import RateLimitsConfig
from ..lifecycle.service import RequestService
from ..records.observers import Recorder
from ..records.record import RequestRecord
from .daily import ClientKey, DailyCounts, DayCount, client_key
from .errors import RateLimited
from .policy import Limits
from .tiers import TierResolver

_WHO = {"apikey": "api key", "jwt": "user", "token": "token", "whitelist": "whitelist entry"}
_EPSILON = 1e-9  # float refill may land a hair below a whole request


class _Bucket:
    __slots__ = ("level", "at")

    def __init__(self, level: float, at: float) -> None:
        self.level = level
        self.at = at


def _who(principal: Principal) -> str:
    return f"{_WHO.get(principal.kind, principal.kind)} '{principal.name}'"


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


class RateLimiter:
    def __init__(self, config: RateLimitsConfig, resolver: TierResolver,
                 monotonic: Callable[[], float], wall: Callable[[], float]) -> None:
        self.enabled = config.enabled
        self.resolver = resolver
        self.daily = DailyCounts(wall)
        self._max_clients = config.max_clients
        self._monotonic = monotonic
        self._buckets: OrderedDict[ClientKey, _Bucket] = OrderedDict()

    @classmethod
    def build(cls, config: RateLimitsConfig, credentials: CredentialCache, tokens: TokenFile,
              monotonic: Callable[[], float], wall: Callable[[], float]) -> RateLimiter:
        return cls(config, TierResolver(config, credentials, tokens), monotonic, wall)

    def attach(self, requests: RequestService, recorder: Recorder) -> None:
        """Check every request before it queues and count its tokens when it ends (only when
        `rate_limits.enabled`: off, nothing of this runs per request)."""
        if self.enabled:
            requests.limits.append(self)
            recorder.subscribe(self)

    @property
    def clients(self) -> int:
        """Buckets held now (bounded by `rate_limits.max_clients`)."""
        return len(self._buckets)

    # -- the admission check ----------------------------------------------------------------
    def check(self, record: RequestRecord, principal: Principal) -> None:
        """Take one request from the client's bucket and day, or raise RateLimited. (Runs for
        every admitted request: the bucket is refilled and taken from here, inline.)"""
        kind = principal.kind
        if kind == "anonymous":
            return
        key = client_key(kind, principal.name, principal.key_id)
        limits = self.resolver.limits_for(principal)
        count = self.daily.of(key)
        if limits.has_quota:
            self._check_quota(principal, limits, count)
        now = self._monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._new_bucket(key, limits, now)
        else:
            self._buckets.move_to_end(key)
            level = bucket.level + (now - bucket.at) * limits.rate
            bucket.level, bucket.at = (level if level < limits.burst else float(limits.burst)), now
        if bucket.level < 1.0 - _EPSILON:
            raise self._rate_error(principal, limits, bucket.level)
        bucket.level -= 1.0
        count.requests += 1

    def _new_bucket(self, key: ClientKey, limits: Limits, now: float) -> _Bucket:
        while len(self._buckets) >= self._max_clients:
            self._buckets.popitem(last=False)
        bucket = self._buckets[key] = _Bucket(float(limits.burst), now)
        return bucket

    def _check_quota(self, principal: Principal, limits: Limits, count: DayCount) -> None:
        if limits.requests_per_day is not None and count.requests >= limits.requests_per_day:
            raise self._quota_error(principal, limits, f"{limits.requests_per_day} requests", limits.requests_per_day)
        if limits.tokens_per_day is not None and count.tokens >= limits.tokens_per_day:
            raise self._quota_error(principal, limits, f"{limits.tokens_per_day} tokens", limits.tokens_per_day)

    def _rate_error(self, principal: Principal, limits: Limits, level: float) -> RateLimited:
        rate = limits.rate
        message = (f"rate limit exceeded: {limits.per_minute:g} requests per minute (burst {limits.burst}) "
                   f"for {_who(principal)}{_tier_note(limits)}")
        headers = {"X-RateLimit-Limit": f"{limits.per_minute:g}", "X-RateLimit-Remaining": "0",
                   "X-RateLimit-Reset": str(math.ceil((limits.burst - level) / rate - _EPSILON))}
        return RateLimited(message, retry_after_s=max(0.0, 1.0 - level) / rate, headers=headers)

    def _quota_error(self, principal: Principal, limits: Limits, what: str, limit: int) -> RateLimited:
        left = self.daily.seconds_left()
        message = (f"daily quota exceeded: {what} per day for {_who(principal)}{_tier_note(limits)}; "
                   "it resets at 00:00 UTC")
        headers = {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": "0",
                   "X-RateLimit-Reset": str(math.ceil(left))}
        return RateLimited(message, retry_after_s=left, headers=headers)

    # -- the record observer ----------------------------------------------------------------
    def request_finished(self, record: RequestRecord) -> None:
        """Count the answer's tokens against the client's day."""
        prompt, completion = record.prompt_tokens, record.completion_tokens
        if (prompt is None and completion is None) or record.credential_kind is None:
            return
        count = self.daily.get(client_key(record.credential_kind, record.credential_name or "", record.key_id))
        if count is not None:
            count.tokens += (prompt or 0) + (completion or 0)

    def restore(self, totals: Mapping[tuple[str, int | None], tuple[int, int]]) -> None:
        """Today's requests and tokens per credential ("kind:name" and an API key's id) from
        the usage log, so a restart does not hand every client a fresh day."""
        parsed: dict[ClientKey, tuple[int, int]] = {}
        for (credential, key_id), (requests, tokens) in totals.items():
            kind, _, name = credential.partition(":")
            key = client_key(kind, name, key_id)
            before = parsed.get(key, (0, 0))
            parsed[key] = (before[0] + requests, before[1] + tokens)
        self.daily.load(parsed)

    # -- what a caller may see --------------------------------------------------------------
    def describe(self, principal: Principal) -> dict[str, Any]:
        """The caller's limits and what is left of them (`GET /auth/me`)."""
        if not self.enabled or principal.kind == "anonymous":
            return {"enabled": False}
        key = client_key(principal.kind, principal.name, principal.key_id)
        limits = self.resolver.limits_for(principal)
        level = self._level(key, limits)
        count = self.daily.get(key) or DayCount()
        return {
            "enabled": True, "tier": limits.tier, "per_minute": _number(limits.per_minute), "burst": limits.burst,
            "remaining": math.floor(level + _EPSILON),
            "reset_s": math.ceil((limits.burst - level) / limits.rate - _EPSILON),
            "requests_per_day": limits.requests_per_day, "requests_today": count.requests,
            "requests_remaining": _left(limits.requests_per_day, count.requests),
            "tokens_per_day": limits.tokens_per_day, "tokens_today": count.tokens,
            "tokens_remaining": _left(limits.tokens_per_day, count.tokens),
            "quota_resets_at": datetime.fromtimestamp(self.daily.resets_at, UTC).isoformat(),
        }

    def _level(self, key: ClientKey, limits: Limits) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            return float(limits.burst)
        return min(float(limits.burst), bucket.level + (self._monotonic() - bucket.at) * limits.rate)


def _tier_note(limits: Limits) -> str:
    return "" if limits.tier is None else f" (tier '{limits.tier}')"


def _left(limit: int | None, used: int) -> int | None:
    return None if limit is None else max(0, limit - used)
