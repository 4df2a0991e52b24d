"""The JSON shape of admin records, shared by the admin API and the admin page.

No secret (key hash, token hash, password hash) is ever part of a view; the plaintext of a
new key or token is added by the caller that shows it once.
"""

from __future__ import annotations

from typing import Any

from ..store.api_keys import ApiKey
from ..store.registration_tokens import RegistrationToken
from ..store.users import User
from ..store.whitelist_repo import WhitelistEntry


def key_json(key: ApiKey) -> dict[str, Any]:
    return {"id": key.id, "name": key.name, "prefix": key.prefix, "priority": key.priority,
            "created_at": key.created_at, "last_used": key.last_used, "is_active": key.is_active,
            "expires_at": key.expires_at, "allowed_models": list(key.allowed_models or []) or None,
            "rate_limit_per_min": key.rate_limit_per_min, "is_admin": key.is_admin, "tier": key.tier}


def entry_json(entry: WhitelistEntry) -> dict[str, Any]:
    return {"id": entry.id, "ip": entry.network, "priority": entry.priority, "label": entry.label,
            "created_at": entry.created_at}


def token_json(token: RegistrationToken) -> dict[str, Any]:
    return {"id": token.id, "prefix": token.prefix, "is_admin": token.is_admin, "created_at": token.created_at,
            "expires_at": token.expires_at, "used_at": token.used_at, "used_by": token.used_by, "note": token.note}


def user_json(user: User) -> dict[str, Any]:
    return {"id": user.id, "username": user.username, "is_admin": user.is_admin, "is_active": user.is_active,
            "created_at": user.created_at, "last_login": user.last_login, "tier": user.tier}
