"""The OCR server's HTTP side: `/health`, `/v1/models`, `/v1/chat/completions` (whole or SSE).

The models load in a thread after the server listens, so a supervisor sees `/health` answer 503
("loading") and then 200, as llama.cpp's server does; if they cannot load, the server stops with
exit code 1 and the reason on stderr (the gateway shows it with the failed start).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from .completions import chunks, completion, usage_of
from .engine import Engine
from .images import BadInput, chat_input, decoded, scaled


class BodyTooLarge(Exception):
    """A request body over `max_body_bytes`: 413."""


@dataclass(frozen=True, slots=True)
class OcrSettings:
    """`det_limit`: the longest image side the OCR sees (0: no downscaling)."""

    model_name: str = "rapidocr"
    det_limit: int = 1024
    threads: int = 0
    max_pixels: int = 40_000_000
    max_body_bytes: int = 64 * 1024 * 1024


@dataclass(eq=False)
class OcrService:
    """The engine once loaded, and one OCR run at a time (each already uses every core it is given)."""

    settings: OcrSettings
    load: Callable[[int], Engine] = Engine
    engine: Engine | None = None
    failed: str | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def load_models(self) -> None:
        started = time.monotonic()
        try:
            self.engine = await asyncio.to_thread(self.load, self.settings.threads)
        except Exception as exc:  # a broken install: said once, then the server stops
            self.failed = f"the OCR models could not be loaded: {type(exc).__name__}: {exc}"
            print(self.failed, file=sys.stderr, flush=True)
            return
        print(f"OCR models loaded in {time.monotonic() - started:.1f}s; model {self.settings.model_name}, "
              f"resolution {self.settings.det_limit or 'full (no downscaling)'}", file=sys.stderr, flush=True)

    async def read(self, images: list[bytes]) -> str:
        """The text of every image, lines joined by newlines, images by a blank line."""
        engine = self.engine
        assert engine is not None
        texts = []
        for number, data in enumerate(images, start=1):
            async with self._lock:
                lines = await asyncio.to_thread(self._read_one, engine, data, number)
            texts.append("\n".join(lines))
        return "\n\n".join(texts)

    def _read_one(self, engine: Engine, data: bytes, number: int) -> list[str]:
        image = scaled(decoded(data, number, self.settings.max_pixels), self.settings.det_limit)
        return [line.text for line in engine.read(image)]


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _error(status: int, message: str, kind: str = "invalid_request_error") -> Response:
    return _json({"error": {"message": message, "type": kind, "param": None, "code": None}}, status)


def build_app(service: OcrService, on_failed: Callable[[], None] | None = None) -> Starlette:
    """The ASGI app; `on_failed` is called when the models cannot load (the CLI stops the server)."""
    settings = service.settings

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async def load() -> None:
            await service.load_models()
            if service.failed is not None and on_failed is not None:
                on_failed()

        task = asyncio.create_task(load(), name="ocr-load")
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def health(request: Request) -> Response:
        if service.failed is not None:
            return _json({"status": "error", "error": service.failed}, 503)
        if service.engine is None:
            return _json({"status": "loading"}, 503)
        return _json({"status": "ok", "model": settings.model_name, "det_limit": settings.det_limit})

    async def models(request: Request) -> Response:
        return _json({"object": "list", "data": [{"id": settings.model_name, "object": "model", "created": 0,
                                                  "owned_by": "seadragon_gw"}]})

    async def chat(request: Request) -> Response:
        try:
            body = orjson.loads(await _read_limited(request, settings.max_body_bytes))
        except orjson.JSONDecodeError:
            return _error(400, "request body must be JSON (an OpenAI chat completion request)")
        except BodyTooLarge as exc:
            return _error(413, str(exc))
        if service.engine is None:
            return _error(503, "the OCR models are loading; try again shortly", "server_error")
        try:
            wanted = chat_input(body)
            stream = _stream_flag(body)
            text = await service.read(wanted.images)
        except BadInput as exc:
            return _error(400, exc.message)
        usage = usage_of(len(wanted.images), wanted.prompt_words, text)
        if stream:
            return StreamingResponse(chunks(settings.model_name, text, usage), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        return _json(completion(settings.model_name, text, usage))

    return Starlette(routes=[Route("/health", health, methods=["GET"]),
                             Route("/v1/models", models, methods=["GET"]),
                             Route("/v1/chat/completions", chat, methods=["POST"])], lifespan=lifespan)


def _stream_flag(body: dict[str, Any]) -> bool:
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadInput("stream must be a boolean")
    return stream


async def _read_limited(request: Request, limit: int) -> bytes:
    """The body, refused past `limit` bytes without reading it all first."""
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body is larger than {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)
