"""Persistent state in one SQLite file: keys, whitelist, users, registration tokens."""

from .api_keys import ApiKey, ApiKeyRepo
from .database import Database, Transaction, WriteResult
from .errors import AlreadyExists, Ambiguous, NotFound, StoreError
from .registration_tokens import RegistrationToken, RegistrationTokenRepo
from .settings import SettingsRepo
from .users import User, UserRepo
from .whitelist_repo import WhitelistEntry, WhitelistRepo
from .write_behind import LastUsedBatcher

__all__ = [
    "Ambiguous",
    "AlreadyExists",
    "ApiKey",
    "ApiKeyRepo",
    "Database",
    "LastUsedBatcher",
    "NotFound",
    "RegistrationToken",
    "RegistrationTokenRepo",
    "SettingsRepo",
    "StoreError",
    "Transaction",
    "User",
    "UserRepo",
    "WhitelistEntry",
    "WhitelistRepo",
    "WriteResult",
]
