"""Request routing and response building for FakeBackend (no concurrency here).

Each handler maps a Recorded request to a Reply or a Stream; FakeBackend decides
when and how those bytes go out (holds, delays, aborts, disconnect watching).
The catalogue (models, loaded, blobs) is plain state touched only by handlers
on the server loop, plus test setup before start().
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from . import fake_payloads as p

INFERENCE_PATHS = frozenset(
    {"/api/chat", "/api/generate", "/api/embed", "/api/embeddings",
     "/v1/chat/completions", "/v1/completions", "/v1/embeddings"}
)
JSON_CT = "application/json; charset=utf-8"
NDJSON_CT = "application/x-ndjson"
SSE_CT = "text/event-stream"


@dataclass
class Recorded:
    """One request as the backend received it (headers lower-cased, body verbatim)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any | None
    query: str = ""
    inference: bool = False  # set when routed to an inference handler (chat/generate/embed/completions)


@dataclass
class Reply:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Stream:
    """A chunked response; each item is written (and flushed) as its own body message."""

    content_type: str
    chunks: list[bytes]


Handler = Callable[[Recorded], "Reply | Stream"]


def _json(obj: Any, status: int = 200) -> Reply:
    return Reply(status, orjson.dumps(obj), JSON_CT)


def _text(text: str, status: int = 200) -> Reply:
    return Reply(status, text.encode(), "text/plain; charset=utf-8")


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [v if isinstance(v, str) else str(v) for v in value]


class FakeApi:
    """Ollama (kind="ollama") or llama.cpp-like OpenAI-only (kind="openai") route table and handlers."""

    def __init__(self, models: Iterable[str], chunks: int, version: str, kind: str) -> None:
        if kind not in ("ollama", "openai"):
            raise ValueError(f"kind must be 'ollama' or 'openai', not {kind!r}")
        self.kind = kind
        self.models: list[str] = [p.canonical(m) for m in models]
        self.chunks = chunks
        self.version = version
        self.loaded: list[str] = []
        self.blobs: set[str] = set()
        self._routes, self._prefix_routes = self._build_routes()

    def resolve(self, rec: Recorded) -> Handler | Reply:
        """Route lookup with gin-like 404 (plain text) / 405 semantics."""
        by_method = self._routes.get(rec.path)
        if by_method is None:
            for prefix, methods in self._prefix_routes:
                if rec.path.startswith(prefix) and len(rec.path) > len(prefix):
                    by_method = methods
                    break
        if by_method is None:
            return _text("404 page not found", 404)
        return by_method.get(rec.method) or _text("405 method not allowed", 405)

    def _build_routes(self) -> tuple[dict[str, dict[str, Handler]], list[tuple[str, dict[str, Handler]]]]:
        routes: dict[str, dict[str, Handler]] = {
            "/v1/models": {"GET": self._v1_models},
            "/v1/chat/completions": {"POST": lambda r: self._v1_generate(r, chat=True)},
            "/v1/completions": {"POST": lambda r: self._v1_generate(r, chat=False)},
            "/v1/embeddings": {"POST": self._v1_embeddings},
            # seed 003's multi-modal routes, as an OpenAI-compatible media server answers them
            "/v1/images/generations": {"POST": self._v1_images},
            "/v1/audio/speech": {"POST": self._v1_speech},
            "/v1/audio/transcriptions": {"POST": self._v1_transcription},
        }
        prefixes: list[tuple[str, dict[str, Handler]]] = [("/v1/models/", {"GET": self._v1_model})]
        if self.kind == "openai":
            routes["/health"] = {"GET": lambda r: _json({"status": "ok"})}
            return routes, prefixes
        running = lambda r: _text("Ollama is running")  # noqa: E731
        version = lambda r: _json({"version": self.version})  # noqa: E731
        routes.update({
            "/": {"GET": running, "HEAD": running},
            "/api/version": {"GET": version, "HEAD": version},
            "/api/tags": {"GET": self._tags, "HEAD": self._tags},
            "/api/show": {"POST": self._show},
            "/api/ps": {"GET": lambda r: _json({"models": [p.ps_entry(m) for m in self.loaded]})},
            "/api/chat": {"POST": lambda r: self._native_generate(r, "chat")},
            "/api/generate": {"POST": lambda r: self._native_generate(r, "generate")},
            "/api/embed": {"POST": self._embed},
            "/api/embeddings": {"POST": self._embeddings},
            "/api/pull": {"POST": self._pull},
            "/api/create": {"POST": self._create},
            "/api/copy": {"POST": self._copy},
            "/api/delete": {"DELETE": self._delete},
        })
        prefixes.append(("/api/blobs/", {"HEAD": self._blob_head, "POST": self._blob_post}))
        return routes, prefixes

    # ------------------------------------------------------------ model helpers

    def _find(self, name: Any) -> str | None:
        if not isinstance(name, str) or not name:
            return None
        wanted = p.canonical(name)
        return wanted if wanted in self.models else None

    def _use(self, rec: Recorded, openai: bool) -> tuple[dict[str, Any], str] | Reply:
        """Validate the body and model; marks the model as loaded for /api/ps."""
        body = rec.json if isinstance(rec.json, dict) else None
        if body is None:
            msg = "invalid request body"
            return _json(p.openai_error(msg, 400), 400) if openai else _json({"error": msg}, 400)
        model = body.get("model")
        found = self._find(model)
        if found is None:
            msg = f'model "{model}" not found, try pulling it first'
            return _json(p.openai_error(msg, 404), 404) if openai else _json({"error": msg}, 404)
        if found not in self.loaded:
            self.loaded.append(found)
        return body, cast(str, model)  # _find returned a name, so `model` is a non-empty str

    # ------------------------------------------------------------ native handlers

    def _tags(self, rec: Recorded) -> Reply:
        return _json({"models": [p.tags_entry(m) for m in self.models]})

    def _show(self, rec: Recorded) -> Reply:
        name = (rec.json or {}).get("model") if isinstance(rec.json, dict) else None
        found = self._find(name)
        if found is None:
            return _json({"error": f"model '{name}' not found"}, 404)
        return _json(p.show_payload(found))

    def _native_generate(self, rec: Recorded, kind: str) -> Reply | Stream:
        used = self._use(rec, openai=False)
        if isinstance(used, Reply):
            return used
        body, model = used
        empty = not body.get("messages") if kind == "chat" else not body.get("prompt")
        texts = [] if empty else p.chunk_texts(self.chunks)
        reason = ("unload" if body.get("keep_alive") in (0, "0") else "load") if empty else "stop"
        tokens = p.count_tokens(body.get("messages") if kind == "chat" else body.get("prompt"))
        if body.get("stream", True) is False:
            return _json(p.native_final(kind, model, texts, tokens, full=True, reason=reason))
        return Stream(NDJSON_CT, p.native_stream(kind, model, texts, tokens, reason))

    def _embed(self, rec: Recorded) -> Reply:
        used = self._use(rec, openai=False)
        if isinstance(used, Reply):
            return used
        body, model = used
        return _json(p.embed_payload(model, _as_list(body.get("input"))))

    def _embeddings(self, rec: Recorded) -> Reply:
        used = self._use(rec, openai=False)
        if isinstance(used, Reply):
            return used
        return _json({"embedding": p.embedding_for(str(used[0].get("prompt") or ""))})

    def _progress(self, rec: Recorded, steps: list[str]) -> Reply | Stream:
        body = rec.json if isinstance(rec.json, dict) else {}
        name = body.get("model") or body.get("name")
        if not isinstance(name, str) or not name:
            return _json({"error": "model is required"}, 400)
        if p.canonical(name) not in self.models:
            self.models.append(p.canonical(name))
        lines = p.progress_lines(steps, p.digest_of(name))
        if body.get("stream", True) is False:
            return _json(lines[-1])
        return Stream(NDJSON_CT, [p.ndjson(line) for line in lines])

    def _pull(self, rec: Recorded) -> Reply | Stream:
        return self._progress(rec, ["pulling manifest", "verifying sha256 digest", "writing manifest"])

    def _create(self, rec: Recorded) -> Reply | Stream:
        return self._progress(rec, ["reading model metadata", "writing manifest"])

    def _copy(self, rec: Recorded) -> Reply:
        body = rec.json if isinstance(rec.json, dict) else {}
        source = self._find(body.get("source"))
        if source is None:
            return _json({"error": f"model '{body.get('source')}' not found"}, 404)
        dest = p.canonical(str(body.get("destination") or ""))
        if dest not in self.models:
            self.models.append(dest)
        return Reply(200)

    def _delete(self, rec: Recorded) -> Reply:
        body = rec.json if isinstance(rec.json, dict) else {}
        name = body.get("model") or body.get("name")
        found = self._find(name)
        if found is None:
            return _json({"error": f"model '{name}' not found"}, 404)
        self.models.remove(found)
        return Reply(200)

    def _blob_head(self, rec: Recorded) -> Reply:
        return Reply(200 if rec.path.rsplit("/", 1)[-1] in self.blobs else 404)

    def _blob_post(self, rec: Recorded) -> Reply:
        self.blobs.add(rec.path.rsplit("/", 1)[-1])
        return Reply(201)

    # ------------------------------------------------------------ OpenAI handlers

    def _v1_models(self, rec: Recorded) -> Reply:
        return _json({"object": "list", "data": [p.openai_model(m) for m in self.models]})

    def _v1_model(self, rec: Recorded) -> Reply:
        name = rec.path[len("/v1/models/"):]
        found = self._find(name)
        if found is None:
            return _json(p.openai_error(f"model '{name}' not found", 404), 404)
        return _json(p.openai_model(name))

    def _v1_generate(self, rec: Recorded, chat: bool) -> Reply | Stream:
        used = self._use(rec, openai=True)
        if isinstance(used, Reply):
            return used
        body, model = used
        texts = p.chunk_texts(self.chunks)
        tokens = p.count_tokens(body.get("messages") if chat else body.get("prompt"))
        if not body.get("stream"):
            return _json(p.openai_completion(chat, model, texts, tokens))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return Stream(SSE_CT, p.openai_stream(chat, model, texts, tokens, include_usage))

    def _v1_embeddings(self, rec: Recorded) -> Reply:
        used = self._use(rec, openai=True)
        if isinstance(used, Reply):
            return used
        body, model = used
        return _json(p.openai_embeddings(model, _as_list(body.get("input"))))

    # ------------------------------------------------------------ multi-modal handlers

    def _v1_images(self, rec: Recorded) -> Reply:
        used = self._use(rec, openai=True)
        if isinstance(used, Reply):
            return used
        image = {"b64_json": "aW1hZ2U=", "revised_prompt": used[0].get("prompt")}
        return _json({"created": 1700000000, "data": [image]})

    def _v1_speech(self, rec: Recorded) -> Reply:
        used = self._use(rec, openai=True)
        if isinstance(used, Reply):
            return used
        return Reply(200, b"ID3 fake audio: " + str(used[0].get("input", "")).encode(), "audio/mpeg")

    def _v1_transcription(self, rec: Recorded) -> Reply:
        """The multipart body is not parsed beyond its `model` field: the text says what arrived."""
        model = p.multipart_field(rec.body, "model")
        if self._find(model) is None:
            return _json(p.openai_error(f"model '{model}' not found", 404), 404)
        return _json({"text": f"{len(rec.body)} bytes for {model}"})
