"""Command line: `seadragon-gw serve` (also `python -m seadragon_gw`) and store commands."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from .cli_admin import add_admin_commands, run_store_command
from .config import ConfigError, GatewayConfig, load_config
from .store.bundle import Store
from .store.errors import StoreError

if TYPE_CHECKING:
    from .gateway import Gateway

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
    store = await Store.open(path, watch_interval_s=None)  # the gateway reports problems itself
    await store.close()


def serve(config: GatewayConfig, args: argparse.Namespace) -> int:
    """Bind first (a busy port is one line and exit 2, before anything says ready), create a
    first user's token on a fresh install, then serve and print where, once it listens."""
    from . import banner, serving
    from .app import create_app
    from .first_run import create_tokens_file
    from .gc_pacing import gc_pacer_for
    from .listen import ListenError, bind
    from .server.options import uvicorn_options

    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    config = dataclasses.replace(config, server=dataclasses.replace(config.server, host=host, port=port))
    logging.basicConfig(level=config.server.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        sock = bind(host, port)
    except ListenError as exc:
        where = config_path(args)
        print(banner.port_in_use(host, port, where) if exc.in_use else
              banner.cannot_listen(host, port, exc.reason, where), file=sys.stderr)
        return 2
    with sock:
        asyncio.run(_check_store(config.resolve_path(config.database)))
        tokens_path = config.resolve_path(config.auth.tokens_file) if config.auth.tokens_file else None
        first = create_tokens_file(tokens_path) if tokens_path else None
        app = create_app(config, gc_pacer=gc_pacer_for(config))
        url = banner.base_url(host, int(sock.getsockname()[1]))

        def announce() -> None:
            text = banner.listening(url, host)
            if first is not None and tokens_path is not None:
                model, kind = _first_model(app)
                text += banner.first_user(banner.shown_path(tokens_path), first.name, url, first.token, model, kind)
            print(text, flush=True)  # the console, never the log: it may carry the new token

        serving.run(app, uvicorn_options(config.server), sock, announce, lambda: _stop_accepting(app))
    return 0


def _stop_accepting(app: Any) -> None:
    """A stop signal arrived: the gateway refuses new requests and answers waiting ones."""
    from .gateway import Gateway
    from .shutdown import stop_accepting

    gateway = getattr(app.state, "gateway", None)
    if isinstance(gateway, Gateway):  # else start-up failed and there is nothing to stop
        stop_accepting(gateway)


def config_path(args: argparse.Namespace) -> str:
    return str(args.config or os.environ.get("SEADRAGON_CONFIG") or DEFAULT_CONFIG)


def _first_model(app: Any) -> tuple[str | None, str]:
    """(a model some backend listed, that backend's kind), for a first request that works."""
    gateway: Gateway = app.state.gateway
    for backend in gateway.registry.backends:
        for name in backend.models:
            return name, backend.kind
    backends = gateway.registry.backends
    return None, backends[0].kind if backends else "ollama"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["console"]:  # a client of a running gateway: no config, its own arguments
        from .console.__main__ import main as console_main

        return console_main(argv[1:])
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
