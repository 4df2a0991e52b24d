"""Schema migrations, tracked with `PRAGMA user_version`.

Migrations are append-only: `MIGRATIONS[n]` moves the schema from version n to n + 1.
Each runs in its own transaction together with the version bump, so a crash mid-upgrade
leaves the database at the previous version rather than half-migrated.
"""

from __future__ import annotations

import sqlite3

import aiosqlite

from .errors import StoreError

_V1 = """
CREATE TABLE api_keys (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    key_hash TEXT UNIQUE NOT NULL,
    priority INTEGER NOT NULL,
    created_at REAL NOT NULL,
    last_used REAL,
    is_active INTEGER NOT NULL DEFAULT 1,
    expires_at REAL,
    allowed_models TEXT,
    rate_limit_per_min INTEGER,
    is_admin INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX api_keys_prefix ON api_keys (prefix);

CREATE TABLE ip_whitelist (
    id INTEGER PRIMARY KEY,
    network TEXT UNIQUE NOT NULL,
    priority INTEGER NOT NULL DEFAULT 1,
    label TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);

CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    username TEXT UNIQUE NOT NULL COLLATE NOCASE,
    password_hash TEXT NOT NULL,
    is_admin INTEGER NOT NULL DEFAULT 0,
    is_active INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL,
    last_login REAL
);

CREATE TABLE registration_tokens (
    id INTEGER PRIMARY KEY,
    prefix TEXT NOT NULL,
    token_hash TEXT UNIQUE NOT NULL,
    is_admin INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    expires_at REAL,
    used_at REAL,
    used_by TEXT,
    note TEXT NOT NULL DEFAULT ''
);

CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE request_log (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    principal TEXT,
    client TEXT,
    method TEXT,
    path TEXT,
    model TEXT,
    status INTEGER,
    duration_ms REAL,
    queue_ms REAL
);
CREATE INDEX request_log_ts ON request_log (ts);
"""

# v2: accounts that can be logged out and cut off. `token_generation` is bumped when a user is
# deactivated, so tokens issued before stay refused after reactivation; `is_bootstrap` marks
# the console's one-time admin token (it stops working once any admin exists); a session is
# one login, its refresh tokens rotate (each used once) and logout revokes the session.
_V2 = """
ALTER TABLE users ADD COLUMN token_generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE registration_tokens ADD COLUMN is_bootstrap INTEGER NOT NULL DEFAULT 0;
UPDATE registration_tokens SET is_bootstrap = 1 WHERE note = 'bootstrap admin' AND is_admin = 1;

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    revoked_at REAL
);
CREATE INDEX sessions_expires ON sessions (expires_at);

CREATE TABLE refresh_tokens (
    jti TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    issued_at REAL NOT NULL,
    used_at REAL
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);
"""

# Reserved while the operations issue is built in parallel (placeholders until filled in):
# v3: operations. Every finished request (the usage log: aggregated by client, model, day or
# credential; `client` is the X-Client-ID, else the credential), backend failures and internal
# errors (the crash log), requests for models no backend serves (one row per model and client,
# counted), and rate-limit tiers for API keys and users (NULL: the default tier).
_V3 = """
CREATE TABLE usage_log (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    credential TEXT,
    client TEXT,
    model TEXT,
    backend TEXT,
    status INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    is_error INTEGER NOT NULL,
    stream INTEGER NOT NULL,
    queue_wait_s REAL,
    ttfb_s REAL,
    upstream_s REAL,
    tokens_in INTEGER,
    tokens_out INTEGER,
    bytes_out INTEGER NOT NULL
);
CREATE INDEX usage_log_ts ON usage_log (ts);

CREATE TABLE crash_log (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    error TEXT NOT NULL,
    model TEXT,
    request_id TEXT,
    backend TEXT,
    route TEXT,
    status INTEGER,
    stack_trace TEXT
);
CREATE INDEX crash_log_ts ON crash_log (ts);

CREATE TABLE missing_models (
    model_key TEXT NOT NULL,
    client TEXT NOT NULL,
    model_name TEXT NOT NULL,
    count INTEGER NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    PRIMARY KEY (model_key, client)
);
CREATE INDEX missing_models_last_seen ON missing_models (last_seen);

ALTER TABLE api_keys ADD COLUMN tier TEXT;
ALTER TABLE users ADD COLUMN tier TEXT;
"""
# v4: async jobs. A job is written before its 202 is sent; `n` keeps submission order (ties of
# the aging order, and the order jobs are run again after a restart); the owner is the
# credential's kind and name (and key id for API keys); `principal` is what the queue needs of
# it (priority, models allowed); `processing` rows are set back to `queued` at start-up, so a
# job interrupted by a crash runs again and only a committed `completed` ends it.
_V4 = """
CREATE TABLE jobs (
    n INTEGER PRIMARY KEY,
    id TEXT UNIQUE NOT NULL,
    route TEXT NOT NULL,
    model TEXT,
    body BLOB NOT NULL,
    owner_kind TEXT NOT NULL,
    owner_name TEXT NOT NULL,
    owner_key INTEGER,
    principal TEXT NOT NULL,
    priority REAL NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    result BLOB,
    error TEXT,
    meta TEXT,
    stream_forced INTEGER NOT NULL DEFAULT 0,
    callback_url TEXT,
    callback_state TEXT
);
CREATE INDEX jobs_status ON jobs (status, n);
CREATE INDEX jobs_owner ON jobs (owner_kind, owner_name, n);
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
"""

# v5: the managed profile a request asked for (an OCR resolution): auto_switch reads which one
# each hour of the day wanted from the usage log, and a queued job keeps it until it runs.
_V5 = """
ALTER TABLE usage_log ADD COLUMN profile TEXT;
ALTER TABLE jobs ADD COLUMN profile TEXT;
"""

# v6: a usage row names the API key by its id too: two keys may share a name, and each has its
# own daily quota (counted again from this log after a restart) and its own line in the usage
# by credential. Rows written before name a key by its name only: those of a name only one key
# has get its id.
_V6 = """
ALTER TABLE usage_log ADD COLUMN key_id INTEGER;
UPDATE usage_log SET key_id = (SELECT k.id FROM api_keys k WHERE 'apikey:' || k.name = usage_log.credential)
WHERE credential LIKE 'apikey:%'
AND (SELECT COUNT(*) FROM api_keys k WHERE 'apikey:' || k.name = usage_log.credential) = 1;
"""

# v7: `request_log` (v1's placeholder) was never written nor read: the usage log (v3) keeps every
# finished request instead.
_V7 = """
DROP TABLE request_log;
"""

MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3, _V4, _V5, _V6, _V7)


async def schema_version(conn: aiosqlite.Connection) -> int:
    rows = list(await conn.execute_fetchall("PRAGMA user_version"))
    return int(rows[0][0])


async def apply(conn: aiosqlite.Connection) -> int:
    """Run the migrations this database lacks, in order; returns the resulting version.

    `conn` must be in autocommit mode (isolation_level=None). The version is re-read under
    the write lock, so two processes starting at once do not both run the same migration.
    """
    version = await schema_version(conn)
    _check_known(version)
    for target in range(version + 1, len(MIGRATIONS) + 1):
        await _run_one(conn, target)
    return len(MIGRATIONS)


async def _run_one(conn: aiosqlite.Connection, target: int) -> None:
    await conn.execute("BEGIN IMMEDIATE")
    try:
        current = await schema_version(conn)
        _check_known(current)
        if current < target:
            for statement in split_statements(MIGRATIONS[target - 1]):
                await conn.execute(statement)
            await conn.execute(f"PRAGMA user_version = {target}")
        await conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            await conn.execute("ROLLBACK")
        raise


def split_statements(script: str) -> list[str]:
    """Split a script on the semicolons that really end statements.

    Needed because sqlite3's executescript() commits any open transaction first, which
    would break the one-transaction-per-migration rule.
    """
    statements: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip(" \n\t;"):
        raise ValueError("migration script ends with an incomplete statement")
    return [s for s in statements if s.strip(" \n\t;")]


def _check_known(version: int) -> None:
    if version > len(MIGRATIONS):
        raise StoreError(
            f"schema version {version} is newer than this program knows ({len(MIGRATIONS)})"
        )
