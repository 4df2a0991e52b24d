"""Run the project's test suite against an Upstream variant (bench-only, edits nothing).

    .venv/bin/python bench/pytest_variant.py bench/aiohttp_upstream.py -q tests/

The tests build the gateway in-process with `create_app`, so loading the variant as
`seadragon_gw.backends.upstream` before pytest imports anything (bench/launch_variant.py's
`install`) makes every test gateway use it. A compatibility check before adopting a variant.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from launch_variant import install  # noqa: E402


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    install(os.path.abspath(sys.argv[1]))
    import pytest

    print(f"pytest_variant: seadragon_gw.backends.upstream = {sys.modules['seadragon_gw.backends.upstream'].__file__}",
          flush=True)
    return pytest.main(sys.argv[2:])


if __name__ == "__main__":
    raise SystemExit(main())
