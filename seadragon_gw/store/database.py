"""The SQLite database: one aiosqlite connection, rollback journal, migrations on open.

One connection per process keeps SQLite's locking simple; writers are serialised by an
asyncio lock and `BEGIN IMMEDIATE`, so a transaction takes the write lock up front and
never fails half-way on a lock upgrade. Other processes (the CLI editing keys while the
gateway runs) coordinate through SQLite's own locking and `busy_timeout`.

The journal mode is DELETE, not WAL: WAL memory-maps a `-shm` file, and when that file turns
immutable (`chattr +i gw.db*`) the next read, not only a write, kills the process with SIGBUS.
The gateway's writes are few and batched, so WAL's concurrency buys nothing here.

A database that cannot take writes (read-only file, folder or mount; immutable flag) still
opens, read-only, and serves reads; every write then raises `ReadOnlyDatabase` (503) without
reaching SQLite, and the log says so once (`file_watch.DatabaseFile`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import urllib.parse
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiosqlite

from . import migrations
from .errors import StoreError
from .file_watch import DatabaseFile, unwritable_reason

Params = Sequence[Any]

BUSY_TIMEOUT_MS = 5000
# SQLite's primary result codes that mean "this file does not take writes" (extended codes
# carry them in the low byte): READONLY, and CANTOPEN when the journal cannot be created.
_REFUSED_WRITE_CODES = (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN)

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

    def __init__(self, path: str, conn: aiosqlite.Connection, file: DatabaseFile) -> None:
        self.path = path
        self.file = file
        self._conn = conn
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str, *, watch_interval_s: float | None = None) -> Database:
        """Open (creating if needed) and migrate; any failure is one `StoreError` line.

        A file that exists but cannot be written opens read-only (its schema must be current).
        With `watch_interval_s` the file is checked that often while open (deleted, made
        read-only), and a problem is logged once at ERROR, also one present right now.
        """
        reason = unwritable_reason(path) if os.path.exists(path) else None  # noqa: ASYNC240 (once, at open)
        conn = await _open_writable(path) if reason is None else None
        if conn is None:
            reason = reason or "is read-only (SQLite refused a write)"
            conn = await _open_read_only(path)
        database = cls(path, conn, DatabaseFile(path, reason))
        if watch_interval_s is not None:
            database.file.start(watch_interval_s)
        return database

    @property
    def read_only(self) -> bool:
        return self.file.opened_read_only is not None

    async def close(self) -> None:
        await self.file.stop()
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
        """`async with db.transaction() as tx:` commits on success, rolls back on any error.

        Raises `ReadOnlyDatabase` / `DatabaseGone` (503) before touching SQLite when the file
        cannot take the write, and `ReadOnlyDatabase` when SQLite refuses it anyway.
        """
        async with self._write_lock:
            problem = self.file.check()
            if problem is not None:
                raise problem.error()
            try:
                await _run(self._conn, "BEGIN IMMEDIATE")
                yield Transaction(self._conn)
                await _run(self._conn, "COMMIT")
            except sqlite3.OperationalError as exc:
                await _rollback(self._conn)
                if exc.sqlite_errorcode & 0xFF in _REFUSED_WRITE_CODES:
                    raise self.file.refused(f"refused a write ({exc})") from None
                raise
            except BaseException:
                await _rollback(self._conn)
                raise

    async def execute(self, sql: str, params: Params = ()) -> WriteResult:
        """A single write statement in its own transaction."""
        async with self.transaction() as tx:
            return await tx.execute(sql, params)


async def _open_writable(path: str) -> aiosqlite.Connection | None:
    """The normal connection, migrated; None when SQLite finds it cannot write the file."""
    conn = aiosqlite.connect(path, isolation_level=None)
    try:
        await conn
    except sqlite3.Error as exc:
        await _worker_stopped(conn)
        raise StoreError(_describe(path, exc)) from None
    try:
        await _prepare(conn)
    except sqlite3.OperationalError as exc:
        await _close_quietly(conn)
        if exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_READONLY and os.path.exists(path):  # noqa: ASYNC240
            return None
        raise StoreError(_describe(path, exc)) from None
    except (sqlite3.Error, StoreError) as exc:
        await _close_quietly(conn)
        raise StoreError(_describe(path, exc)) from None
    except BaseException:
        await _close_quietly(conn)
        raise
    return conn


async def _open_read_only(path: str) -> aiosqlite.Connection:
    """`mode=ro` first; a WAL file from an older version in a read-only folder cannot create
    its `-shm` that way, and opens with `immutable=1` (nothing can change it anyway)."""
    uri = "file:" + urllib.parse.quote(os.path.abspath(path))  # noqa: ASYNC240 (no I/O: a string)
    failure: BaseException | None = None
    for flags in ("mode=ro", "immutable=1"):
        conn = aiosqlite.connect(f"{uri}?{flags}", uri=True, isolation_level=None)
        try:
            await conn
        except sqlite3.Error as exc:
            await _worker_stopped(conn)
            failure = exc
            continue
        try:
            await _prepare_read_only(conn)
            return conn
        except StoreError as exc:
            await _close_quietly(conn)
            raise StoreError(_describe(path, exc)) from None
        except sqlite3.Error as exc:
            await _close_quietly(conn)
            failure = exc
    raise StoreError(_describe(path, failure or StoreError("cannot be opened"))) from None


async def _prepare_read_only(conn: aiosqlite.Connection) -> None:
    conn.row_factory = aiosqlite.Row
    await _run(conn, f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    await _run(conn, "PRAGMA foreign_keys = ON")
    version, known = await migrations.schema_version(conn), len(migrations.MIGRATIONS)
    if version > known:
        raise StoreError(f"schema version {version} is newer than this program knows ({known})")
    if version < known:
        raise StoreError(f"read-only with schema version {version}, older than this program's "
                         f"{known}: make it writable once so it can be upgraded")


async def _prepare(conn: aiosqlite.Connection) -> None:
    conn.row_factory = aiosqlite.Row
    await _run(conn, f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    # An older WAL file converts on the first open that has it alone; with another
    # connection still open (a CLI command) it stays WAL for now, which works too.
    rows = list(await conn.execute_fetchall("PRAGMA journal_mode = DELETE"))
    mode = str(rows[0][0]).lower() if rows else ""
    if mode not in ("delete", "wal", "memory"):
        raise StoreError(f"cannot use a rollback journal (journal mode is {mode or 'unknown'})")
    await _run(conn, "PRAGMA foreign_keys = ON")
    await migrations.apply(conn)
    await _check_writable(conn)


async def _check_writable(conn: aiosqlite.Connection) -> None:
    """Find out at start-up, not on the first login, that SQLite cannot write the file
    (`_open_writable` then opens it read-only). Re-writing user_version with its current
    value is a real write, rolled back at once."""
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


async def _worker_stopped(conn: aiosqlite.Connection) -> None:
    """Wait for the worker thread of a connection that failed to connect or was closed.
    aiosqlite stops it then, and the thread reports its stop to this event loop; left
    running, it may report to a loop that has closed meanwhile ("Event loop is closed" in a
    thread: a failed open in a short-lived loop, such as a CLI command's or a test's)."""
    thread = getattr(conn, "_thread", None)  # aiosqlite keeps no public handle on it
    if isinstance(thread, threading.Thread) and thread.is_alive():
        await asyncio.to_thread(thread.join, 10.0)
    await asyncio.sleep(0)  # the stop's own callback, already scheduled, runs now


async def _close_quietly(conn: aiosqlite.Connection) -> None:
    """Close a connection that failed to open, and wait for its thread (close returns a hair
    before the thread ends)."""
    with contextlib.suppress(sqlite3.Error):
        await conn.close()
    await _worker_stopped(conn)
