"""Password hashing with argon2id.

Passwords are low-entropy and chosen by people, so unlike API keys they need a slow,
memory-hard, salted hash. This wrapper narrows argon2-cffi's exception-driven API to
plain booleans, so a bad hash in the database can never turn a login into a 500.
"""

from __future__ import annotations

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_PASSWORD_LEN = 8
MAX_PASSWORD_LEN = 1024


class PasswordHasher:
    """argon2id hashing; the cost parameters default to argon2-cffi's (RFC 9106 low-memory).

    Tests pass tiny costs to stay fast; `needs_rehash` then reports hashes made with other
    costs, so a deployment can upgrade stored hashes on the next successful login.
    """

    def __init__(
        self,
        time_cost: int | None = None,
        memory_cost: int | None = None,
        parallelism: int | None = None,
    ) -> None:
        defaults = argon2.PasswordHasher()
        self._hasher = argon2.PasswordHasher(
            time_cost=defaults.time_cost if time_cost is None else time_cost,
            memory_cost=defaults.memory_cost if memory_cost is None else memory_cost,
            parallelism=defaults.parallelism if parallelism is None else parallelism,
            type=argon2.Type.ID,
        )

    def hash(self, password: str) -> str:
        """A self-describing argon2id hash string (salt and costs included)."""
        return self._hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        """True only if `password` matches; False for a mismatch or any malformed input."""
        if not isinstance(password_hash, str) or not isinstance(password, str):
            return False
        try:
            return self._hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError, ValueError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        """True if the hash was made with other parameters (or cannot be parsed at all)."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except (InvalidHashError, ValueError, TypeError):
            return True


def validate_password(password: object) -> str | None:
    """An error message for an unacceptable password, or None if it is fine.

    The upper bound exists because argon2 cost grows with input and an unbounded field
    invites cheap denial of service.
    """
    if not isinstance(password, str):
        return "password must be a string"
    if len(password) < MIN_PASSWORD_LEN:
        return f"password must be at least {MIN_PASSWORD_LEN} characters"
    if len(password) > MAX_PASSWORD_LEN:
        return f"password must be at most {MAX_PASSWORD_LEN} characters"
    return None
