"""Real Chromium (Debian's package) driven by Playwright's Python package, for the web pages.

No browser is downloaded: Playwright launches `/usr/bin/chromium` (or `SEADRAGON_CHROMIUM`).
`./run.sh test` installs Chromium when it is missing and runs as root; anywhere else these
tests are skipped with the reason. One browser per module (a module-scoped fixture), and
each module opens as few pages as it can: the test machine is small and shared.
Screenshots go to `<pytest's base temp>/screenshots/` (printed at the end of each module).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_HINT = ("Chromium is not installed: `apt-get install chromium` (./run.sh test installs it when "
                 "run as root), or point SEADRAGON_CHROMIUM at a Chromium binary")


def chromium_path() -> str | None:
    configured = os.environ.get("SEADRAGON_CHROMIUM")
    if configured:
        return configured if Path(configured).exists() else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright Python package is missing: pip install -e '.[test]'")
    executable = chromium_path()
    if executable is None:
        pytest.skip(CHROMIUM_HINT)
    # root has no user namespace sandbox in containers; the pages are our own, on loopback
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True, args=args)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.getbasetemp() / "screenshots"
    folder.mkdir(exist_ok=True)
    yield folder
    print(f"\nscreenshots: {folder}")
