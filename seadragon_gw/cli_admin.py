"""CLI commands on the configured database: admins, API keys, whitelist, registration tokens.

They write straight to SQLite, also while the gateway runs: the gateway notices another
process's commit through `PRAGMA data_version` within a few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

from .auth.accounts import validate_username
from .auth.passwords import PasswordHasher, validate_password
from .api.errors import ApiError
from .config import GatewayConfig
from .store.bundle import Store
from .store.errors import Ambiguous, AlreadyExists

Command = Callable[[Store, argparse.Namespace], Awaitable[int]]


def add_admin_commands(sub: Any, add_config: Callable[[argparse.ArgumentParser], None]) -> None:
    def command(parent: Any, name: str, fn: Command, help_: str) -> argparse.ArgumentParser:
        parser = parent.add_parser(name, help=help_)
        add_config(parser)
        parser.set_defaults(store_command=fn)
        return parser

    admin = sub.add_parser("admin", help="manage admin users").add_subparsers(dest="action", required=True)
    p = command(admin, "create", admin_create, "create an admin user")
    p.add_argument("username")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="action", required=True)
    p = command(keys, "create", keys_create, "create an API key (shown once)")
    p.add_argument("name")
    p.add_argument("--priority", type=int, default=2)
    p.add_argument("--expires-in-days", type=float, default=None)
    p.add_argument("--models", default=None, help="comma-separated allowed models")
    p.add_argument("--rate-limit", type=int, default=None, help="requests per minute")
    p.add_argument("--admin", action="store_true", help="admin scope")
    command(keys, "list", keys_list, "list API keys (never the keys themselves)")
    p = command(keys, "revoke", keys_revoke, "revoke a key by id or prefix")
    p.add_argument("key")

    wl = sub.add_parser("whitelist", help="manage the IP whitelist").add_subparsers(dest="action", required=True)
    p = command(wl, "add", whitelist_add, "whitelist an IP or CIDR range")
    p.add_argument("ip")
    p.add_argument("--priority", type=int, default=None, help="default: auth.whitelist_priority")
    p.add_argument("--label", default="")
    p = command(wl, "remove", whitelist_remove, "remove a whitelist entry")
    p.add_argument("ip")
    command(wl, "list", whitelist_list, "list whitelist entries")

    tokens = sub.add_parser("tokens", help="registration tokens").add_subparsers(dest="action", required=True)
    p = command(tokens, "create", tokens_create, "create a one-time registration token (shown once)")
    p.add_argument("--admin", action="store_true", help="registers an admin")
    p.add_argument("--expires-in-hours", type=float, default=72.0)
    p.add_argument("--note", default="")
    command(tokens, "list", tokens_list, "list registration tokens")


def run_store_command(config: GatewayConfig, args: argparse.Namespace) -> int:
    async def main() -> int:
        args.gateway_config = config
        store = await Store.open(config.resolve_path(config.database))
        try:
            return int(await args.store_command(store, args))
        finally:
            await store.close()

    return asyncio.run(main())


def _fail(message: str) -> int:
    print(f"seadragon-gw: {message}", file=sys.stderr)
    return 1


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return datetime.fromtimestamp(stamp, timezone.utc).strftime("%Y-%m-%d %H:%M")


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != first:
        raise ValueError("passwords do not match")
    return first


async def admin_create(store: Store, args: argparse.Namespace) -> int:
    try:
        username = validate_username(args.username)
        password = _read_password(args.password_stdin)
    except (ApiError, ValueError) as exc:
        return _fail(exc.message if isinstance(exc, ApiError) else str(exc))
    if problem := validate_password(password):
        return _fail(f"password: {problem}")
    password_hash = await asyncio.to_thread(PasswordHasher().hash, password)
    try:
        await store.users.create(username, password_hash, is_admin=True)
    except AlreadyExists:
        return _fail(f"user '{username}' already exists")
    print(f"admin '{username}' created")
    return 0


async def keys_create(store: Store, args: argparse.Namespace) -> int:
    expires = time.time() + args.expires_in_days * 86400 if args.expires_in_days else None
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    key, plaintext = await store.api_keys.create(
        args.name, args.priority, expires_at=expires, allowed_models=models,
        rate_limit_per_min=args.rate_limit, is_admin=args.admin)
    print(f"API key {key.id} ({key.prefix}) for '{key.name}', priority {key.priority}.")
    print("Store it now; it is not shown again:")
    print(plaintext)
    return 0


async def keys_list(store: Store, args: argparse.Namespace) -> int:
    print(f"{'id':>4}  {'prefix':<14}{'name':<20}{'prio':>4}  {'active':<7}{'admin':<6}{'expires':<17}last used")
    for k in await store.api_keys.list_all():
        print(f"{k.id:>4}  {k.prefix:<14}{k.name[:19]:<20}{k.priority:>4}  {str(k.is_active):<7}"
              f"{str(k.is_admin):<6}{_when(k.expires_at):<17}{_when(k.last_used)}")
    return 0


async def keys_revoke(store: Store, args: argparse.Namespace) -> int:
    try:
        key = await store.api_keys.revoke(args.key)
    except Ambiguous:
        return _fail(f"'{args.key}' matches several keys; use the id")
    if key is None:
        return _fail(f"no API key '{args.key}'")
    print(f"revoked key {key.id} ({key.prefix})")
    return 0


async def whitelist_add(store: Store, args: argparse.Namespace) -> int:
    try:
        priority = args.priority if args.priority is not None else args.gateway_config.auth.whitelist_priority
        entry = await store.whitelist.add(args.ip, priority=priority, label=args.label)
    except ValueError as exc:
        return _fail(str(exc))
    except AlreadyExists:
        return _fail(f"{args.ip} is already whitelisted")
    print(f"whitelisted {entry.network} (priority {entry.priority})")
    return 0


async def whitelist_remove(store: Store, args: argparse.Namespace) -> int:
    try:
        removed = await store.whitelist.remove(args.ip)
    except ValueError as exc:
        return _fail(str(exc))
    if not removed:
        return _fail(f"{args.ip} is not whitelisted")
    print(f"removed {args.ip}")
    return 0


async def whitelist_list(store: Store, args: argparse.Namespace) -> int:
    for e in await store.whitelist.list_all():
        print(f"{e.network:<40} priority {e.priority:<4} {e.label}")
    return 0


async def tokens_create(store: Store, args: argparse.Namespace) -> int:
    expires = time.time() + args.expires_in_hours * 3600 if args.expires_in_hours else None
    token, plaintext = await store.registration_tokens.create(
        is_admin=args.admin, expires_at=expires, note=args.note)
    print(f"registration token {token.id} ({'admin' if token.is_admin else 'user'}), "
          f"expires {_when(token.expires_at)}. It is shown once:")
    print(plaintext)
    return 0


async def tokens_list(store: Store, args: argparse.Namespace) -> int:
    for t in await store.registration_tokens.list_all():
        state = f"used by {t.used_by}" if t.used_at else "unused"
        print(f"{t.id:>4}  {t.prefix:<14}{'admin' if t.is_admin else 'user':<6}"
              f"expires {_when(t.expires_at):<17}{state}  {t.note}")
    return 0
