"""CORS (`server.cors_origins`): listed origins get the CORS headers with credentials, every
other origin gets none; preflights work on every route, the fast-path proxy routes included."""

from __future__ import annotations

import httpx
import pytest

from seadragon_gw.config import ConfigError, parse_config
from tests.conftest import ALICE, GatewayFactory, RunningGateway
from tests.support.fakebackend import FakeBackend

LISTED = "http://localhost:3000"
OTHER = "http://evil.example"


@pytest.fixture
def cors_gw(gateways: GatewayFactory, backend: FakeBackend) -> RunningGateway:
    return gateways.start([backend], server={"cors_origins": [LISTED, "https://chat.example.com"]})


def _cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k.lower(): v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


def _preflight(url: str, origin: str, method: str = "POST") -> httpx.Response:
    return httpx.options(url, headers={"Origin": origin, "Access-Control-Request-Method": method,
                                       "Access-Control-Request-Headers": "authorization, content-type, x-client-id"})


@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions", "/api/admin/apikeys", "/auth/token"])
def test_preflight_from_a_listed_origin_allows_credentials_and_headers(cors_gw: RunningGateway, path: str) -> None:
    response = _preflight(cors_gw.url + path, LISTED)
    assert response.status_code == 200
    headers = _cors_headers(response)
    assert headers["access-control-allow-origin"] == LISTED
    assert headers["access-control-allow-credentials"] == "true"
    assert "POST" in headers["access-control-allow-methods"].split(", ")
    allowed = {h.lower() for h in headers["access-control-allow-headers"].split(", ")}
    assert {"authorization", "content-type", "x-client-id", "x-api-key", "x-priority"} <= allowed
    assert headers["access-control-max-age"] == "600"


def test_simple_request_from_a_listed_origin_gets_its_origin_back(cors_gw: RunningGateway) -> None:
    response = httpx.get(cors_gw.url + "/api/tags", headers={"Origin": LISTED, **ALICE})
    assert response.status_code == 200
    headers = _cors_headers(response)
    assert headers["access-control-allow-origin"] == LISTED
    assert headers["access-control-allow-credentials"] == "true"
    assert "X-Request-ID" in headers["access-control-expose-headers"].split(", ")
    assert "Origin" in response.headers["vary"]


def test_fast_path_routes_carry_cors_headers(cors_gw: RunningGateway) -> None:
    """/api/chat and /v1/chat/completions skip Starlette's stack when CORS is off; with origins
    configured their answers must carry the headers too."""
    body = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    for path in ("/api/chat", "/v1/chat/completions"):
        response = httpx.post(cors_gw.url + path, json=body, headers={"Origin": LISTED, **ALICE})
        assert response.status_code == 200, response.text
        assert _cors_headers(response)["access-control-allow-origin"] == LISTED
        assert _cors_headers(response)["access-control-allow-credentials"] == "true"


def test_unlisted_origin_gets_no_cors_headers(cors_gw: RunningGateway) -> None:
    response = httpx.get(cors_gw.url + "/api/tags", headers={"Origin": OTHER, **ALICE})
    assert response.status_code == 200
    assert _cors_headers(response) == {}
    assert "Origin" in response.headers["vary"]
    chat = httpx.post(cors_gw.url + "/api/chat", headers={"Origin": OTHER, **ALICE},
                      json={"model": "llama3", "messages": [{"role": "user", "content": "hi"}], "stream": False})
    assert chat.status_code == 200
    assert _cors_headers(chat) == {}


def test_preflight_from_an_unlisted_origin_is_refused_without_cors_headers(cors_gw: RunningGateway) -> None:
    response = _preflight(cors_gw.url + "/api/chat", OTHER)
    assert response.status_code == 403
    assert response.json() == {"error": f"CORS: origin {OTHER} is not allowed (server.cors_origins)"}
    assert _cors_headers(response) == {}
    assert response.headers["x-request-id"]


def test_no_origins_configured_means_no_cors_at_all(gw: RunningGateway) -> None:
    response = httpx.get(gw.url + "/api/tags", headers={"Origin": LISTED, **ALICE})
    assert response.status_code == 200
    assert _cors_headers(response) == {}
    preflight = _preflight(gw.url + "/api/chat", LISTED)
    assert preflight.status_code == 405
    assert _cors_headers(preflight) == {}


@pytest.mark.parametrize("origin", ["*", "http://localhost:3000/", "localhost:3000", "https://*.example.com",
                                    "ftp://example.com"])
def test_config_refuses_anything_but_exact_origins(origin: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"server": {"cors_origins": [LISTED, origin]}})
    assert str(caught.value) == (
        "server.cors_origins[1]: must be an exact origin such as https://app.example.com "
        f"(scheme://host[:port], no path, no wildcard), got {origin!r}")


def test_config_default_is_empty() -> None:
    assert parse_config({}).server.cors_origins == []
