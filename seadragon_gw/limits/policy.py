"""The limits that apply to one client: its tier's bucket and quotas, as plain numbers."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import RateTier


@dataclass(frozen=True, slots=True)
class Limits:
    """`tier` None is the default tier. `rate` is the bucket's refill per second. `rate` and
    `has_quota` are worked out once: every admitted request reads them."""

    tier: str | None
    per_minute: float
    burst: int
    requests_per_day: int | None = None
    tokens_per_day: int | None = None
    rate: float = field(init=False, repr=False, compare=False)
    has_quota: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate", self.per_minute / 60.0)
        object.__setattr__(self, "has_quota", self.requests_per_day is not None or self.tokens_per_day is not None)

    @classmethod
    def of(cls, tier: str | None, config: RateTier) -> Limits:
        return cls(tier, config.per_minute, config.burst, config.requests_per_day, config.tokens_per_day)

    def with_per_minute(self, per_minute: float) -> Limits:
        return Limits(self.tier, per_minute, self.burst, self.requests_per_day, self.tokens_per_day)
