"""The admin page (`/admin`), the web chat (`/chat`), their files (`/web/...`) and the
overview answer the admin page polls (`GET /api/admin/overview`).

The pages are public files: they hold no data, and everything they show comes from the
admin and inference API with the credential the user logs in with. `GET /chat` is the web
chat; `POST /chat` stays seed 002's chat route (a different method, so both live).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..errors import NotFound
from ..web.assets import Asset, WebAssets
from ..web.overview import overview
from .asgi import authorize
from .context import gateway_of
from .responses import json_response

PAGES = {"/admin": "admin.html", "/chat": "chat.html"}


class AssetEndpoint:
    """Serves one packaged file (a page) or any of them by the `path` parameter (`/web/...`),
    with `304 Not Modified` for a matching `If-None-Match`."""

    def __init__(self, assets: WebAssets, fixed: str | None = None) -> None:
        self.assets = assets
        self.fixed = fixed

    async def respond(self, request: Request) -> Response:
        path = self.fixed or request.path_params["path"]
        asset = self.assets.get(path)
        if asset is None or (self.fixed is None and asset.is_page):
            raise NotFound("not found")  # pages only at their own URL, with their CSP
        return _answer(request, asset)


def _answer(request: Request, asset: Asset) -> Response:
    headers = asset.headers()
    if asset.etag in _etags(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=headers)
    body = b"" if request.method == "HEAD" else asset.body
    response = Response(body, headers=headers, media_type=asset.content_type)
    if request.method == "HEAD":
        response.headers["content-length"] = str(len(asset.body))
    return response


def _etags(header: str) -> set[str]:
    return {part.strip().removeprefix("W/") for part in header.split(",") if part.strip()}


async def admin_overview(request: Request) -> Response:
    authorize(request, "admin")
    gateway = gateway_of(request)
    return json_response(await overview(gateway.ops, gateway.registry, gateway.config.metrics.enabled,
                                         gateway.clock))


def web_routes(assets: WebAssets | None = None) -> list[BaseRoute]:
    files = assets or WebAssets.packaged()
    methods = ["GET", "HEAD"]
    return [
        *(Route(url, AssetEndpoint(files, name).respond, methods=methods) for url, name in PAGES.items()),
        Route("/web/{path:path}", AssetEndpoint(files).respond, methods=methods),
        Route("/api/admin/overview", admin_overview, methods=["GET"]),
    ]
