"""`POST /api/show`: forwarded to the Ollama backend that has the model, answered here for a
model only OpenAI-kind backends serve (their servers have no such route; see
`backends/model_card.py` for what clients need from it)."""

from __future__ import annotations

import asyncio

from starlette.types import Message, Receive, Scope, Send

from ..backends.model_card import show_answer
from ..errors import GatewayError, InvalidInput, NotFound
from ..gateway import Gateway
from ..lifecycle.route import SHOW
from ..model_names import model_key
from .asgi import header_map, read_body
from .context import gateway_of
from .errors import ApiError, as_api_error
from .proxy import forward
from .responses import json_response
from .validation import MAX_ADMIN_BODY, parse_json_object


class Show:
    """ASGI endpoint for `/api/show` (also the fast path's)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = gateway_of(scope)
        try:
            body = await read_body(receive, header_map(scope), MAX_ADMIN_BODY)
            card = self._card(gateway, scope, body)
        except (ApiError, GatewayError) as exc:
            error = exc if isinstance(exc, ApiError) else as_api_error(exc)
            await json_response({"error": error.message}, error.status, error.headers)(scope, receive, send)
            return
        if card is None:
            await forward(gateway, SHOW, scope, _replay(body), send)
            return
        await json_response(card)(scope, receive, send)

    @staticmethod
    def _card(gateway: Gateway, scope: Scope, body: bytes) -> dict[str, object] | None:
        """The answer made here, or None when an Ollama backend (or nobody) should answer."""
        principal = gateway.auth.authenticate(scope, header_map(scope), "user")
        payload = parse_json_object(body)
        name = payload.get("model", payload.get("name"))
        if not isinstance(name, str) or not name.strip():
            raise InvalidInput("model is required")
        key = model_key(name)
        backends = gateway.registry.backends
        if any(b.kind == "ollama" and key in b.models for b in backends):
            return None
        info = next((b.models[key] for b in backends if b.kind == "openai" and key in b.models), None)
        if info is None:
            return None  # the proxy answers: 404, or 503 while a '*' backend has not answered
        if not principal.may_use(key):
            raise NotFound(f"model '{name}' not found")
        return show_answer(info)


def _replay(body: bytes) -> Receive:
    """A `receive` that hands the proxy the body already read, then waits (a client that
    leaves is seen through the server protocol's connection future)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.get_running_loop().create_future()
        return {"type": "http.disconnect"}

    return receive
