"""Command line: `seadragon-gw serve` (also `python -m seadragon_gw`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .config import ConfigError, GatewayConfig, load_config

DEFAULT_CONFIG = "config.yaml"


def _add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help=f"config file (default: $SEADRAGON_CONFIG or ./{DEFAULT_CONFIG})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seadragon-gw", description="Self-hosted LLM gateway")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the gateway")
    _add_config_flag(serve)
    serve.add_argument("--host", default=None, help="listen address (overrides server.host)")
    serve.add_argument("--port", type=int, default=None, help="listen port (overrides server.port)")
    return parser


def resolve_config(path: str | None) -> GatewayConfig:
    return load_config(path or os.environ.get("SEADRAGON_CONFIG") or DEFAULT_CONFIG)


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app

    config = resolve_config(args.config)
    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    logging.basicConfig(level=config.server.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(config)
    uvicorn.run(app, host=host, port=port, log_level=config.server.log_level,
                access_log=config.server.access_log, proxy_headers=False, server_header=False)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        argv.insert(0, "serve")  # `python -m seadragon_gw --config x` means serve
    args = build_parser().parse_args(argv)
    try:
        return serve(args)
    except ConfigError as exc:
        print(f"seadragon-gw: config error: {exc}", file=sys.stderr)
        return 2
