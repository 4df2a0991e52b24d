"""Whether the credential an async job was submitted with still stands when the job runs.

A job outlives the request that made it: it may wait in the queue (or in the database across
a restart) for hours. Revoking an API key, deactivating a user or removing a tokens.json entry
must stop that credential's queued work too, not only its next request. So the job runner asks
here when it admits a job and again when the job gets its slot; the answer comes from the same
in-memory state authentication uses (the credential cache, the token file), a dict lookup.
"""

from __future__ import annotations

from collections.abc import Callable

from .credentials import CredentialCache
from .principal import Principal
from .tokens_file import TokenFile

REVOKED = "the credential that submitted this job was revoked"


class CredentialStanding:
    def __init__(self, cache: CredentialCache, tokens: TokenFile, clock: Callable[[], float]) -> None:
        self._cache = cache
        self._tokens = tokens
        self._clock = clock

    def revoked(self, principal: Principal) -> str | None:
        """Why `principal`'s credential no longer admits it (the whole message), or None while
        it stands."""
        reason = self._reason(principal)
        return None if reason is None else f"{REVOKED} ({reason})"

    def _reason(self, principal: Principal) -> str | None:
        kind, name = principal.kind, principal.name
        if kind == "apikey":
            return self._key_reason(principal)
        if kind == "jwt":
            return self._user_reason(principal)
        if kind == "token":
            return None if self._tokens.has(name) else f"token '{name}' is no longer in the tokens file"
        if kind == "whitelist":
            known = self._cache.snapshot.whitelist_names
            return None if name in known else f"whitelist entry '{name}' was removed"
        return None

    def _key_reason(self, principal: Principal) -> str | None:
        key = self._cache.snapshot.keys_by_id.get(principal.key_id) if principal.key_id is not None else None
        if key is None or not key.is_active:
            return f"api key '{principal.name}' is revoked"
        if not key.is_usable(self._clock()):
            return f"api key '{principal.name}' has expired"
        return None

    def _user_reason(self, principal: Principal) -> str | None:
        user = self._cache.snapshot.users.get(principal.name.lower())
        if user is None or not user.is_active:
            return f"user '{principal.name}' is deactivated"
        if principal.generation is not None and principal.generation != user.token_generation:
            return f"user '{principal.name}' was deactivated after submitting it"
        return None
