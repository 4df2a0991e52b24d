"""How authentication and accounts fail, in the shared vocabulary of `seadragon_gw.errors`.

`api/errors.py` turns these into statuses (401 also gets `WWW-Authenticate: Bearer` there);
the CLI prints their messages as they are.
"""

from __future__ import annotations

from ..errors import (
    Conflict,
    NotAuthenticated,
    NotPermitted,
    TooManyRequests,
    Unavailable,
)

UNAUTHORIZED = "unauthorized: missing or invalid credentials"


class Unauthorized(NotAuthenticated):
    """No credential, or one that does not check out; `reason` says which check failed."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(f"unauthorized: {reason}" if reason else UNAUTHORIZED)


class CredentialRevoked(NotAuthenticated):
    """An async job's credential was revoked (or expired) between submission and its run."""


class Forbidden(NotPermitted):
    """A valid credential that may not do this."""


class RegistrationRefused(NotPermitted):
    """The registration token is unknown, used, expired, or a bootstrap token after an admin
    exists."""


class UsernameTaken(Conflict):
    def __init__(self, username: str) -> None:
        super().__init__(f"username '{username}' is taken")


class LoginThrottled(TooManyRequests):
    """Too many failed logins for a username or from an address within the window."""


class HashingBusy(Unavailable):
    """Every password-hashing slot is busy: refused at once instead of queueing threads."""
