"""`python -m seadragon_gw.console URL [TOKEN]` (seed 004's form) and `seadragon-gw console`."""

from __future__ import annotations

import argparse
import getpass
import sys

DEFAULT_URL = "http://127.0.0.1:11435"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seadragon-gw console", description="Live status of a gateway in the terminal")
    p.add_argument("url", nargs="?", default=DEFAULT_URL)
    p.add_argument("token_arg", nargs="?", metavar="TOKEN", help="a bearer token or API key (seed 004's form)")
    p.add_argument("--token", help="a bearer token or API key")
    p.add_argument("--username", help="log in as this user (asks for the password)")
    p.add_argument("--refresh", type=float, default=2.0, help="seconds between refreshes")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        from ..client import AsyncGatewayClient
        from .app import ConsoleApp
    except ImportError as exc:
        print(f"the console needs textual: pip install 'seadragon_gw[console]' ({exc})", file=sys.stderr)
        return 2
    token = args.token or args.token_arg
    if args.username:
        client = AsyncGatewayClient(args.url, username=args.username, password=getpass.getpass("password: "))
    else:
        client = AsyncGatewayClient(args.url, token=token)
    ConsoleApp(client, args.refresh).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
