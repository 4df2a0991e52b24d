"""Bearer secrets (API keys, registration tokens): generation and hashing.

Only the SHA-256 of a secret is ever stored. A plain (unsalted, fast) hash is enough
here because these secrets carry 256 bits of randomness: there is nothing to brute-force,
and a fast hash keeps the per-request lookup cheap. Passwords are different; see
`auth/passwords.py`.
"""

from __future__ import annotations

import hashlib
import secrets

DISPLAY_PREFIX_LEN = 12


def generate_secret(prefix: str) -> str:
    """A new random secret, tagged with `prefix` (`sdk-`, `sdr-`) so leaks are recognisable."""
    return prefix + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """The hex SHA-256 of `secret`: what the database stores instead of the secret."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def display_prefix(secret: str) -> str:
    """The first few characters: enough to tell keys apart in a listing, useless to an attacker."""
    return secret[:DISPLAY_PREFIX_LEN]
