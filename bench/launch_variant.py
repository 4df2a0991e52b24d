"""Bench-only launcher: the gateway with another upstream client module swapped in.

    SEADRAGON_UPSTREAM_VARIANT=bench/aiohttp_upstream.py \
        python bench/launch_variant.py serve --config FILE --port P

(`bench/run.py --targets aiohttp` does this.) The variant file is loaded *as* the module
`seadragon_gw.backends.upstream` before anything else imports it, so `Backend.from_config`
builds the variant's `Upstream` and the proxy and relay catch the variant's `UpstreamError`
kinds: the file is a drop-in replacement for upstream.py (same names and surface), nothing in
seadragon_gw/ is edited. Without the variable the shipped module is used (upstream.py on
backends/http1.py, the gateway's own HTTP/1.1 client).
"""

from __future__ import annotations

import importlib.util
import os
import sys

MODULE = "seadragon_gw.backends.upstream"


def install(path: str) -> None:
    import seadragon_gw.backends  # the (empty) package must exist before its submodule is replaced

    assert MODULE not in sys.modules, "install the variant before the gateway is imported"
    spec = importlib.util.spec_from_file_location(MODULE, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE] = module
    spec.loader.exec_module(module)
    seadragon_gw.backends.upstream = module  # type: ignore[attr-defined]


def main() -> int:
    variant = os.environ.get("SEADRAGON_UPSTREAM_VARIANT", "")
    if variant:
        install(os.path.abspath(variant))
    from seadragon_gw.backends import backend
    print(f"launch_variant: Upstream from {backend.Upstream.__module__} "
          f"({sys.modules[MODULE].__file__})", file=sys.stderr, flush=True)
    from seadragon_gw.cli import main as cli_main
    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
