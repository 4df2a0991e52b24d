"""Who a job belongs to, and the caller it runs as (a job outlives the request that made it)."""

from __future__ import annotations

from typing import Any

from ..auth.principal import Principal
from ..store.jobs import Owner


def owner_of(principal: Principal) -> Owner:
    return Owner(principal.kind, principal.name, principal.key_id if principal.kind == "apikey" else None)


def may_see(principal: Principal, owner: Owner) -> bool:
    """The owner (same credential kind and name, same key) or an admin."""
    return principal.is_admin or owner_of(principal) == owner


def principal_fields(principal: Principal) -> dict[str, Any]:
    """What the queue needs of the caller, kept with the job (never a secret)."""
    allowed = sorted(principal.allowed_models) if principal.allowed_models is not None else None
    return {"kind": principal.kind, "name": principal.name, "priority": principal.priority,
            "is_admin": principal.is_admin, "allowed_models": allowed, "key_id": principal.key_id,
            "client": principal.client, "generation": principal.generation}


def principal_from(fields: dict[str, Any]) -> Principal:
    allowed = fields.get("allowed_models")
    return Principal(kind=fields["kind"], name=str(fields["name"]), priority=float(fields["priority"]),
                     is_admin=bool(fields.get("is_admin")),
                     allowed_models=frozenset(allowed) if allowed is not None else None,
                     key_id=fields.get("key_id"), client=fields.get("client"), generation=fields.get("generation"))
