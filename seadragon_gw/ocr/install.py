"""The OCR server's packages, installed on first use (`--install-missing`) into its own Python.

Why on first use and not by ./run.sh: onnxruntime, OpenCV and numpy are about 100 MB that a
gateway whose users never send an image does not need; the first OCR request waits for the
install instead (well within the managed backend's start timeout), and a machine that cannot
install gets the pip error as the failed start's reason (502 with the log tail).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time

# The `ocr` extra in pyproject.toml, word for word (tests/test_ocr_server.py checks it).
REQUIREMENTS = ("rapidocr-onnxruntime>=1.4.4,<1.5", "Pillow>=10.1")
_MODULES = ("rapidocr_onnxruntime", "PIL")


class InstallFailed(Exception):
    """pip could not install the OCR packages; the message says what to run by hand."""


def missing() -> list[str]:
    """The OCR packages' modules this Python cannot import."""
    return [name for name in _MODULES if importlib.util.find_spec(name) is None]


def install() -> None:
    """pip-install the OCR packages into this interpreter, its output on stderr (the managed log)."""
    started = time.monotonic()
    print(f"installing the OCR packages ({', '.join(REQUIREMENTS)}) into {sys.prefix}: about 100 MB with "
          "onnxruntime and OpenCV, usually under a minute, once", file=sys.stderr, flush=True)
    command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off",
               *REQUIREMENTS]
    done = subprocess.run(command, stdout=sys.stderr, stderr=sys.stderr, check=False)
    if done.returncode != 0 or missing():
        raise InstallFailed(f"pip could not install the OCR packages (exit code {done.returncode}); run "
                            f"`{sys.executable} -m pip install 'seadragon_gw[ocr]'` and see its output")
    importlib.invalidate_caches()
    print(f"OCR packages installed in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
