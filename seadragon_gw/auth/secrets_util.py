"""Moved to `seadragon_gw.secret_tokens` (the store needs it too, and the store must not import
`auth/`); these names stay importable here for the modules that still use this path."""

from __future__ import annotations

from ..secret_tokens import (
    DISPLAY_PREFIX_LEN,
    display_prefix,
    generate_secret,
    hash_secret,
)

__all__ = ["DISPLAY_PREFIX_LEN", "display_prefix", "generate_secret", "hash_secret"]
