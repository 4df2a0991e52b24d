"""Ollama's native API served by an OpenAI-only backend (llama.cpp's server, vLLM).

Cline, Roo and the ollama clients speak `/api/chat`, `/api/generate`, `/api/embed`; a
llama.cpp server only answers `/v1/...`. This adapter owns the whole translation for one
request: the upstream path, the request body, and the answer, turned back into Ollama's
shape as it is relayed. The answer is translated by `TranslatedResponse`, which stands in for
the backend's response, so every relay (HTTP, jobs, WebSocket) sends Ollama bytes unchanged.

Per stream chunk the cost is one orjson parse of each SSE `data:` line and one orjson dump
of the NDJSON line built from it: no regular expressions, no re-reading of earlier bytes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from ..backends.upstream import UpstreamResponse, error_message_of
from ..errors import InvalidInput

TRANSLATED_PATHS = frozenset({"/api/chat", "/api/generate", "/api/embed", "/api/embeddings"})
_OPTIONS = ("temperature", "top_p", "top_k", "stop", "seed", "min_p", "frequency_penalty",
            "presence_penalty", "repeat_penalty", "typical_p")
_IMAGE_TYPES = (("iVBOR", "image/png"), ("/9j/", "image/jpeg"), ("R0lG", "image/gif"), ("UklG", "image/webp"))
_NDJSON = (b"content-type", b"application/x-ndjson")
_JSON = (b"content-type", b"application/json; charset=utf-8")


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _data_url(image: Any) -> str:
    if not isinstance(image, str):
        raise InvalidInput("images must be base64 strings")
    if image.startswith("data:"):
        return image
    mime = next((m for prefix, m in _IMAGE_TYPES if image.startswith(prefix)), "image/png")
    return f"data:{mime};base64,{image}"


def _message(message: Any) -> dict[str, Any]:
    """One Ollama message as an OpenAI one: images become content parts with data URLs,
    tool-call arguments (an object in Ollama) become the JSON string OpenAI expects."""
    if not isinstance(message, dict):
        raise InvalidInput("messages must be objects")
    out = {k: v for k, v in message.items() if k not in ("images", "tool_calls", "thinking", "tool_name")}
    images = message.get("images")
    if images:
        parts: list[dict[str, Any]] = [{"type": "text", "text": message.get("content") or ""}]
        parts += [{"type": "image_url", "image_url": {"url": _data_url(i)}} for i in images]
        out["content"] = parts
    calls = message.get("tool_calls")
    if calls:
        out["tool_calls"] = [_openai_call(i, c) for i, c in enumerate(calls)]
    return out


def _openai_call(index: int, call: Any) -> dict[str, Any]:
    function = call.get("function", {}) if isinstance(call, dict) else {}
    arguments = function.get("arguments", {})
    if not isinstance(arguments, str):
        arguments = orjson.dumps(arguments).decode()
    return {"id": call.get("id") or f"call_{index}", "type": "function",
            "function": {"name": function.get("name", ""), "arguments": arguments}}


def _sampling(payload: dict[str, Any], body: dict[str, Any]) -> None:
    """`options` (num_ctx dropped: the server's context is fixed) and `format`."""
    options = payload.get("options") or {}
    if not isinstance(options, dict):
        raise InvalidInput("options must be an object")
    for name in _OPTIONS:
        if options.get(name) is not None:
            body[name] = options[name]
    if options.get("num_predict") is not None and options["num_predict"] >= 0:
        body["max_tokens"] = options["num_predict"]
    fmt = payload.get("format")
    if fmt == "json":
        body["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt}}


def _chat_messages(route: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
    if route == "/api/chat":
        messages = payload.get("messages") or []
        if not isinstance(messages, list):
            raise InvalidInput("messages must be a list")
        return [_message(m) for m in messages]
    out: list[dict[str, Any]] = []
    if payload.get("system"):
        out.append({"role": "system", "content": payload["system"]})
    prompt = {"role": "user", "content": payload.get("prompt") or "", "images": payload.get("images")}
    out.append(_message(prompt))
    return out


# -- the adapter ----------------------------------------------------------------------------
@dataclass(eq=False)
class OllamaOverOpenAI:
    """The translation of one native request for an OpenAI-kind backend."""

    route: str
    client_model: str
    started: float = field(default_factory=time.monotonic)

    def upstream_path(self, payload: dict[str, Any]) -> str:
        """Chat for `/api/chat` and `/api/generate` (the server applies the model's template,
        as Ollama does), plain completions for `raw` generate (no template)."""
        if self.route in ("/api/embed", "/api/embeddings"):
            return "/v1/embeddings"
        if self.route == "/api/generate" and payload.get("raw") is True:
            return "/v1/completions"
        return "/v1/chat/completions"

    def request_body(self, payload: dict[str, Any], backend_model: str) -> bytes:
        """The OpenAI request for the client's Ollama one."""
        if self.route == "/api/embed":
            return orjson.dumps({"model": backend_model, "input": payload.get("input", "")})
        if self.route == "/api/embeddings":
            return orjson.dumps({"model": backend_model, "input": payload.get("prompt", "")})
        stream = payload.get("stream", True) is not False
        body: dict[str, Any] = {"model": backend_model, "stream": stream}
        if self.upstream_path(payload) == "/v1/completions":
            body["prompt"] = payload.get("prompt") or ""
        else:
            body["messages"] = _chat_messages(self.route, payload)
        if stream:
            body["stream_options"] = {"include_usage": True}
        if payload.get("tools"):
            body["tools"] = payload["tools"]
        _sampling(payload, body)
        return orjson.dumps(body)

    def wrap(self, response: UpstreamResponse) -> TranslatedResponse:
        translated = TranslatedResponse(response.status, _headers(response), response._response, response.backend,
                                        response.explain)
        translated.translator = StreamTranslator(self.route, self.client_model, self.started)
        return translated


def _headers(response: UpstreamResponse) -> list[tuple[bytes, bytes]]:
    streamed = any(k.lower() == b"content-type" and v.startswith(b"text/event-stream") for k, v in response.headers)
    kept = [(k, v) for k, v in response.headers if k.lower() != b"content-type"]
    return [*kept, _NDJSON if streamed and response.status < 400 else _JSON]


# -- the answer -----------------------------------------------------------------------------
class StreamTranslator:
    """SSE from the backend in, Ollama NDJSON out; holds what spans chunks (a partial line,
    tool calls being assembled, the finish reason, the usage, the timings)."""

    __slots__ = ("route", "model", "started", "first_token", "pending", "reason", "usage", "timings",
                 "calls", "done", "key")

    def __init__(self, route: str, model: str, started: float) -> None:
        self.route, self.model, self.started = route, model, started
        self.key = "message" if route == "/api/chat" else "response"
        self.first_token: float | None = None
        self.pending = b""
        self.reason: str | None = None
        self.usage: dict[str, Any] = {}
        self.timings: dict[str, Any] = {}
        self.calls: dict[int, dict[str, Any]] = {}
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """The NDJSON lines for the complete SSE lines in `data` (a partial one waits)."""
        data = self.pending + data if self.pending else data
        cut = data.rfind(b"\n") + 1
        self.pending = data[cut:]
        out = [self._line(line) for line in data[:cut].split(b"\n")]
        return b"".join(out)

    def finish(self) -> bytes:
        """The final `done` line, once (also when the backend ended without `[DONE]`)."""
        if self.done:
            return b""
        tail = self.feed(b"\n") if self.pending else b""
        if self.done:
            return tail
        self.done = True
        calls = self._call_line()
        return tail + calls + orjson.dumps(self._final(self._empty())) + b"\n"

    def _line(self, line: bytes) -> bytes:
        if not line.startswith(b"data:") or self.done:
            return b""
        data = line[5:].strip()
        if data == b"[DONE]":
            return self.finish()
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return b""
        if not isinstance(event, dict):
            return b""
        if "error" in event:
            self.done = True
            return orjson.dumps({"error": error_message_of(data, 500)}) + b"\n"
        return self._event(event)

    def _event(self, event: dict[str, Any]) -> bytes:
        if event.get("usage"):
            self.usage = event["usage"]
        if event.get("timings"):
            self.timings = event["timings"]
        choices = event.get("choices")
        if not choices:
            return b""
        choice = choices[0]
        if choice.get("finish_reason"):
            self.reason = choice["finish_reason"]
        delta = choice.get("delta") or {}
        for call in delta.get("tool_calls") or ():
            self._add_call(call)
        text = delta.get("content") or choice.get("text") or ""
        thinking = delta.get("reasoning_content")
        if not text and not thinking:
            return b""
        if self.first_token is None:
            self.first_token = time.monotonic()
        return orjson.dumps(self._chunk(text, thinking)) + b"\n"

    def _add_call(self, delta: dict[str, Any]) -> None:
        slot = self.calls.setdefault(delta.get("index", len(self.calls)), {"name": "", "arguments": ""})
        function = delta.get("function") or {}
        slot["name"] += function.get("name") or ""
        slot["arguments"] += function.get("arguments") or ""

    def _call_line(self) -> bytes:
        if not self.calls:
            return b""
        calls = [_ollama_call(c["name"], c["arguments"]) for _, c in sorted(self.calls.items())]
        chunk = self._chunk("", None)
        chunk["message"]["tool_calls"] = calls
        return orjson.dumps(chunk) + b"\n"

    def _empty(self) -> dict[str, Any]:
        return self._chunk("", None)

    def _chunk(self, text: str, thinking: str | None) -> dict[str, Any]:
        chunk: dict[str, Any] = {"model": self.model, "created_at": now_rfc3339()}
        if self.key == "message":
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if thinking:
                message["thinking"] = thinking
            chunk["message"] = message
        else:
            chunk["response"] = text
            if thinking:
                chunk["thinking"] = thinking
        chunk["done"] = False
        return chunk

    def _final(self, chunk: dict[str, Any]) -> dict[str, Any]:
        """The `done` fields: counts from `usage`, durations (ns) from llama.cpp's `timings`
        when it sent them, else measured here."""
        usage, timings = self.usage, self.timings
        now = time.monotonic()
        first = self.first_token or now
        prompt_ns = int(timings["prompt_ms"] * 1e6) if "prompt_ms" in timings else int((first - self.started) * 1e9)
        eval_ns = int(timings["predicted_ms"] * 1e6) if "predicted_ms" in timings else int((now - first) * 1e9)
        chunk.update(done=True, done_reason=_reason(self.reason), total_duration=int((now - self.started) * 1e9),
                     load_duration=0, prompt_eval_count=int(usage.get("prompt_tokens") or 0),
                     prompt_eval_duration=prompt_ns, eval_count=int(usage.get("completion_tokens") or 0),
                     eval_duration=eval_ns)
        return chunk

    def whole(self, body: bytes, status: int) -> bytes:
        """A complete (non-streamed) answer, or an error body, in Ollama's shape."""
        if status >= 400:
            return orjson.dumps({"error": error_message_of(body, status)})
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            return orjson.dumps({"error": error_message_of(body, status)})
        self.usage = answer.get("usage") or {}
        self.timings = answer.get("timings") or {}
        if self.route in ("/api/embed", "/api/embeddings"):
            return orjson.dumps(self._embeddings(answer))
        return orjson.dumps(self._completion(answer))

    def _completion(self, answer: dict[str, Any]) -> dict[str, Any]:
        choice = (answer.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        self.reason = choice.get("finish_reason")
        self.first_token = time.monotonic()
        chunk = self._chunk(message.get("content") or choice.get("text") or "", message.get("reasoning_content"))
        calls = message.get("tool_calls")
        if calls and self.key == "message":
            chunk["message"]["tool_calls"] = [
                _ollama_call(c["function"]["name"], c["function"].get("arguments") or "") for c in calls]
        return self._final(chunk)

    def _embeddings(self, answer: dict[str, Any]) -> dict[str, Any]:
        vectors = [item.get("embedding") for item in sorted(answer.get("data") or [], key=lambda d: d.get("index", 0))]
        if self.route == "/api/embeddings":
            return {"embedding": vectors[0] if vectors else []}
        return {"model": self.model, "embeddings": vectors,
                "total_duration": int((time.monotonic() - self.started) * 1e9), "load_duration": 0,
                "prompt_eval_count": int(self.usage.get("prompt_tokens") or 0)}


def _ollama_call(name: str, arguments: str) -> dict[str, Any]:
    """Ollama sends `function.arguments` as an object, OpenAI as a JSON string."""
    try:
        parsed = orjson.loads(arguments) if arguments else {}
    except orjson.JSONDecodeError:
        parsed = {"arguments": arguments}
    return {"function": {"name": name, "arguments": parsed}}


def _reason(reason: str | None) -> str:
    return {"length": "length", "tool_calls": "stop", None: "stop"}.get(reason, reason or "stop")


@dataclass(slots=True)
class TranslatedResponse(UpstreamResponse):
    """The backend's response, read as Ollama: what the relays see in its place."""

    translator: StreamTranslator | None = None

    async def next_chunk(self) -> bytes:
        """The next NDJSON lines; b"" only once the backend's stream and the final line are out."""
        translator = self.translator
        assert translator is not None
        if self.status >= 400:
            return b"" if translator.done else self._error_once(await UpstreamResponse.read(self))
        while True:
            data = await UpstreamResponse.next_chunk(self)
            if not data:
                return translator.finish()
            out = translator.feed(data)
            if out:
                return out

    @property
    def pushable(self) -> bool:
        return self.status < 400  # an error body is read whole (next_chunk)

    async def pushed(self, sink: Callable[[bytes], bool]) -> None:
        """The backend's SSE pushed through the translator: the NDJSON lines of each read go
        to `sink` from the connection's callback, the final line once the stream has ended."""
        translator = self.translator
        assert translator is not None

        def translate(data: bytes) -> bool:
            out = translator.feed(data)
            return sink(out) if out else True

        await UpstreamResponse.pushed(self, translate)
        tail = translator.finish()
        if tail:
            sink(tail)

    def _error_once(self, body: bytes) -> bytes:
        assert self.translator is not None
        self.translator.done = True
        return self.translator.whole(body, self.status) + b"\n"

    async def read(self) -> bytes:
        assert self.translator is not None
        return self.translator.whole(await UpstreamResponse.read(self), self.status)
