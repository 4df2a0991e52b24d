"""`python -m seadragon_gw.localmodel install|status|serve|prepare`.

- `install`: install llama.cpp's server and the model into the cache (idempotent).
- `status`: what is installed.
- `serve --port P [--host H]`: install if missing, then exec llama-server (the managed command).
- `prepare --config FILE`: run.sh's start-up step (see prepare.py): install now when the config
  uses the local model and no other backend answers with a model.

Exit codes: 0 done / installed, 1 not installed or the install failed, 3 impossible on this
machine (no C++ compiler and no way to get one), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys

from ..config import ConfigError, load_config
from .installer import InstallError, InstallImpossible, install, print_progress
from .launcher import ServeOptions, serve
from .prepare import prepare
from .probe import status

EXIT_IMPOSSIBLE = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m seadragon_gw.localmodel",
                                     description="llama.cpp's server with Gemma 3 270M, for tests and "
                                                 "managed backends")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("install", help="install llama.cpp's server and the model (idempotent)")
    commands.add_parser("status", help="what is installed")
    run = commands.add_parser("serve", help="install if missing, then exec llama-server")
    run.add_argument("--port", type=int, required=True)
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--parallel", type=int, default=2, help="slots (match the backend's max_concurrent)")
    run.add_argument("--ctx", type=int, default=4096, help="total context, split across the slots")
    run.add_argument("--threads", type=int, default=0, help="0: half the cores")
    run.add_argument("--alias", default="gemma3:270m", help="the model name the server lists")
    ready = commands.add_parser("prepare", help="run.sh's start-up step")
    ready.add_argument("--config", required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except InstallImpossible as exc:
        print(f"cannot install here: {exc}", file=sys.stderr)
        return EXIT_IMPOSSIBLE
    except InstallError as exc:
        print(f"install failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace) -> int:
    if args.command == "status":
        current = status()
        print("\n".join(current.lines()))
        print("installed" if current.installed else "not installed: run `python -m seadragon_gw.localmodel install`")
        return 0 if current.installed else 1
    if args.command == "serve":
        serve(ServeOptions(args.port, args.host, args.parallel, args.ctx, args.threads, args.alias),
              progress=print_progress)
        return 1  # only reached when exec returned, which it does not
    if args.command == "prepare":
        try:
            config = load_config(args.config)
        except ConfigError as exc:  # the gateway's own start says it again, with its exit code
            print(f"config error: {exc}", file=sys.stderr)
            return 0
        decision = prepare(config, progress=print_progress)
        if decision.message:
            print_progress(decision.message)
        return 0
    install(progress=print_progress)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
