"""CLI commands on the configured database: admins, API keys, whitelist, registration tokens.

They call the same admin service as the HTTP admin API (one validation, one set of rules)
and print its error messages. They write straight to SQLite, also while the gateway runs:
the gateway notices another process's commit through `PRAGMA data_version` within
`auth.credentials_poll_s`, and a login reads its user afresh.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from .admin.service import CONSOLE, AdminService
from .auth.hashing import BoundedHasher
from .auth.passwords import PasswordHasher
from .config import GatewayConfig
from .errors import GatewayError
from .store.bundle import Store

Command = Callable[[AdminService, argparse.Namespace], Awaitable[int]]


def add_admin_commands(sub: Any, add_config: Callable[[argparse.ArgumentParser], None]) -> None:
    def command(parent: Any, name: str, fn: Command, help_: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(name, help=help_)
        add_config(parser)
        parser.set_defaults(store_command=fn)
        return parser

    admin = sub.add_parser("admin", help="manage admin users").add_subparsers(dest="action", required=True)
    p = command(admin, "create", admin_create, "create an admin user")
    p.add_argument("username")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.add_argument("--tier", default=None, help="rate-limit tier (a rate_limits.tiers name)")

    users = sub.add_parser("users", help="manage users").add_subparsers(dest="action", required=True)
    p = command(users, "set-tier", users_set_tier, "give a user a rate-limit tier ('default' for none)")
    p.add_argument("username")
    p.add_argument("tier")
    p = command(users, "set-admin", users_set_admin, "make a user an admin (yes) or not (no)")
    p.add_argument("username")
    p.add_argument("admin", choices=["yes", "no"])

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="action", required=True)
    p = command(keys, "create", keys_create, "create an API key (shown once)")
    p.add_argument("name")
    p.add_argument("--priority", type=int, default=2)
    p.add_argument("--expires-in-days", type=float, default=None)
    p.add_argument("--models", default=None, help="comma-separated allowed models")
    p.add_argument("--rate-limit", type=int, default=None, help="requests per minute")
    p.add_argument("--tier", default=None, help="rate-limit tier (a rate_limits.tiers name)")
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
        store = await Store.open(config.resolve_path(config.database), watch_interval_s=None)
        try:
            service = AdminService(store, BoundedHasher(PasswordHasher(), slots=1),
                                   whitelist_priority=config.auth.whitelist_priority, on_change=_nothing,
                                   tiers=config.rate_limits.tiers)
            return int(await args.store_command(service, args))
        except GatewayError as exc:
            return _fail(exc.message)
        finally:
            await store.close()

    return asyncio.run(main())


async def _nothing() -> None:
    """A running gateway sees the CLI's commits by polling; there is no cache here."""


def _fail(message: str) -> int:
    print(f"seadragon-gw: {message}", file=sys.stderr)
    return 1


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M")


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != first:
        raise ValueError("passwords do not match")
    return first


async def admin_create(admin: AdminService, args: argparse.Namespace) -> int:
    try:
        password = _read_password(args.password_stdin)
    except ValueError as exc:
        return _fail(str(exc))
    fields: dict[str, object] = {"username": args.username, "password": password, "is_admin": True}
    if args.tier is not None:
        fields["tier"] = args.tier
    user = await admin.create_user(fields, CONSOLE)
    print(f"admin '{user.username}' created")
    return 0


async def users_set_tier(admin: AdminService, args: argparse.Namespace) -> int:
    tier = None if args.tier == "default" else args.tier
    user = await admin.change_user(args.username, {"tier": tier}, CONSOLE)
    print(f"user '{user.username}' now has {'tier ' + user.tier if user.tier else 'the default limits'}")
    return 0


async def users_set_admin(admin: AdminService, args: argparse.Namespace) -> int:
    user = await admin.change_user(args.username, {"is_admin": args.admin == "yes"}, CONSOLE)
    print(f"user '{user.username}' is {'now' if user.is_admin else 'no longer'} an admin")
    return 0


async def keys_create(admin: AdminService, args: argparse.Namespace) -> int:
    fields: dict[str, object] = {"name": args.name, "priority": args.priority, "is_admin": args.admin}
    if args.expires_in_days:
        fields["expires_in_s"] = args.expires_in_days * 86400
    if args.models is not None:
        fields["allowed_models"] = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.rate_limit is not None:
        fields["rate_limit_per_min"] = args.rate_limit
    if args.tier is not None:
        fields["tier"] = args.tier
    created = await admin.create_key(fields, CONSOLE)
    key = created.key
    tier = f", tier {key.tier}" if key.tier else ""
    print(f"API key {key.id} ({key.prefix}) for '{key.name}', priority {key.priority}{tier}.")
    print("Store it now; it is not shown again:")
    print(created.plaintext)
    return 0


async def keys_list(admin: AdminService, args: argparse.Namespace) -> int:
    print(f"{'id':>4}  {'prefix':<14}{'name':<20}{'prio':>4}  {'active':<7}{'admin':<6}{'expires':<17}last used")
    for k in await admin.list_keys():
        print(f"{k.id:>4}  {k.prefix:<14}{k.name[:19]:<20}{k.priority:>4}  {k.is_active!s:<7}"
              f"{k.is_admin!s:<6}{_when(k.expires_at):<17}{_when(k.last_used)}")
    return 0


async def keys_revoke(admin: AdminService, args: argparse.Namespace) -> int:
    key = await admin.revoke_key(args.key, CONSOLE)
    print(f"revoked key {key.id} ({key.prefix})")
    return 0


async def whitelist_add(admin: AdminService, args: argparse.Namespace) -> int:
    fields: dict[str, object] = {"ip": args.ip, "label": args.label}
    if args.priority is not None:
        fields["priority"] = args.priority
    entry = await admin.add_whitelist(fields, CONSOLE)
    print(f"whitelisted {entry.network} (priority {entry.priority})")
    return 0


async def whitelist_remove(admin: AdminService, args: argparse.Namespace) -> int:
    print(f"removed {await admin.remove_whitelist(args.ip, CONSOLE)}")
    return 0


async def whitelist_list(admin: AdminService, args: argparse.Namespace) -> int:
    for e in await admin.list_whitelist():
        print(f"{e.network:<40} priority {e.priority:<4} {e.label}")
    return 0


async def tokens_create(admin: AdminService, args: argparse.Namespace) -> int:
    fields: dict[str, object] = {"is_admin": args.admin, "note": args.note}
    if args.expires_in_hours:
        fields["expires_in_s"] = args.expires_in_hours * 3600
    created = await admin.create_registration_token(fields, CONSOLE)
    token = created.token
    print(f"registration token {token.id} ({'admin' if token.is_admin else 'user'}), "
          f"expires {_when(token.expires_at)}. It is shown once:")
    print(created.plaintext)
    return 0


async def tokens_list(admin: AdminService, args: argparse.Namespace) -> int:
    for t in await admin.list_registration_tokens():
        state = f"used by {t.used_by}" if t.used_at else "unused"
        print(f"{t.id:>4}  {t.prefix:<14}{'admin' if t.is_admin else 'user':<6}"
              f"expires {_when(t.expires_at):<17}{state}  {t.note}")
    return 0
