"""The first start: a tokens file with one random token, so the first request can succeed.

The repository does not track `tokens.json` (real secrets must never land in a tracked file),
so a fresh clone has none. Rather than starting with no usable credential, the gateway writes
one for the person running it, readable only by them (0600), and shows it on the console once.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import secrets
from dataclasses import dataclass

_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
DEFAULT_USER = "me"


@dataclass(frozen=True, slots=True)
class FirstUser:
    name: str
    token: str


def create_tokens_file(path: str) -> FirstUser | None:
    """Write `{user: token}` to `path` if no file is there; None when one exists already.

    O_EXCL makes the check and the creation one step: two starts racing never overwrite a
    file someone else just wrote, and an existing file (even an empty `{}`) is left alone.
    """
    user = FirstUser(_login_name(), secrets.token_urlsafe(32))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps({user.name: user.token}, indent=2) + "\n")
    return user


def _login_name() -> str:
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return DEFAULT_USER
    return name if _NAME.match(name) else DEFAULT_USER
