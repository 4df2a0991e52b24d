"""`/openapi.json` describes every route of the app (enumerated here, so a route added
anywhere without a line in `api/openapi.py` fails), validates as OpenAPI 3.1, and its schemas
are true of real answers; `/docs` serves Swagger UI from the package, with nothing fetched
from elsewhere."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

from seadragon_gw.api.openapi import build_spec
from seadragon_gw.api.routes import OllamaPrefix, native_routes
from seadragon_gw.app import create_app
from seadragon_gw.config import parse_config
from tests.conftest import ADMIN, ALICE, GatewayFactory, RunningGateway
from tests.support.checks import poll
from tests.support.fakebackend import FakeBackend

DOCS_DIR = Path(__file__).resolve().parent.parent / "seadragon_gw" / "api" / "static" / "docs"
_CONVERTER = re.compile(r"{([^}:]+)(:[^}]+)?}")


def _route_operations(routes: list[BaseRoute], prefix: str = "") -> set[tuple[str, str]]:
    """(METHOD, OpenAPI path) of every route; HEAD only where a route has no GET (Starlette
    answers HEAD for every GET route by itself)."""
    found: set[tuple[str, str]] = set()
    for route in routes:
        if isinstance(route, WebSocketRoute):
            found.add(("GET", prefix + _CONVERTER.sub(r"{\1}", route.path)))
        elif isinstance(route, Route) and isinstance(route.app, OllamaPrefix):
            found |= _route_operations(native_routes(), "/api/ollama")
        elif isinstance(route, Route):
            path = prefix + _CONVERTER.sub(r"{\1}", route.path)
            methods = set(route.methods or ())
            if "GET" in methods:
                methods.discard("HEAD")
            assert methods, f"route {route.path} accepts any method: list them so they can be documented"
            found |= {(m, path) for m in methods}
        elif isinstance(route, Mount):
            found |= _route_operations(list(route.routes), prefix + route.path)
            if not route.routes:
                found.add(("GET", prefix + route.path + "/{path}"))
        else:
            raise AssertionError(f"unknown kind of route {route!r}")
    return found


def _spec_operations(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in spec["paths"].items() for method in item}


def test_spec_is_valid_openapi() -> None:
    validate(build_spec())


def test_every_route_of_the_app_is_described() -> None:
    app = create_app(parse_config({}))
    routes = _route_operations(app.routes)
    documented = _spec_operations(build_spec())
    missing = sorted(routes - documented, key=lambda mp: (mp[1], mp[0]))
    assert missing == [], f"routes missing from api/openapi.py's operations(): {missing}"
    stale = sorted(documented - routes - {("HEAD", p) for _, p in documented}, key=lambda mp: (mp[1], mp[0]))
    assert stale == [], f"operations with no route: {stale}"


def test_every_operation_has_an_answer_errors_and_security() -> None:
    spec = build_spec()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearer"]["type"] == "http"
    assert schemes["bearer"]["scheme"] == "bearer"
    assert (schemes["apiKey"]["type"], schemes["apiKey"]["in"], schemes["apiKey"]["name"]) == \
        ("apiKey", "header", "X-API-Key")
    ids = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            ids.append(op["operationId"])
            assert any(code.startswith(("2", "1")) for code in op["responses"]), (method, path)
            assert "security" in op, (method, path)
            for code, answer in op["responses"].items():
                if code.startswith(("4", "5")) and not (path.endswith("/health") and code == "503"):
                    schema = answer["content"]["application/json"]["schema"]["$ref"]
                    expected = "OpenAIError" if path.startswith(("/v1/", "/api/chat/completions", "/api/completions",
                                                                 "/api/models", "/api/ocr")) else "Error"
                    assert schema == f"#/components/schemas/{expected}", (method, path, code)
    assert len(ids) == len(set(ids))
    chat = spec["paths"]["/api/chat"]["post"]
    assert chat["security"] == [{"bearer": []}, {"apiKey": []}]
    assert set(chat["responses"]) >= {"200", "400", "401", "404", "429", "502", "503", "504"}
    assert set(chat["responses"]["200"]["content"]) == {"application/json", "application/x-ndjson"}
    assert spec["paths"]["/api/admin/apikeys"]["post"]["requestBody"]["content"]["application/json"]["schema"] \
        == {"$ref": "#/components/schemas/ApiKeyCreate"}
    assert spec["paths"]["/health"]["get"]["security"] == []
    assert spec["paths"]["/health"]["get"]["responses"]["503"]["content"]["application/json"]["schema"] == \
        {"anyOf": [{"$ref": "#/components/schemas/Health"}, {"$ref": "#/components/schemas/Error"}]}
    assert spec["paths"]["/api/tags"]["get"]["security"] == [{}, {"bearer": []}, {"apiKey": []}]


def test_served_spec_is_the_built_one(gw: RunningGateway) -> None:
    response = httpx.get(gw.url + "/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == build_spec()


def _check(spec: dict[str, Any], name: str, value: Any) -> None:
    schema = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
    jsonschema.Draft202012Validator(schema).validate(value)


def test_schemas_are_true_of_real_answers(gw: RunningGateway) -> None:
    spec = build_spec()
    base = gw.url
    created = httpx.post(base + "/api/admin/apikeys", headers=ADMIN, json={"name": "ci", "priority": 2})
    assert created.status_code == 201
    _check(spec, "ApiKeyCreated", created.json())
    _check(spec, "ApiKeyList", httpx.get(base + "/api/admin/apikeys", headers=ADMIN).json())
    entry = httpx.post(base + "/api/admin/whitelist", headers=ADMIN, json={"ip": "10.9.0.0/16", "label": "lab"})
    _check(spec, "WhitelistEntry", entry.json())
    _check(spec, "WhitelistList", httpx.get(base + "/api/admin/whitelist", headers=ADMIN).json())
    _check(spec, "Removed", httpx.delete(base + "/api/admin/whitelist/10.9.0.0/16", headers=ADMIN).json())
    token = httpx.post(base + "/api/admin/tokens", headers=ADMIN, json={"note": "for ann"})
    _check(spec, "RegistrationTokenCreated", token.json())
    _check(spec, "RegistrationTokenList", httpx.get(base + "/api/admin/tokens", headers=ADMIN).json())
    registered = httpx.post(base + "/auth/register", json={"username": "ann", "password": "a-long-password-1",
                                                           "registration_token": token.json()["token"]})
    _check(spec, "RegisteredUser", registered.json())
    pair = httpx.post(base + "/auth/token", data={"username": "ann", "password": "a-long-password-1"})
    _check(spec, "TokenPair", pair.json())
    _check(spec, "UserList", httpx.get(base + "/api/admin/users", headers=ADMIN).json())
    _check(spec, "Me", httpx.get(base + "/auth/me", headers=ALICE).json())
    _check(spec, "Health", httpx.get(base + "/health", headers=ALICE).json())
    _check(spec, "QueueStatus", httpx.get(base + "/api/queue/status", headers=ADMIN).json())
    _check(spec, "Stats", httpx.get(base + "/api/admin/stats", headers=ADMIN).json())
    _check(spec, "ModelQueue", httpx.get(base + "/api/admin/queue/llama3", headers=ADMIN).json())
    _check(spec, "Tags", httpx.get(base + "/api/tags").json())
    _check(spec, "ModelList", httpx.get(base + "/v1/models", headers=ALICE).json())
    chat = httpx.post(base + "/api/chat", headers=ALICE,
                      json={"model": "llama3", "messages": [{"role": "user", "content": "hi"}], "stream": False})
    _check(spec, "ChatResponse", chat.json())
    job = httpx.post(base + "/api/jobs", headers=ALICE, json={"route": "/api/generate",
                                                              "body": {"model": "llama3", "prompt": "hi"}})
    _check(spec, "JobAccepted", job.json())
    _check(spec, "Job", httpx.get(base + f"/api/jobs/{job.json()['request_id']}", headers=ALICE).json())
    _check(spec, "JobList", httpx.get(base + "/api/jobs", headers=ALICE).json())
    _check(spec, "Usage", httpx.get(base + "/api/admin/usage?group_by=model", headers=ADMIN).json())
    _check(spec, "Crashes", httpx.get(base + "/api/admin/crashes", headers=ADMIN).json())
    _check(spec, "MissingModels", httpx.get(base + "/api/admin/missing-models", headers=ADMIN).json())
    _check(spec, "Error", httpx.get(base + "/api/queue/status").json())
    _check(spec, "OpenAIError", httpx.get(base + "/v1/models").json())


def test_usage_groups_by_credential_carry_the_api_keys_id_in_the_schema(gateways: GatewayFactory,
                                                                       backend: FakeBackend) -> None:
    """A credential group names its API key by id (two keys may share a name): the schema
    says so (groups are closed objects: an undeclared field would fail validation)."""
    gw = gateways.start([backend], usage={"flush_s": 0.05})
    created = httpx.post(gw.url + "/api/admin/apikeys", headers=ADMIN, json={"name": "ci"})
    key = {"Authorization": f"Bearer {created.json()['key']}"}
    chat = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    assert httpx.post(gw.url + "/api/chat", headers=key, json=chat).status_code == 200

    def usage() -> dict[str, Any]:
        answer: dict[str, Any] = httpx.get(gw.url + "/api/admin/usage?group_by=credential", headers=ADMIN).json()
        return answer

    poll(lambda: len(usage()["groups"]) == 1, what="the request in the usage log")
    answer = usage()
    _check(build_spec(), "Usage", answer)
    assert (answer["groups"][0]["credential"], answer["groups"][0]["key_id"]) == ("apikey:ci", created.json()["id"])
    group = build_spec()["components"]["schemas"]["Usage"]["properties"]["groups"]["items"]
    assert group["properties"]["key_id"] == {"type": ["integer", "null"]}
    assert group["additionalProperties"] is False


def test_docs_page_is_swagger_ui_from_the_package(gw: RunningGateway) -> None:
    page = httpx.get(gw.url + "/docs")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script src="/docs/swagger-ui-bundle.js"' in page.text
    init = httpx.get(gw.url + "/docs/swagger-init.js")
    assert init.status_code == 200
    assert 'url: "/openapi.json"' in init.text
    for name, media in (("swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
                        ("swagger-ui.css", "text/css; charset=utf-8")):
        answer = httpx.get(gw.url + "/docs/" + name)
        assert answer.status_code == 200
        assert answer.headers["content-type"] == media
        assert answer.content == (DOCS_DIR / name).read_bytes()
    assert "SwaggerUIBundle" in httpx.get(gw.url + "/docs/swagger-ui-bundle.js").text


def test_docs_fetch_nothing_from_elsewhere() -> None:
    for name in ("index.html", "swagger-init.js"):
        text = (DOCS_DIR / name).read_text()
        assert not re.search(r"(src|href)=\"(https?:)?//", text), name
        assert "https://" not in text and "http://" not in text, name


@pytest.mark.parametrize("asset", ["nope.js", "LICENSE", "..%2Fopenapi.py", "index.html"])
def test_docs_serve_only_their_files(gw: RunningGateway, asset: str) -> None:
    answer = httpx.get(gw.url + "/docs/" + asset)
    assert answer.status_code == 404
    assert answer.json() == {"error": "not found" if "/" in asset.replace("%2F", "/") else f"no docs file '{asset}'"}


def test_vendored_copy_names_its_version_and_licence() -> None:
    notes = (DOCS_DIR / "VENDORED.md").read_text()
    assert "swagger-ui-dist` version 5.35.0" in notes
    assert "Apache License" in (DOCS_DIR / "LICENSE").read_text()
