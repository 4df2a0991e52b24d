"""The web pages over plain HTTP: served from the package with a strict CSP, their files
with validators, nothing else reachable, no script that parses data as HTML, and the
overview answer the admin page polls (admin only)."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path

import httpx
import pytest

from seadragon_gw.web.assets import CSP, WebAssets
from tests.conftest import ADMIN, ALICE
from tests.support.gwclient import chat
from tests.support.identity import Shared, shared_gateway

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "seadragon_gw" / "web" / "static"
BOB = {"Authorization": "Bearer tok-bob"}


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    limits = {"enabled": True, "default": {"per_minute": 60, "burst": 2}}
    with shared_gateway(tmp_path_factory, "web", rate_limits=limits) as shared:
        yield shared


@pytest.mark.parametrize("path", ["/admin", "/chat"])
def test_pages_are_served_with_a_csp_and_load_only_their_own_scripts(web: Shared, path: str) -> None:
    response = httpx.get(web.url + path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == CSP
    assert "script-src 'self';" in CSP and "unsafe-inline" not in CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", response.text, re.S)
    assert scripts == [(f' type="module" src="/web/js/{path[1:]}.js"', "")]
    assert not re.search(r"\son[a-z]+=", response.text)  # no inline event handlers either


def test_head_of_a_page(web: Shared) -> None:
    response = httpx.head(web.url + "/admin")
    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["content-length"]) == len(httpx.get(web.url + "/admin").content)


def test_every_packaged_file_is_served_with_its_type_and_revalidated(web: Shared) -> None:
    types = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
    files = [p for p in WebAssets.packaged().paths if not p.endswith(".html")]
    assert "js/admin.js" in files and "js/chat.js" in files and "css/app.css" in files
    with httpx.Client() as client:
        for path in files:
            response = client.get(f"{web.url}/web/{path}")
            assert response.status_code == 200, path
            assert response.headers["content-type"] == types[Path(path).suffix]
            assert response.content == (STATIC / path).read_bytes()
            assert response.headers["cache-control"] == "no-cache"
            again = client.get(f"{web.url}/web/{path}", headers={"If-None-Match": response.headers["etag"]})
            assert (again.status_code, again.content) == (304, b"")


@pytest.mark.parametrize("path", ["/web/nope.js", "/web/admin.html", "/web/../pyproject.toml",
                                  "/web/%2e%2e/%2e%2e/pyproject.toml", "/web/js", "/web/"])
def test_nothing_else_is_reachable(web: Shared, path: str) -> None:
    response = httpx.get(web.url + path)
    assert (response.status_code, response.json()) == (404, {"error": "not found"})


def test_post_chat_is_still_seed_002s_chat_route(web: Shared) -> None:
    response = httpx.post(web.url + "/chat", json=chat("seed"), headers=ALICE)
    assert response.status_code == 200
    assert response.json()["message"]["content"] == "chunk0 chunk1 chunk2 "


def test_no_script_parses_data_as_html() -> None:
    """Everything from the API is put in the page as text (dom.js `h`), never as markup."""
    banned = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function")
    scripts = sorted(STATIC.rglob("*.js"))
    assert len(scripts) > 10
    for script in scripts:
        assert not banned.search(script.read_text()), script


def test_the_static_files_are_package_data() -> None:
    """A wheel installs them: every file matches pyproject's package-data patterns."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["seadragon_gw.web"]
    for path in STATIC.rglob("*"):
        if path.is_file():
            relative = str(path.relative_to(STATIC.parent))
            assert any(fnmatch(relative, p) for p in patterns), relative


def test_the_overview_is_for_admins_only(web: Shared) -> None:
    anonymous = httpx.get(web.url + "/api/admin/overview")
    assert (anonymous.status_code, anonymous.json()) == (401, {"error": "unauthorized: missing or invalid credentials"})
    user = httpx.get(web.url + "/api/admin/overview", headers=ALICE)
    assert (user.status_code, user.json()) == (403, {"error": "forbidden: this route needs an admin credential"})


def test_the_overview_has_health_models_stats_and_refusals(web: Shared) -> None:
    with httpx.Client(timeout=10) as client:
        statuses = [client.post(web.url + "/api/chat", json=chat("r", model="qwen2.5:7b"), headers=BOB).status_code
                    for _ in range(3)]
    assert statuses == [200, 200, 429]  # burst 2
    answer = httpx.get(web.url + "/api/admin/overview", headers=ADMIN).json()
    assert set(answer) == {"time", "health", "stats", "models", "counts", "failed", "timed_out"}
    assert answer["health"]["status"] == "healthy"
    assert [b["name"] for b in answer["health"]["backends"]] == ["b0"]
    qwen = next(m for m in answer["models"] if m["model"] == "qwen2.5:7b")
    assert qwen == {"model": "qwen2.5:7b", "waiting": 0, "processing": 0, "max_concurrent": 1,
                     "processed": 2, "failed": 0, "timed_out": 0}
    assert answer["counts"] == {"rate_limited": 1, "rejected": {"rejected": 1}}  # a 429 is a refusal too
    assert answer["stats"]["wait_seconds"]["high"]["count"] == 2  # bob has priority 1
    assert (answer["failed"], answer["timed_out"]) == (0, 0)
