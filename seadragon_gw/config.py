"""Configuration: typed records loaded from `config.yaml`, validated strictly.

A typo in a config key is a silent misconfiguration, so unknown keys and wrong types stop
start-up with one line that names the key (`ConfigError`).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(Exception):
    """A config problem, worded as one line that names the offending key."""


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 11435
    max_body_bytes: int = 100 * 1024 * 1024
    log_level: str = "info"
    access_log: bool = False
    shutdown_grace_s: float = 30.0
    # Edges of the HTTP server (seadragon_gw/server): an unauthenticated client must not hold or
    # freeze the gateway, so every connection has a deadline and their number a cap.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keepalive_s: float = 5.0
    max_connections: int = 1024
    # Garbage collection with thousands waiting (seadragon_gw/gc_pacing.py): survivors of a full
    # collection that took this long are frozen (None: never; the pauses are still measured);
    # frozen ones are collected again when nothing is in progress, and at least this often.
    gc_freeze_after_ms: float | None = 5.0
    gc_thaw_interval_s: float = 600.0
    # Browser pages on these origins (exactly `scheme://host[:port]`) may call the API with
    # credentials (CORS); none by default.
    cors_origins: list[str] = field(default_factory=list)


@dataclass
class AuthConfig:
    tokens_file: str | None = "tokens.json"
    anonymous_read: bool = True
    trusted_proxies: list[str] = field(default_factory=list)
    default_token_priority: int = 2
    jwt_secret: str | None = None
    jwt_access_ttl_s: int = 3600
    jwt_refresh_ttl_s: int = 14 * 86400
    jwt_priority: int = 3
    whitelist_priority: int = 1
    # Failed logins allowed per username and per client address within the window, then 429;
    # password hashes computed at once (more get 503 at once instead of queueing threads).
    login_max_failures: int = 5
    login_window_s: float = 60.0
    hash_concurrency: int = 2
    # How often tokens.json is checked, the database polled for other processes' credential
    # changes, and API keys' last-used times written.
    tokens_check_s: float = 0.5
    credentials_poll_s: float = 2.0
    last_used_flush_s: float = 2.0


@dataclass
class QueueConfig:
    aging_per_minute: float = 0.1
    max_waiting: int = 512
    timeout_s: float = 600.0
    early_headers: bool = True
    header_grace_s: float = 5.0
    sse_keepalive_s: float = 15.0
    retry_after_s: int = 5


@dataclass
class WebSocketConfig:
    """`/api/ws`: a browser that cannot send headers authenticates by its first message within
    `auth_timeout_s`; a socket with nothing running is closed after `idle_timeout_s` of silence;
    one socket runs at most `max_requests` at once; a queued request hears its position every
    `queued_every_s`."""

    auth_timeout_s: float = 5.0
    idle_timeout_s: float = 300.0
    max_requests: int = 8
    queued_every_s: float = 15.0


@dataclass
class ManagedHealthConfig:
    """The readiness check of a managed process: GET `path` answers `status`."""

    path: str = "/health"
    status: int = 200
    interval_s: float = 0.25


@dataclass
class ManagedProfile:
    """A named variant of a managed process (e.g. an OCR resolution): `args` appended to the
    command, `env` merged over the backend's; the same placeholders are filled in."""

    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class ManagedConfig:
    """A backend process the gateway owns (issue 9). `command` is an argv list; `{port}`,
    `{host}`, `{model_path}` and `{profile}` in it (and in `env` values and profiles) are
    replaced. The backend's `url` is then `http://{host}:{port}` (leave `url` out); `port: auto`
    takes a free port once per run. Backends with the same `group` never run at once."""

    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    host: str = "127.0.0.1"
    port: int | Literal["auto"] = "auto"
    health: ManagedHealthConfig = field(default_factory=ManagedHealthConfig)
    start_timeout_s: float = 120.0
    stop_timeout_s: float = 10.0
    idle_ttl_s: float = 0.0  # 0: never stopped for idleness
    start: Literal["on_demand", "at_startup", "manual"] = "on_demand"
    restart_backoff_s: float = 1.0  # doubled per crash in a row, at most restart_backoff_max_s
    restart_backoff_max_s: float = 60.0
    log_dir: str = "logs/managed"  # <name>.log, relative to the gateway's working directory
    log_max_bytes: int = 10 * 1024 * 1024  # then rotated to <name>.log.1
    profiles: dict[str, ManagedProfile] = field(default_factory=dict)
    default_profile: str | None = None  # the profile of a start nobody chose one for
    group: str | None = None  # an exclusive group: starting one stops the others first (one GPU)
    model_path: str | None = None  # the {model_path} placeholder


@dataclass
class BackendConfig:
    name: str
    url: str = ""  # required unless `managed` (then derived from managed.host/port)
    kind: Literal["ollama", "openai"] = "ollama"
    max_concurrent: int = 1
    models: list[str] | Literal["*"] = "*"
    api_key: str | None = None
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 600.0
    refresh_s: float = 30.0
    health_interval_s: float = 10.0
    managed: ManagedConfig | None = None
    role: str | None = None  # "ocr": the backend `POST /api/ocr` goes to (its first model)
    # Several backends of one model: the most free slots x `weight` wins; a request whose backend fails
    # before answering (no connection, or 502/503) tries another backend of the model, at most `retries` times.
    weight: float = 1.0
    retries: int = 1
    fail_threshold: int = 1  # health checks failed in a row before an up backend is marked down


@dataclass
class HealthConfig:
    # Who sees backend names, URLs and errors on /health: "authenticated" (any credential) or
    # "public"; anonymous callers always get the status.
    detail: Literal["authenticated", "public"] = "authenticated"
    database_timeout_s: float = 2.0


@dataclass
class StatsConfig:
    # Queue-wait percentiles and averages cover `window_s`; requests_per_minute `rate_window_s`.
    window_s: float = 900.0
    rate_window_s: float = 60.0
    samples_per_model: int = 2048
    max_models: int = 64


@dataclass
class MetricsConfig:
    enabled: bool = True
    public: bool = False  # /metrics without an admin credential


@dataclass
class RateTier:
    """One rate-limit tier: a token bucket (`per_minute` refill, `burst` capacity) and optional
    daily quotas (None: no quota), counted per client and reset at UTC midnight."""

    per_minute: float = 60.0
    burst: int = 10
    requests_per_day: int | None = None
    tokens_per_day: int | None = None


@dataclass
class RateLimitsConfig:
    """Off unless enabled (config.yaml enables it); `default` applies to every client without
    a tier; `tiers` are assigned to API keys, users and tokens.json entries by name."""

    enabled: bool = False
    default: RateTier = field(default_factory=RateTier)
    tiers: dict[str, RateTier] = field(default_factory=dict)
    max_clients: int = 10000  # buckets kept; the least recently used beyond it are dropped


@dataclass
class UsageConfig:
    """The usage log (every finished request, batched into SQLite), crash and missing-model logs."""

    enabled: bool = True
    flush_s: float = 2.0
    retention_days: float = 30.0
    max_batch: int = 10000  # records held while the database is down; the oldest go first
    prune_s: float = 3600.0


@dataclass
class JobsConfig:
    """Async jobs (`POST /api/jobs`, `Prefer: respond-async`): kept `retention_hours` after they
    end; a job not started within `queue_timeout_s` of its submission fails. At most
    `admit_window` jobs per model wait inside the scheduler's queue at once (the rest wait in
    the database and an index, so 100k queued jobs cost no task each); one that could not enter
    (queue full, backends draining) tries again after `retry_s`. Webhooks go only to hosts named
    in `callback_hosts` (empty: off), `callback_attempts` times, waiting `callback_backoff_s`,
    doubling, between tries."""

    retention_hours: float = 24.0
    prune_s: float = 600.0
    queue_timeout_s: float = 86400.0
    admit_window: int = 4
    retry_s: float = 2.0
    list_limit: int = 100
    callback_hosts: list[str] = field(default_factory=list)
    callback_attempts: int = 5
    callback_backoff_s: float = 2.0
    callback_timeout_s: float = 10.0


@dataclass
class AutoSwitchConfig:
    """Seed 004's auto_switch: a managed backend with profiles (or an exclusive group) is switched
    ahead of demand when the usage log says that, over the last `pattern_window_days` days, the
    coming hour brought at least `min_requests_for_switch` requests for another profile (or group
    member) and more than for the running one; never while the running one has work. Checked
    every `check_s` (see managed/auto_switch.py)."""

    enabled: bool = False
    pattern_window_days: int = 7
    min_requests_for_switch: int = 10
    check_s: float = 300.0


@dataclass
class GatewayConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    backends: list[BackendConfig] = field(default_factory=list)
    rate_limits: RateLimitsConfig = field(default_factory=RateLimitsConfig)
    usage: UsageConfig = field(default_factory=UsageConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    websocket: WebSocketConfig = field(default_factory=WebSocketConfig)
    auto_switch: AutoSwitchConfig = field(default_factory=AutoSwitchConfig)
    default_model: str | None = None  # seed 000: used when an inference request names no model
    database: str = "seadragon.db"
    database_check_s: float = 5.0  # how often the file is checked (deleted, made read-only)
    base_dir: str = "."

    def resolve_path(self, path: str) -> str:
        """Relative paths in the config are relative to the config file's folder."""
        return str(Path(self.base_dir, path).resolve()) if not os.path.isabs(path) else path


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    """Read and validate a YAML config file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config file {file}: {exc.strerror or exc}") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {file}: invalid YAML: {' '.join(str(exc).split())}") from None
    config = parse_config(raw)
    config.base_dir = str(file.resolve().parent)
    return config


def parse_config(raw: Any) -> GatewayConfig:
    """Build a GatewayConfig from plain data, naming the first bad key."""
    config = _build(GatewayConfig, raw, "")
    assert isinstance(config, GatewayConfig)
    _check_semantics(config)
    return config


def _build(cls: type[Any], raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {_kind(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "base_dir"}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{where}{key}"
        if key not in fields:
            raise ConfigError(f"{name}: unknown key (expected one of: {', '.join(fields)})")
        values[key] = _coerce(hints[key], value, name)
    for f in fields.values():
        no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if no_default and f.name not in values:
            raise ConfigError(f"{where}{f.name}: required key is missing")
    return cls(**values)


def _coerce(hint: Any, value: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, name + ".")
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(typing.get_args(hint), value, name)
    if origin is Literal:
        if value not in typing.get_args(hint):
            allowed = ", ".join(repr(a) for a in typing.get_args(hint))
            raise ConfigError(f"{name}: must be one of {allowed}, got {value!r}")
        return value
    if origin is dict:
        return _coerce_dict(typing.get_args(hint)[1], value, name)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{name}: expected a list, got {_kind(value)}")
        (item,) = typing.get_args(hint)
        return [_coerce(item, v, f"{name}[{i}]") for i, v in enumerate(value)]
    return _coerce_scalar(hint, value, name)


def _coerce_dict(item: Any, value: Any, name: str) -> dict[str, Any]:
    """A mapping of names (rate-limit tiers) to values of one type."""
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: expected a mapping, got {_kind(value)}")
    for key in value:
        if not isinstance(key, str) or not key:
            raise ConfigError(f"{name}: keys must be non-empty strings, got {key!r}")
    return {key: _coerce(item, v, f"{name}.{key}") for key, v in value.items()}


def _coerce_union(options: tuple[Any, ...], value: Any, name: str) -> Any:
    if value is None and type(None) in options:
        return None
    errors = []
    for option in options:
        if option is type(None):
            continue
        try:
            return _coerce(option, value, name)
        except ConfigError as exc:
            errors.append(str(exc))
    raise ConfigError(errors[0] if len(errors) == 1 else f"{name}: unexpected value {value!r}")


def _coerce_scalar(hint: Any, value: Any, name: str) -> Any:
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and isinstance(value, hint):
        return value
    raise ConfigError(f"{name}: expected {hint.__name__}, got {_kind(value)} {value!r}")


def _check_semantics(config: GatewayConfig) -> None:
    names: set[str] = set()
    for i, backend in enumerate(config.backends):
        where = f"backends[{i}]"
        if backend.name in names:
            raise ConfigError(f"{where}.name: duplicate backend name {backend.name!r}")
        names.add(backend.name)
        if backend.managed is not None:
            _check_managed(backend, where)
        elif not backend.url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.url: must start with http:// or https://")
        if backend.max_concurrent < 1:
            raise ConfigError(f"{where}.max_concurrent: must be at least 1")
        if backend.weight <= 0:
            raise ConfigError(f"{where}.weight: must be positive")
        if backend.retries < 0:
            raise ConfigError(f"{where}.retries: must be 0 (no other backend is tried) or more")
        if backend.fail_threshold < 1:
            raise ConfigError(f"{where}.fail_threshold: must be at least 1")
    _check_groups(config.backends)
    if config.queue.max_waiting < 0:
        raise ConfigError("queue.max_waiting: must be 0 or more")
    if config.queue.timeout_s <= 0:
        raise ConfigError("queue.timeout_s: must be positive")
    if config.database_check_s <= 0:
        raise ConfigError("database_check_s: must be positive")
    if config.default_model is not None and not config.default_model.strip():
        raise ConfigError("default_model: must be a model name (leave it out for none)")
    for key in ("auth_timeout_s", "idle_timeout_s", "max_requests", "queued_every_s"):
        if getattr(config.websocket, key) <= 0:
            raise ConfigError(f"websocket.{key}: must be positive")
    if config.server.max_body_bytes < 1024:
        raise ConfigError("server.max_body_bytes: must be at least 1024")
    if config.server.gc_freeze_after_ms is not None and config.server.gc_freeze_after_ms < 0:
        raise ConfigError("server.gc_freeze_after_ms: must be 0 or more (leave it null to never freeze)")
    for key in ("header_timeout_s", "body_timeout_s", "keepalive_s", "max_connections", "gc_thaw_interval_s"):
        if getattr(config.server, key) <= 0:
            raise ConfigError(f"server.{key}: must be positive")
    _check_cors_origins(config.server.cors_origins)
    for key in ("login_max_failures", "login_window_s", "hash_concurrency", "tokens_check_s",
                "credentials_poll_s", "last_used_flush_s"):
        if getattr(config.auth, key) <= 0:
            raise ConfigError(f"auth.{key}: must be positive")
    _check_limits_and_usage(config)
    for key in ("pattern_window_days", "min_requests_for_switch", "check_s"):
        if getattr(config.auto_switch, key) <= 0:
            raise ConfigError(f"auto_switch.{key}: must be positive")
    _check_jobs(config.jobs)
    _check_operations(config)


def _check_managed(backend: BackendConfig, where: str) -> None:
    managed = backend.managed
    assert managed is not None
    if backend.url:
        raise ConfigError(f"{where}.url: leave it out for a managed backend (it is http://host:port)")
    if not managed.command or not all(managed.command):
        raise ConfigError(f"{where}.managed.command: must be a non-empty list of non-empty strings")
    if isinstance(managed.port, int) and not 0 < managed.port < 65536:
        raise ConfigError(f"{where}.managed.port: must be 1-65535 or 'auto'")
    for key in ("start_timeout_s", "stop_timeout_s", "restart_backoff_s", "restart_backoff_max_s",
                "log_max_bytes"):
        if getattr(managed, key) <= 0:
            raise ConfigError(f"{where}.managed.{key}: must be positive")
    if managed.idle_ttl_s < 0:
        raise ConfigError(f"{where}.managed.idle_ttl_s: must be 0 (never) or more")
    if not managed.health.path.startswith("/") or managed.health.interval_s <= 0:
        raise ConfigError(f"{where}.managed.health: path must start with / and interval_s be positive")
    _check_profiles(managed, where)


def _check_groups(backends: list[BackendConfig]) -> None:
    """Members of one exclusive group never run at once: two started at startup would stop
    each other in turn (which one won would be a race), so only one may be `at_startup`."""
    first: dict[str, int] = {}
    for i, backend in enumerate(backends):
        managed = backend.managed
        if managed is None or managed.group is None or managed.start != "at_startup":
            continue
        if managed.group in first:
            j = first[managed.group]
            raise ConfigError(f"backends[{i}].managed.start: at_startup, like backends[{j}] "
                              f"({backends[j].name!r}) of the same exclusive group {managed.group!r}; members "
                              "of a group never run at once, so at most one may start at startup")
        first[managed.group] = i


def _check_profiles(managed: ManagedConfig, where: str) -> None:
    known = ", ".join(managed.profiles) or "none"
    if managed.default_profile is not None and managed.default_profile not in managed.profiles:
        raise ConfigError(f"{where}.managed.default_profile: {managed.default_profile!r} is not one of "
                          f"its profiles ({known})")
    for name, profile in managed.profiles.items():
        if not all(profile.args):
            raise ConfigError(f"{where}.managed.profiles.{name}.args: must be non-empty strings")
    if managed.group is not None and not managed.group.strip():
        raise ConfigError(f"{where}.managed.group: must be a group name (leave it out for none)")


def _check_cors_origins(origins: list[str]) -> None:
    """Exact origins only: a wildcard would hand every page the caller's credentials."""
    for i, origin in enumerate(origins):
        scheme, _, rest = origin.partition("://")
        if scheme not in ("http", "https") or not rest or "/" in rest or "*" in rest or origin != origin.strip():
            raise ConfigError(f"server.cors_origins[{i}]: must be an exact origin such as https://app.example.com "
                              f"(scheme://host[:port], no path, no wildcard), got {origin!r}")


def _check_operations(config: GatewayConfig) -> None:
    if config.health.database_timeout_s <= 0:
        raise ConfigError("health.database_timeout_s: must be positive")
    for key in ("window_s", "rate_window_s", "samples_per_model", "max_models"):
        if getattr(config.stats, key) <= 0:
            raise ConfigError(f"stats.{key}: must be positive")


def _check_limits_and_usage(config: GatewayConfig) -> None:
    limits = config.rate_limits
    tiers = {"rate_limits.default": limits.default,
             **{f"rate_limits.tiers.{name}": tier for name, tier in limits.tiers.items()}}
    for where, tier in tiers.items():
        if tier.per_minute <= 0:
            raise ConfigError(f"{where}.per_minute: must be positive")
        if tier.burst < 1:
            raise ConfigError(f"{where}.burst: must be at least 1")
        for key in ("requests_per_day", "tokens_per_day"):
            if getattr(tier, key) is not None and getattr(tier, key) < 1:
                raise ConfigError(f"{where}.{key}: must be at least 1 (leave it out for no quota)")
    if limits.max_clients < 1:
        raise ConfigError("rate_limits.max_clients: must be at least 1")
    for key in ("flush_s", "retention_days", "max_batch", "prune_s"):
        if getattr(config.usage, key) <= 0:
            raise ConfigError(f"usage.{key}: must be positive")


def _check_jobs(jobs: JobsConfig) -> None:
    for key in ("retention_hours", "prune_s", "queue_timeout_s", "admit_window", "retry_s", "list_limit",
                "callback_attempts", "callback_backoff_s", "callback_timeout_s"):
        if getattr(jobs, key) <= 0:
            raise ConfigError(f"jobs.{key}: must be positive")
    for i, host in enumerate(jobs.callback_hosts):
        if not host.strip() or host != host.strip().lower() or "/" in host:
            raise ConfigError(f"jobs.callback_hosts[{i}]: must be a lower-case host name or address, got {host!r}")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
