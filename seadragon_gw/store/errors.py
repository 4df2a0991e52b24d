"""Store exceptions. Messages are single lines meant for operators; they never hold secrets."""

from __future__ import annotations


class StoreError(Exception):
    """The database cannot be used (corrupt, unreadable, unwritable, too new...)."""


class AlreadyExists(StoreError):
    """A uniqueness rule was violated (duplicate username, network...)."""


class NotFound(StoreError):
    """The referenced row does not exist."""


class Ambiguous(StoreError):
    """A reference (such as a key's display prefix) matches more than one row."""
