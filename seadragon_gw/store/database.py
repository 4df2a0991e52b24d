"""The SQLite database: one aiosqlite connection, WAL mode, migrations on open.

One connection per process keeps SQLite's locking simple; writers are serialised by an
asyncio lock and `BEGIN IMMEDIATE`, so a transaction takes the write lock up front and
never fails half-way on a lock upgrade. Other processes (the CLI editing keys while the
gateway runs) coordinate through SQLite's own locking and `busy_timeout`.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiosqlite

from . import migrations
from .errors import StoreError

Params = Sequence[Any]

BUSY_TIMEOUT_MS = 5000

# aiosqlite logs every statement with its parameters at DEBUG, and some parameters are secrets
# (the generated JWT secret, password hashes): `log_level: debug` must not write them out.
logging.getLogger("aiosqlite").setLevel(logging.INFO)


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a write statement reports back (the cursor itself is closed at once)."""

    rowcount: int
    lastrowid: int | None


class Transaction:
    """Statements run inside one `Database.transaction()` block."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> WriteResult:
        cursor = await self._conn.execute(sql, params)
        try:
            return WriteResult(cursor.rowcount, cursor.lastrowid)
        finally:
            await cursor.close()

    async def executemany(self, sql: str, rows: Iterable[Params]) -> WriteResult:
        cursor = await self._conn.executemany(sql, rows)
        try:
            return WriteResult(cursor.rowcount, cursor.lastrowid)
        finally:
            await cursor.close()

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        return list(await self._conn.execute_fetchall(sql, params))


class Database:
    """An open, migrated database. Create with `await Database.open(path)`."""

    def __init__(self, path: str, conn: aiosqlite.Connection) -> None:
        self.path = path
        self._conn = conn
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str) -> Database:
        """Open (creating if needed) and migrate; any failure is one `StoreError` line."""
        try:
            conn = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(_describe(path, exc)) from None
        try:
            await _prepare(conn)
        except (sqlite3.Error, StoreError) as exc:
            await _close_quietly(conn)
            raise StoreError(_describe(path, exc)) from None
        except BaseException:
            await _close_quietly(conn)
            raise
        return cls(path, conn)

    async def close(self) -> None:
        await self._conn.close()

    async def data_version(self) -> int:
        """Changes whenever another connection commits: cheap polling for outside edits."""
        row = await self.fetchone("PRAGMA data_version")
        assert row is not None
        return int(row[0])

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        """Reads run outside the write lock; inside this process they may see a transaction
        that is still in progress, which is acceptable for this store's read paths."""
        return await Transaction(self._conn).fetchone(sql, params)

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        return await Transaction(self._conn).fetchall(sql, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """`async with db.transaction() as tx:` commits on success, rolls back on any error."""
        async with self._write_lock:
            try:
                await _run(self._conn, "BEGIN IMMEDIATE")
                yield Transaction(self._conn)
                await _run(self._conn, "COMMIT")
            except BaseException:
                await _rollback(self._conn)
                raise

    async def execute(self, sql: str, params: Params = ()) -> WriteResult:
        """A single write statement in its own transaction."""
        async with self.transaction() as tx:
            return await tx.execute(sql, params)


async def _prepare(conn: aiosqlite.Connection) -> None:
    conn.row_factory = aiosqlite.Row
    await _run(conn, f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    rows = list(await conn.execute_fetchall("PRAGMA journal_mode = WAL"))
    mode = str(rows[0][0]).lower() if rows else ""
    if mode not in ("wal", "memory"):
        raise StoreError(f"cannot switch to WAL journal mode (got {mode or 'nothing'})")
    await _run(conn, "PRAGMA foreign_keys = ON")
    await migrations.apply(conn)
    await _check_writable(conn)


async def _check_writable(conn: aiosqlite.Connection) -> None:
    """Fail at start-up, not on the first login, if the file is read-only to us.

    Re-writing user_version with its current value is a real write, rolled back at once.
    """
    version = await migrations.schema_version(conn)
    try:
        await _run(conn, "BEGIN IMMEDIATE")
        await _run(conn, f"PRAGMA user_version = {version}")
    finally:
        await _rollback(conn)


def _describe(path: str, exc: BaseException) -> str:
    """`database PATH: problem`, on one line, with SQLite's terse wording made actionable."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    if message == "unable to open database file":
        message += " (does the directory exist, and may this user write to it?)"
    elif message in ("attempt to write a readonly database", "readonly database"):
        message = "read-only (check the permissions of the file and its directory)"
    return f"database {path}: {message}"


async def _run(conn: aiosqlite.Connection, sql: str) -> None:
    cursor = await conn.execute(sql)
    await cursor.close()


async def _rollback(conn: aiosqlite.Connection) -> None:
    """Roll back if a transaction is open (SQLite may already have ended it on error)."""
    if conn.in_transaction:
        await _run(conn, "ROLLBACK")


async def _close_quietly(conn: aiosqlite.Connection) -> None:
    try:
        await conn.close()
    except Exception:
        pass
