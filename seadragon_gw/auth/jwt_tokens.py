"""HS256 JSON Web Tokens for the web UI: short-lived access tokens, longer refresh tokens.

Verification is deliberately narrow: one algorithm (HS256), checked both by pyjwt and by
reading the header ourselves, so an `alg: none` or algorithm-confusion token is refused
before any signature logic runs. Time checks use an injectable clock instead of pyjwt's
wall clock, so expiry is testable without sleeping.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import jwt

if TYPE_CHECKING:
    from jwt.types import Options

TokenType = Literal["access", "refresh"]

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("exp", "iat", "sub", "typ")
RESERVED_CLAIMS = frozenset({"sub", "iat", "exp", "typ", "jti", "nbf"})
TOKEN_TYPES: frozenset[str] = frozenset({"access", "refresh"})


def new_token_id() -> str:
    return secrets.token_urlsafe(16)


def token_generation(claims: dict[str, Any]) -> int | None:
    """The `gen` claim (0 when absent: tokens made before generations existed), None if bad."""
    gen = claims.get("gen", 0)
    return gen if isinstance(gen, int) and not isinstance(gen, bool) else None


class JwtError(Exception):
    """A token was refused. The message is safe to show and never contains the token."""


class JwtCodec:
    """Issues and checks tokens signed with one shared secret."""

    def __init__(
        self,
        secret: str,
        access_ttl_s: int = 3600,
        refresh_ttl_s: int = 14 * 86400,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secret:
            raise ValueError("JWT secret must not be empty")
        self._secret = secret
        self.access_ttl_s = access_ttl_s
        self.refresh_ttl_s = refresh_ttl_s
        self._clock = clock

    def issue(
        self, sub: str, token_type: TokenType, extra: dict[str, Any] | None = None,
        jti: str | None = None,
    ) -> str:
        """A signed token for `sub`; `extra` adds claims but may not override the standard ones.
        `jti` is the token's id when the caller records it (rotating refresh tokens)."""
        _check_type(token_type)
        extra = extra or {}
        clash = RESERVED_CLAIMS.intersection(extra)
        if clash:
            raise ValueError(f"extra claims may not set {', '.join(sorted(clash))}")
        now = int(self._clock())
        ttl = self.access_ttl_s if token_type == "access" else self.refresh_ttl_s
        claims = {
            **extra,
            "sub": sub,
            "iat": now,
            "exp": now + ttl,
            "typ": token_type,
            "jti": jti or new_token_id(),
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def decode(self, token: str, expected_type: TokenType) -> dict[str, Any]:
        """The verified claims, or `JwtError` naming why the token was refused."""
        _check_type(expected_type)
        if not isinstance(token, str) or not token:
            raise JwtError("malformed token")
        self._check_header(token)
        claims = self._verify_signature(token)
        self._check_claims(claims, expected_type)
        return claims

    def _check_header(self, token: str) -> None:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise JwtError("malformed token") from None
        if header.get("alg") != ALGORITHM:
            raise JwtError("unsupported token algorithm")

    def _verify_signature(self, token: str) -> dict[str, Any]:
        options: Options = {
            "require": list(REQUIRED_CLAIMS),
            # Time claims are checked against our own clock in _check_claims.
            "verify_exp": False,
            "verify_iat": False,
            "verify_nbf": False,
        }
        try:
            return jwt.decode(
                token, self._secret, algorithms=[ALGORITHM], options=options, leeway=0
            )
        except jwt.InvalidSignatureError:
            raise JwtError("bad token signature") from None
        except jwt.MissingRequiredClaimError as exc:
            raise JwtError(f"token is missing the {exc.claim!r} claim") from None
        except jwt.InvalidAlgorithmError:
            raise JwtError("unsupported token algorithm") from None
        except jwt.InvalidTokenError:
            raise JwtError("malformed token") from None

    def _check_claims(self, claims: dict[str, Any], expected_type: TokenType) -> None:
        now = self._clock()
        exp, iat = claims["exp"], claims["iat"]
        if not _is_number(exp) or not _is_number(iat):
            raise JwtError("malformed token time claims")
        if now >= exp:
            raise JwtError("token expired")
        if iat > now:
            raise JwtError("token issued in the future")
        nbf = claims.get("nbf")
        if nbf is not None and (not _is_number(nbf) or nbf > now):
            raise JwtError("token not yet valid")
        if not isinstance(claims["sub"], str) or not claims["sub"]:
            raise JwtError("malformed token subject")
        if claims["typ"] != expected_type:
            raise JwtError(f"expected an {expected_type} token")


def _check_type(token_type: str) -> None:
    if token_type not in TOKEN_TYPES:
        raise ValueError(f"token type must be 'access' or 'refresh', not {token_type!r}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
