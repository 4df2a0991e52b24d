"""The limits that apply to one client: its tier's bucket and quotas, as plain numbers."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import RateTier


@dataclass(frozen=True, slots=True)
class Limits:
    """`tier` None is the default tier. `rate` is the bucket's refill per second."""

    tier: str | None
    per_minute: float
    burst: int
    requests_per_day: int | None = None
    tokens_per_day: int | None = None

    @classmethod
    def of(cls, tier: str | None, config: RateTier) -> Limits:
        return cls(tier, config.per_minute, config.burst, config.requests_per_day, config.tokens_per_day)

    @property
    def rate(self) -> float:
        return self.per_minute / 60.0

    @property
    def has_quota(self) -> bool:
        return self.requests_per_day is not None or self.tokens_per_day is not None

    def with_per_minute(self, per_minute: float) -> Limits:
        return Limits(self.tier, per_minute, self.burst, self.requests_per_day, self.tokens_per_day)
