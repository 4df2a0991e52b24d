"""`python -m seadragon_gw.localmodel install|status`.

Exit codes: 0 done / installed, 1 not installed or the install failed, 3 impossible on this
machine (no C++ compiler and no way to get one).
"""

from __future__ import annotations

import argparse
import sys

from .installer import InstallError, InstallImpossible, install, print_progress
from .probe import status

EXIT_IMPOSSIBLE = 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seadragon_gw.localmodel",
                                     description="llama.cpp's server with Gemma 3 270M, for tests and "
                                                 "managed backends")
    parser.add_argument("command", choices=("install", "status"))
    args = parser.parse_args(argv)
    if args.command == "status":
        current = status()
        print("\n".join(current.lines()))
        print("installed" if current.installed else "not installed: run `python -m seadragon_gw.localmodel install`")
        return 0 if current.installed else 1
    try:
        install(progress=print_progress)
    except InstallImpossible as exc:
        print(f"cannot install here: {exc}", file=sys.stderr)
        return EXIT_IMPOSSIBLE
    except InstallError as exc:
        print(f"install failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
