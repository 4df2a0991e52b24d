"""Password hashing off the event loop, with a fixed number of slots.

argon2 is slow and memory-hard on purpose. Run from an unbounded thread pool, a burst of
logins queues hundreds of hashes (seconds of latency for everyone, and memory per hash);
with a few slots and an immediate 503 for the excess, a burst costs at most `slots` hashes
at a time and a real user's retry is served at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from .errors import HashingBusy
from .passwords import PasswordHasher

T = TypeVar("T")
BUSY_RETRY_S = 1.0


class BoundedHasher:
    """`hash`/`verify` in a worker thread, at most `slots` at once; beyond that `HashingBusy`."""

    def __init__(self, hasher: PasswordHasher, slots: int = 2) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.hasher = hasher
        self._slots = asyncio.Semaphore(slots)

    async def hash(self, password: str) -> str:
        return await self._run(self.hasher.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        return await self._run(self.hasher.verify, password_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        return self.hasher.needs_rehash(password_hash)

    async def _run(self, fn: Callable[..., T], *args: str) -> T:
        if self._slots.locked():
            raise HashingBusy("too many logins at once; try again in a moment", retry_after_s=BUSY_RETRY_S)
        async with self._slots:
            return await asyncio.to_thread(fn, *args)
