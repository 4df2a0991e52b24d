"""The gateway's parts, built together and complete from the start.

`Gateway.open` runs inside the server's event loop (the store and the upstream pools need it), opens
the database first and only then builds the parts that depend on it, so no field is ever
None or filled in later. The HTTP layer reaches it through `api.context.gateway_of`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from .admin.models import ModelsAdmin
from .admin.service import AdminService
from .auth.accounts import Accounts
from .auth.authenticator import Authenticator
from .auth.credentials import CredentialCache
from .auth.hashing import BoundedHasher
from .auth.jwt_tokens import JwtCodec
from .auth.passwords import PasswordHasher
from .auth.standing import CredentialStanding
from .auth.throttle import LoginThrottle
from .auth.tokens_file import TokenFile
from .backends.registry import Registry
from .config import GatewayConfig
from .jobs.service import JobService
from .lifecycle.service import RequestService
from .limits.limiter import RateLimiter
from .managed.auto_switch import AutoSwitcher, work_check
from .managed.process import ProcessSupervisor
from .ops.operations import Operations
from .queue.scheduler import Scheduler
from .records.observers import Recorder
from .store.bundle import Store
from .store.errors import ReadOnlyDatabase
from .store.sessions import SessionRepo
from .store.write_behind import LastUsedBatcher
from .usage.logs import OpsLogs

log = logging.getLogger("seadragon_gw")
JWT_SECRET_ENV = "SEADRAGON_JWT_SECRET"


async def _stored_jwt_secret(store: Store) -> str:
    """The database's JWT secret, made on first use. A read-only database without one still
    serves: logins work with a secret for this run only (they end with the process)."""
    try:
        return await store.settings.get_or_create_secret("jwt_secret", lambda: secrets.token_urlsafe(48))
    except ReadOnlyDatabase:
        log.warning("the database is read-only and holds no JWT secret: logins last until the gateway stops")
        return secrets.token_urlsafe(48)


@dataclass(frozen=True, eq=False)
class Clocks:
    """`monotonic` orders the queue (aging); `wall` stamps records, keys and tokens."""

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time


@dataclass(eq=False)
class Gateway:
    config: GatewayConfig
    clocks: Clocks
    store: Store
    registry: Registry
    scheduler: Scheduler
    recorder: Recorder
    requests: RequestService
    credentials: CredentialCache
    auth: Authenticator
    accounts: Accounts
    last_used: LastUsedBatcher
    admin: AdminService
    limits: RateLimiter
    logs: OpsLogs
    ops: Operations
    jobs: JobService
    models: ModelsAdmin  # issue 9: managed models and backends for operators
    auto_switch: AutoSwitcher  # issue 9: profiles switched ahead of the hour's demand

    @property
    def clock(self) -> Callable[[], float]:
        return self.clocks.wall

    @classmethod
    async def open(cls, config: GatewayConfig, clocks: Clocks | None = None,
                   hasher: PasswordHasher | None = None) -> Gateway:
        """Open the store and build every part; nothing runs in the background yet."""
        clocks = clocks or Clocks()
        store = await Store.open(config.resolve_path(config.database), clocks.wall,
                                 watch_interval_s=config.database_check_s)
        try:
            return await cls._build(config, clocks, store, hasher or PasswordHasher())
        except BaseException:
            await store.close()
            raise

    @classmethod
    async def _build(cls, config: GatewayConfig, clocks: Clocks, store: Store, hasher: PasswordHasher) -> Gateway:
        registry = Registry(config.backends, clocks.monotonic, supervise=ProcessSupervisor)
        scheduler = Scheduler(registry, config.queue, clock=clocks.monotonic)
        recorder = Recorder(clocks.wall, asyncio.get_running_loop())
        requests = RequestService(registry, scheduler, recorder, config.queue, default_model=config.default_model)
        ac = config.auth
        sessions = SessionRepo(store.db, clocks.wall)
        credentials = CredentialCache(store, sessions, poll_s=ac.credentials_poll_s)
        await credentials.reload()
        last_used = LastUsedBatcher(store.api_keys.touch_many, interval_s=ac.last_used_flush_s)
        secret = ac.jwt_secret or os.environ.get(JWT_SECRET_ENV) or await _stored_jwt_secret(store)
        jwt = JwtCodec(secret, ac.jwt_access_ttl_s, ac.jwt_refresh_ttl_s, clocks.wall)
        tokens_path = config.resolve_path(ac.tokens_file) if ac.tokens_file else None
        tokens = TokenFile(tokens_path, default_priority=ac.default_token_priority, check_interval_s=ac.tokens_check_s,
                           tiers=config.rate_limits.tiers)
        auth = Authenticator(ac, tokens, credentials, jwt, last_used, clock=clocks.wall)
        passwords = BoundedHasher(hasher, ac.hash_concurrency)
        throttle = LoginThrottle(ac.login_max_failures, ac.login_window_s, clocks.monotonic)
        accounts = Accounts(store, sessions, jwt, passwords, throttle, credentials, clocks.wall)
        admin = AdminService(store, passwords, whitelist_priority=ac.whitelist_priority,
                             on_change=credentials.reload, clock=clocks.wall, tiers=config.rate_limits.tiers)
        limits = RateLimiter.build(config.rate_limits, credentials, tokens, clocks.monotonic, clocks.wall)
        limits.attach(requests, recorder)
        logs = OpsLogs(store, config.usage, clocks.wall)
        logs.attach(recorder, registry)
        ops = Operations.build(config, registry, scheduler, requests, store.db, clocks.wall)
        jobs = JobService(config.jobs, requests, store.jobs, default_model=config.default_model,
                          standing=CredentialStanding(credentials, tokens, clocks.wall).revoked)
        models = ModelsAdmin(registry, scheduler, clocks.wall)
        recorder.subscribe(models.totals)
        auto_switch = AutoSwitcher(config.auto_switch, registry, store.usage, work_check(scheduler.waiting),
                                   clocks.wall)
        return cls(config, clocks, store, registry, scheduler, recorder, requests, credentials, auth,
                   accounts, last_used, admin, limits, logs, ops, jobs, models, auto_switch)

    async def start(self) -> None:
        """Start the background work: credential polling, batching, health, dispatchers."""
        self.credentials.start()
        self.last_used.start()
        self.logs.start()
        self.limits.restore(await self.logs.today())
        await self.registry.start()
        self.scheduler.start()
        await self.jobs.start()  # after the dispatchers: queued jobs enter the queue at once
        self.auto_switch.start()  # only with auto_switch.enabled
        log.info("seadragon_gw ready: %d backend(s)", len(self.registry.backends))

    async def close(self) -> None:
        await self.auto_switch.close()
        await self.jobs.close()  # first: queued jobs stay queued, running ones run again next start
        await self.scheduler.stop()
        await self.registry.stop()
        await self.credentials.close()
        await self.last_used.close()
        self.recorder.publish()  # the last requests' records, before the logs write the last time
        await self.logs.close()
        await self.store.close()
