"""Command line: `seadragon-gw serve` (also `python -m seadragon_gw`) and store commands."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from .cli_admin import add_admin_commands, run_store_command
from .config import ConfigError, GatewayConfig, load_config
from .store.bundle import Store
from .store.errors import StoreError

DEFAULT_CONFIG = "config.yaml"


def _add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help=f"config file (default: $SEADRAGON_CONFIG or ./{DEFAULT_CONFIG})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seadragon-gw", description="Self-hosted LLM gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    _add_config_flag(serve)
    serve.add_argument("--host", default=None, help="listen address (overrides server.host)")
    serve.add_argument("--port", type=int, default=None, help="listen port (overrides server.port)")
    add_admin_commands(sub, _add_config_flag)
    return parser


def resolve_config(path: str | None) -> GatewayConfig:
    return load_config(path or os.environ.get("SEADRAGON_CONFIG") or DEFAULT_CONFIG)


async def _check_store(path: str) -> None:
    """Open and migrate the database once before serving, so a bad file is one clear line."""
    store = await Store.open(path)
    await store.close()


def serve(config: GatewayConfig, args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app

    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    logging.basicConfig(level=config.server.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_check_store(config.resolve_path(config.database)))
    app = create_app(config)
    uvicorn.run(app, host=host, port=port, log_level=config.server.log_level,
                access_log=config.server.access_log, proxy_headers=False, server_header=False,
                timeout_graceful_shutdown=config.server.shutdown_grace_s)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv.insert(0, "serve")  # `python -m seadragon_gw --config x` means serve
    args = build_parser().parse_args(argv)
    try:
        config = resolve_config(args.config)
        if args.command == "serve":
            return serve(config, args)
        return run_store_command(config, args)
    except ConfigError as exc:
        print(f"seadragon-gw: config error: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"seadragon-gw: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
