"""Who is making a request, as decided by authentication."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PrincipalKind = Literal["token", "apikey", "jwt", "whitelist", "anonymous"]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller.

    `priority` is the base queue priority its credential grants (lower is served first).
    `allowed_models` holds model keys, or None for every model. `generation` is a user's
    token generation when the JWT was issued (an async job checks it again when it runs).
    """

    kind: PrincipalKind
    name: str
    priority: float
    is_admin: bool = False
    allowed_models: frozenset[str] | None = None
    key_id: int | None = None
    client: str | None = None
    generation: int | None = None

    def may_use(self, model_key: str) -> bool:
        return self.allowed_models is None or model_key in self.allowed_models


ANONYMOUS = Principal(kind="anonymous", name="anonymous", priority=float("inf"))
