"""Store exceptions. Messages are single lines meant for operators; they never hold secrets."""

from __future__ import annotations

from ..errors import Unavailable


class StoreError(Exception):
    """The database cannot be used (corrupt, unreadable, unwritable, too new...)."""


class AlreadyExists(StoreError):
    """A uniqueness rule was violated (duplicate username, network...)."""


class NotFound(StoreError):
    """The referenced row does not exist."""


class Ambiguous(StoreError):
    """A reference (such as a key's display prefix) matches more than one row."""


class DatabaseUnavailable(StoreError, Unavailable):
    """Writes cannot be done now, while reads still work (an HTTP caller gets 503)."""


class ReadOnlyDatabase(DatabaseUnavailable):
    """The database file, its folder or its file system does not take writes."""

    def __init__(self) -> None:
        super().__init__("database is read-only")


class DatabaseGone(DatabaseUnavailable):
    """The file was deleted or replaced while the gateway runs: writes would go to a file
    nobody will ever read again, so they are refused until a restart opens the new one."""

    def __init__(self) -> None:
        super().__init__("database file was deleted or replaced; restart the gateway")
