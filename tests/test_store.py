"""The SQLite store: migrations, every repo's persistence, atomicity, error reporting."""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from seadragon_gw.store import (
    AlreadyExists,
    Ambiguous,
    ApiKeyRepo,
    Database,
    LastUsedBatcher,
    RegistrationTokenRepo,
    SettingsRepo,
    StoreError,
    UserRepo,
    WhitelistRepo,
)
from seadragon_gw.store.migrations import MIGRATIONS
from seadragon_gw.store.registration_tokens import Refusal
from seadragon_gw.store.sessions import Rotation, SessionRepo
from seadragon_gw.store.users import LastActiveAdmin

NOW = 1_700_000_000.0


def clock() -> float:
    return NOW


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "gw.db")


@pytest.fixture
async def db(db_path: str) -> AsyncIterator[Database]:
    database = await Database.open(db_path)
    yield database
    await database.close()


async def reopen(db: Database) -> Database:
    await db.close()
    return await Database.open(db.path)


# --- database & migrations ------------------------------------------------------------


async def test_migrations_set_user_version_and_are_idempotent(db_path: str) -> None:
    for _ in range(2):
        database = await Database.open(db_path)
        row = await database.fetchone("PRAGMA user_version")
        assert row is not None and row[0] == len(MIGRATIONS)
        await database.close()
    with sqlite3.connect(db_path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"api_keys", "ip_whitelist", "users", "registration_tokens", "settings", "usage_log", "jobs"} <= tables
    assert "request_log" not in tables


async def test_v7_drops_the_unused_request_log(db_path: str) -> None:
    with _at_version(db_path, 6) as conn:
        conn.execute("INSERT INTO request_log (ts, path) VALUES (0, '/api/chat')")
    await (await Database.open(db_path)).close()  # opened: migrated
    with sqlite3.connect(db_path) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert not {"request_log", "request_log_ts"} & names


def _at_version(path: str, version: int) -> sqlite3.Connection:
    """A database made by a program that knew the first `version` migrations."""
    conn = sqlite3.connect(path)
    for script in MIGRATIONS[:version]:
        conn.executescript(script)
    conn.execute(f"PRAGMA user_version = {version}")
    return conn


async def test_v6_gives_old_usage_rows_the_key_id_where_the_name_is_one_keys(db_path: str) -> None:
    with _at_version(db_path, 5) as conn:
        for key_id, name in ((1, "solo"), (2, "dup"), (3, "dup")):
            conn.execute("INSERT INTO api_keys (id, name, prefix, key_hash, priority, created_at) "
                         "VALUES (?, ?, 'sdk-x', ?, 2, 0)", (key_id, name, f"h{key_id}"))
        for credential in ("apikey:solo", "apikey:dup", "token:solo", None):
            conn.execute("INSERT INTO usage_log (ts, request_id, method, route, credential, status, outcome, "
                         "is_error, stream, bytes_out) VALUES (0, 'r', 'POST', '/api/chat', ?, 200, 'ok', 0, 0, 0)",
                         (credential,))
    database = await Database.open(db_path)
    try:
        rows = await database.fetchall("SELECT credential, key_id FROM usage_log ORDER BY id")
    finally:
        await database.close()
    assert [tuple(r) for r in rows] == [("apikey:solo", 1), ("apikey:dup", None), ("token:solo", None), (None, None)]


async def test_journal_mode_and_pragmas(db: Database) -> None:
    assert (await db.fetchone("PRAGMA journal_mode"))[0] == "delete"  # type: ignore[index]
    assert (await db.fetchone("PRAGMA foreign_keys"))[0] == 1  # type: ignore[index]
    assert (await db.fetchone("PRAGMA busy_timeout"))[0] == 5000  # type: ignore[index]


async def test_transaction_rolls_back_on_error(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO settings (key, value) VALUES ('a', 'b')")
            raise RuntimeError("boom")
    assert await SettingsRepo(db).get("a") is None


async def test_corrupt_file_is_one_line_store_error(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is definitely not sqlite" * 200)
    with pytest.raises(StoreError) as info:
        await Database.open(str(path))
    message = str(info.value)
    assert str(path) in message and "not a database" in message and "\n" not in message


async def test_unwritable_location_is_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    path = blocker / "gw.db"  # parent is a file: cannot be created, even by root
    with pytest.raises(StoreError) as info:
        await Database.open(str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


async def test_newer_schema_is_refused(db_path: str) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StoreError, match="newer"):
        await Database.open(db_path)


def _workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "_connection_worker_thread" in t.name]


def _unopenable(tmp_path: Path, kind: str) -> str:
    if kind == "no such folder":
        blocker = tmp_path / "a-file"
        blocker.write_text("x")
        return str(blocker / "gw.db")  # sqlite3.connect itself fails
    path = tmp_path / "gw.db"
    if kind == "corrupt":
        path.write_bytes(b"this is definitely not sqlite" * 200)
    else:
        with sqlite3.connect(path) as conn:
            conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    return str(path)


@pytest.mark.parametrize("kind", ["no such folder", "corrupt", "newer schema"])
async def test_a_failed_open_leaves_no_connection_thread_behind(tmp_path: Path, kind: str) -> None:
    """Every failed open has stopped aiosqlite's worker thread before it raises: one left
    running reports to the event loop later, after it may have closed."""
    before = set(_workers())
    with pytest.raises(StoreError):
        await Database.open(_unopenable(tmp_path, kind))
    assert [t for t in _workers() if t not in before and t.is_alive()] == []


async def test_data_version_changes_after_another_connection_commits(db: Database) -> None:
    before = await db.data_version()
    await SettingsRepo(db).set("own", "write")
    assert await db.data_version() == before  # own commits do not count
    other = await Database.open(db.path)
    try:
        await SettingsRepo(other).set("k", "v")
    finally:
        await other.close()
    assert await db.data_version() != before


# --- API keys -------------------------------------------------------------------------


async def test_api_key_create_persists_and_plaintext_is_never_stored(db: Database) -> None:
    repo = ApiKeyRepo(db, clock=clock)
    key, plaintext = await repo.create("ci", 2, allowed_models=["llama3", "qwen"],
                                       rate_limit_per_min=30, expires_at=NOW + 60)
    assert plaintext.startswith("sdk-") and key.prefix == plaintext[:12]
    assert key.allowed_models == ("llama3", "qwen") and key.created_at == NOW
    assert key.is_usable(NOW) and not key.is_usable(NOW + 60)
    db = await reopen(db)
    try:
        assert await ApiKeyRepo(db).list_all() == [key]
        assert await ApiKeyRepo(db).get_by_plaintext(plaintext) == key
        assert await ApiKeyRepo(db).get_by_plaintext(plaintext + "x") is None
        await db.fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        await db.close()
    blob = b"".join(p.read_bytes() for p in Path(db.path).parent.iterdir() if p.is_file())
    assert plaintext.encode() not in blob
    assert plaintext[12:].encode() not in blob


async def test_api_key_revoke_by_id_prefix_and_full_key(db: Database) -> None:
    repo = ApiKeyRepo(db)
    a, _ = await repo.create("a", 1)
    b, _ = await repo.create("b", 1)
    c, c_plain = await repo.create("c", 1, is_admin=True)
    revoked = await repo.revoke(str(a.id))
    assert revoked is not None and revoked.id == a.id and not revoked.is_active
    assert (await repo.revoke(b.prefix)).id == b.id  # type: ignore[union-attr]
    assert (await repo.revoke(c_plain)).id == c.id  # type: ignore[union-attr]
    assert await repo.revoke("999") is None and await repo.revoke("sdk-nope0000") is None
    db = await reopen(db)
    try:
        keys = await ApiKeyRepo(db).list_all()
        assert [k.is_active for k in keys] == [False, False, False]
        assert keys[2].is_admin and not keys[0].is_admin
    finally:
        await db.close()


async def test_api_key_revoke_ambiguous_prefix(db: Database) -> None:
    repo = ApiKeyRepo(db)
    a, _ = await repo.create("a", 1)
    await repo.create("b", 1)
    await db.execute("UPDATE api_keys SET prefix = ?", (a.prefix,))
    with pytest.raises(Ambiguous):
        await repo.revoke(a.prefix)


async def test_api_key_touch_many_never_goes_backwards(db: Database) -> None:
    repo = ApiKeyRepo(db)
    a, _ = await repo.create("a", 1)
    b, _ = await repo.create("b", 1)
    await repo.touch_many({a.id: 100.0, b.id: 200.0})
    await repo.touch_many({a.id: 50.0})
    assert (await repo.get(a.id)).last_used == 100.0  # type: ignore[union-attr]
    assert (await repo.get(b.id)).last_used == 200.0  # type: ignore[union-attr]


# --- whitelist ------------------------------------------------------------------------


async def test_whitelist_add_list_remove_and_persist(db: Database) -> None:
    repo = WhitelistRepo(db, clock=clock)
    entry = await repo.add("127.0.0.1", priority=0, label="local")
    assert entry.network == "127.0.0.1/32" and entry.label == "local"
    await repo.add("10.0.0.0/8")
    db = await reopen(db)
    try:
        repo = WhitelistRepo(db)
        assert [e.network for e in await repo.list_all()] == ["127.0.0.1/32", "10.0.0.0/8"]
        assert await repo.remove("127.0.0.1") is True
        assert await repo.remove("127.0.0.1") is False
        assert [e.network for e in await repo.list_all()] == ["10.0.0.0/8"]
    finally:
        await db.close()


async def test_whitelist_duplicate_and_garbage(db: Database) -> None:
    repo = WhitelistRepo(db)
    await repo.add("10.0.0.0/8")
    with pytest.raises(AlreadyExists):
        await repo.add("10.1.2.3/8")  # same network once normalised
    with pytest.raises(ValueError):
        await repo.add("not-an-ip")


# --- users ----------------------------------------------------------------------------


async def test_users_crud_and_persist(db: Database) -> None:
    repo = UserRepo(db, clock=clock)
    alice = await repo.create("Alice", "hash-a", is_admin=True)
    bob = await repo.create("bob", "hash-b")
    with pytest.raises(AlreadyExists):
        await repo.create("alice", "hash-x")
    assert await repo.count_admins() == 1
    await repo.record_login(alice.id, NOW + 5)
    assert await repo.update_password_hash(bob.id, "hash-b2")
    off = await repo.set_active("BOB", False)
    assert off is not None and off.is_active is False and off.token_generation == 1
    assert await repo.set_active("nobody", True) is None
    db = await reopen(db)
    try:
        repo = UserRepo(db)
        got = await repo.get_by_username("ALICE")
        assert got is not None and got.last_login == NOW + 5 and got.is_admin
        assert (await repo.get(bob.id)).password_hash == "hash-b2"  # type: ignore[union-attr]
        assert [u.username for u in await repo.list_all()] == ["Alice", "bob"]
        back = await repo.set_active(str(bob.id), True)
        assert back is not None and back.is_active and back.token_generation == 1  # stays bumped
    finally:
        await db.close()


async def test_the_last_active_admin_cannot_be_deactivated(db: Database) -> None:
    repo = UserRepo(db, clock=clock)
    await repo.create("root", "h", is_admin=True)
    await repo.create("plain", "h")
    with pytest.raises(LastActiveAdmin, match="'root' is the last active admin"):
        await repo.set_active("root", False)
    await repo.create("second", "h", is_admin=True)
    assert (await repo.set_active("root", False)).is_active is False  # type: ignore[union-attr]
    with pytest.raises(LastActiveAdmin):
        await repo.set_active("second", False)
    assert await repo.count_admins() == 1


# --- registration tokens --------------------------------------------------------------


async def test_registration_token_redeemed_once_and_persisted(db: Database) -> None:
    repo = RegistrationTokenRepo(db, clock=clock)
    token, plaintext = await repo.create(is_admin=True, note="for carol")
    assert plaintext.startswith("sdr-") and token.prefix == plaintext[:12]
    db = await reopen(db)
    try:
        repo = RegistrationTokenRepo(db)
        made = await repo.redeem(plaintext, "carol", "hash", NOW)
        assert made.user is not None and made.user.username == "carol" and made.user.is_admin
        assert (await repo.redeem(plaintext, "mallory", "hash", NOW)).refusal is Refusal.USED
        assert (await repo.redeem("sdr-unknown", "mallory", "hash", NOW)).refusal is Refusal.UNKNOWN
        [stored] = await repo.list_all()
        assert stored.used_at == NOW and stored.used_by == "carol" and stored.note == "for carol"
    finally:
        await db.close()


async def test_registration_token_expired_refused(db: Database) -> None:
    repo = RegistrationTokenRepo(db)
    _, plaintext = await repo.create(expires_at=NOW)
    assert await repo.check(plaintext, NOW) is Refusal.EXPIRED
    assert (await repo.redeem(plaintext, "late", "hash", NOW)).refusal is Refusal.EXPIRED
    _, plaintext = await repo.create(expires_at=NOW + 1)
    assert await repo.check(plaintext, NOW) is None
    assert (await repo.redeem(plaintext, "on-time", "hash", NOW)).user is not None


async def test_registration_with_a_taken_name_leaves_the_token_unused(db: Database) -> None:
    await UserRepo(db).create("Taken", "h")
    repo = RegistrationTokenRepo(db)
    _, plaintext = await repo.create()
    with pytest.raises(AlreadyExists):
        await repo.redeem(plaintext, "taken", "hash", NOW)
    [stored] = await repo.list_all()
    assert stored.used_at is None and stored.used_by is None
    assert (await repo.redeem(plaintext, "fresh", "hash", NOW)).user is not None


async def test_bootstrap_token_stops_working_once_an_admin_exists(db: Database) -> None:
    repo = RegistrationTokenRepo(db)
    _, bootstrap = await repo.create(is_admin=True, is_bootstrap=True)
    _, ordinary = await repo.create(is_admin=True)
    assert await repo.check(bootstrap, NOW) is None
    await UserRepo(db).create("made-elsewhere", "h", is_admin=True)
    assert await repo.check(bootstrap, NOW) is Refusal.ADMIN_EXISTS
    assert (await repo.redeem(bootstrap, "late", "hash", NOW)).refusal is Refusal.ADMIN_EXISTS
    assert (await repo.redeem(ordinary, "second-admin", "hash", NOW)).user is not None


async def test_registration_token_concurrent_redeem_has_one_winner(db: Database) -> None:
    other = await Database.open(db.path)
    try:
        _, plaintext = await RegistrationTokenRepo(db).create()
        repos = [RegistrationTokenRepo(db), RegistrationTokenRepo(other)]
        results = await asyncio.gather(
            *(repos[i % 2].redeem(plaintext, f"user{i}", "hash", NOW) for i in range(20))
        )
    finally:
        await other.close()
    winners = [r for r in results if r.user is not None]
    assert len(winners) == 1
    assert [u.username for u in await UserRepo(db).list_all()] == [winners[0].user.username]  # type: ignore[union-attr]


# --- sessions -------------------------------------------------------------------------


async def test_session_refresh_tokens_rotate_and_a_reuse_revokes_the_session(db: Database) -> None:
    user = await UserRepo(db).create("sam", "h")
    sessions = SessionRepo(db, clock=clock)
    sid = await sessions.open(user.id, "jti-1", NOW + 100)
    assert await sessions.session_of("jti-1") == sid
    assert (await sessions.rotate(user.id, "jti-1", "jti-2", NOW + 200)).outcome is Rotation.ROTATED
    assert (await sessions.rotate(user.id, "jti-2", "jti-3", NOW + 200)).outcome is Rotation.ROTATED
    assert (await sessions.rotate(user.id + 1, "jti-3", "jti-x", NOW + 200)).outcome is Rotation.UNKNOWN
    assert await sessions.revoked_ids() == frozenset()
    reused = await sessions.rotate(user.id, "jti-1", "jti-4", NOW + 200)
    assert (reused.outcome, reused.session_id) == (Rotation.REUSED, sid)
    assert await sessions.revoked_ids() == {sid}
    assert (await sessions.rotate(user.id, "jti-3", "jti-5", NOW + 200)).outcome is Rotation.REVOKED


async def test_session_revoke_once_and_expired_sessions_are_dropped(db: Database) -> None:
    user = await UserRepo(db).create("ola", "h")
    sessions = SessionRepo(db, clock=clock)
    old = await sessions.open(user.id, "old-1", NOW - 1)  # already over
    live = await sessions.open(user.id, "live-1", NOW + 100)  # its open drops `old`
    assert await sessions.session_of("old-1") is None
    assert await sessions.revoke(live) is True
    assert await sessions.revoke(live) is False
    assert await sessions.revoke(old) is False
    assert await sessions.revoked_ids() == {live}


# --- settings -------------------------------------------------------------------------


async def test_settings_and_secret_persist(db: Database) -> None:
    repo = SettingsRepo(db)
    assert await repo.get("missing") is None
    await repo.set("k", "1")
    await repo.set("k", "2")
    calls: list[int] = []

    def factory() -> str:
        calls.append(1)
        return "generated"

    assert await repo.get_or_create_secret("jwt", factory) == "generated"
    assert await repo.get_or_create_secret("jwt", factory) == "generated"
    assert len(calls) == 1
    db = await reopen(db)
    try:
        assert await SettingsRepo(db).get("k") == "2"
        assert await SettingsRepo(db).get_or_create_secret("jwt", lambda: "other") == "generated"
    finally:
        await db.close()


# --- write-behind ---------------------------------------------------------------------


class RecordingFlush:
    def __init__(self, failures: int = 0) -> None:
        self.batches: list[dict[int, float]] = []
        self.failures = failures

    async def __call__(self, batch: dict[int, float]) -> None:
        if self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("database is locked")
        self.batches.append(dict(batch))


async def test_batcher_mark_is_sync() -> None:
    batcher = LastUsedBatcher(RecordingFlush())
    assert not inspect.iscoroutinefunction(batcher.mark)
    batcher.mark(1, 1.0)  # returns at once, nothing to await
    assert batcher.pending == 1


async def test_batcher_flushes_on_interval_and_on_close() -> None:
    flush = RecordingFlush()
    batcher = LastUsedBatcher(flush, interval_s=0.02)
    batcher.start()
    batcher.mark(1, 10.0)
    batcher.mark(1, 5.0)  # older: ignored
    batcher.mark(2, 20.0)
    for _ in range(100):
        if flush.batches:
            break
        await asyncio.sleep(0.01)
    assert flush.batches == [{1: 10.0, 2: 20.0}]
    batcher.mark(3, 30.0)
    await batcher.close()
    assert flush.batches[-1] == {3: 30.0}


async def test_batcher_close_without_start_flushes() -> None:
    flush = RecordingFlush()
    batcher = LastUsedBatcher(flush, interval_s=60)
    batcher.mark(7, 1.0)
    await batcher.close()
    assert flush.batches == [{7: 1.0}]


async def test_batcher_keeps_batch_after_failure(caplog: pytest.LogCaptureFixture) -> None:
    flush = RecordingFlush(failures=2)
    batcher = LastUsedBatcher(flush, interval_s=60)
    batcher.mark(1, 1.0)
    await batcher.flush()
    batcher.mark(1, 2.0)
    batcher.mark(2, 3.0)
    await batcher.flush()
    assert batcher.pending == 2 and flush.batches == []
    assert sum("flush failed" in r.getMessage() for r in caplog.records) == 1
    await batcher.close()
    assert flush.batches == [{1: 2.0, 2: 3.0}]


async def test_batcher_writes_through_to_api_keys(db: Database) -> None:
    repo = ApiKeyRepo(db)
    key, _ = await repo.create("a", 1)
    batcher = LastUsedBatcher(repo.touch_many, interval_s=60)
    batcher.start()
    batcher.mark(key.id, NOW)
    await batcher.close()
    assert (await repo.get(key.id)).last_used == NOW  # type: ignore[union-attr]
