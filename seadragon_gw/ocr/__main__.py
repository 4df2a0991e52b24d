"""`python -m seadragon_gw.ocr --port P [--det-limit N] [--model-name NAME] [--install-missing]`.

Exit codes: 0 stopped, 1 the models could not load, 3 the `ocr` extra is missing (and was not to
be installed, or could not be).
"""

from __future__ import annotations

import argparse
import sys

EXIT_LOAD_FAILED = 1
EXIT_MISSING = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m seadragon_gw.ocr",
                                     description="OpenAI-compatible OCR server (RapidOCR, PP-OCRv4 on CPU)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--det-limit", type=int, default=1024, metavar="N",
                        help="the longest image side the OCR sees, in pixels (0: no downscaling); default 1024")
    parser.add_argument("--model-name", default="rapidocr", help="the model name /v1/models lists")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads per model (0: all cores)")
    parser.add_argument("--max-pixels", type=int, default=40_000_000, help="larger images are refused (400)")
    parser.add_argument("--install-missing", action="store_true",
                        help="pip-install the OCR packages first if they are missing")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.det_limit < 0 or args.threads < 0 or args.max_pixels < 1:
        print("--det-limit and --threads must be 0 or more, --max-pixels positive", file=sys.stderr)
        return 2
    from .install import InstallFailed, install, missing

    if missing():
        if not args.install_missing:
            print("the OCR server needs the ocr extra: pip install 'seadragon_gw[ocr]' (or pass --install-missing)",
                  file=sys.stderr)
            return EXIT_MISSING
        try:
            install()
        except InstallFailed as exc:
            print(exc, file=sys.stderr)
            return EXIT_MISSING
    from .serve import serve  # needs the extra's packages

    return serve(args.host, args.port, args.det_limit, args.model_name, args.threads, args.max_pixels)


if __name__ == "__main__":
    raise SystemExit(main())
