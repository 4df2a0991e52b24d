"""Streaming through the gateway: unbuffered, cleanly framed, failures in-band, real clients.

`hold_mid_stream()` makes the fake backend flush its first chunk and then park, so "the client
got chunk 1 before the backend was released" is an ordering fact, not a timing guess.
"""

from __future__ import annotations

import ollama
import openai
import orjson
import pytest

from tests.conftest import ALICE, GatewayFactory
from tests.support.fake_payloads import chunk_texts
from tests.support.fakebackend import FakeBackend
from tests.support.gwclient import GatewayClient, chat, ndjson, sse_data
from tests.support.shared import Fleet, fleet_fixtures

NATIVE = "/api/chat"
OPENAI = "/v1/chat/completions"
TEXTS = ["chunk0 ", "chunk1 ", "chunk2 "]  # what the fake streams (3 chunks)


module_fleet, fleet = fleet_fixtures(ALICE)


def first_line_while_held(client: GatewayClient, backend: FakeBackend, path: str, body: dict,
                          headers: dict[str, str] | None = None) -> tuple[dict[str, str], str, list[str]]:
    """Stream with the backend parked after its first chunk: the first non-blank line must
    arrive while it is still parked. Returns the headers, that line and the lines after release."""
    backend.hold_mid_stream()
    with client.stream(path, body, headers) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        first = next(line for line in lines if line)
        backend.wait_waiting(1)  # still parked: the line came before release(), not after
        backend.release()
        return dict(response.headers), first, list(lines)


def ollama_client(url: str) -> ollama.Client:
    return ollama.Client(host=url, headers=ALICE, timeout=10)


def openai_client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="tok-alice", max_retries=0, timeout=10)


# ---------------------------------------------------------------- no buffering, clean framing


def test_native_stream_is_not_buffered(fleet: Fleet) -> None:
    _, client = fleet.queued()
    _, first, rest = first_line_while_held(client, fleet.backend, NATIVE, chat(stream=True))
    assert orjson.loads(first)["message"]["content"] == TEXTS[0]
    lines = ndjson(rest)
    assert [line["message"]["content"] for line in lines] == [*TEXTS[1:], ""]
    assert lines[-1]["done"] is True and lines[-1]["done_reason"] == "stop"


def test_sse_stream_is_not_buffered(fleet: Fleet) -> None:
    _, client = fleet.queued()
    _, first, rest = first_line_while_held(client, fleet.backend, OPENAI, chat(stream=True))
    assert first.startswith("data: ") and orjson.loads(first[len("data: "):])["object"] == "chat.completion.chunk"
    assert sse_data(rest)[-1] == "[DONE]"


@pytest.mark.parametrize(("path", "queued"), [(NATIVE, False), (NATIVE, True), (OPENAI, False)])
def test_stream_headers_and_no_blank_ndjson_lines(fleet: Fleet, path: str, queued: bool) -> None:
    _, client = fleet.queued()
    first = None
    if queued:  # the early-headers path starts the response itself; it must frame the same way
        fleet.backend.hold()
        first = client.submit(path, chat("first"))
        fleet.backend.wait_waiting(1)
    with client.stream(path, chat(stream=True)) as response:
        if first is not None:
            fleet.backend.release()
        raw = response.read()
    assert response.status_code == 200
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["cache-control"] == "no-cache"
    if path == NATIVE:
        assert response.headers["content-type"] == "application/x-ndjson"
        assert b"\n\n" not in raw and not raw.startswith(b"\n") and raw.endswith(b"}\n")
        assert ndjson(raw.decode().splitlines())[-1]["done"] is True
    else:
        assert raw.endswith(b"data: [DONE]\n\n")
    if first is not None:
        assert first.result(timeout=5).status_code == 200


# ---------------------------------------------------------------- real clients


def test_ollama_client_streams_chat_and_generate(fleet: Fleet) -> None:
    gw, _ = fleet.queued()
    with ollama_client(gw.url) as client:
        parts = list(client.chat(model="llama3", messages=chat()["messages"], stream=True))
        assert [p.message.content for p in parts] == [*TEXTS, ""]
        assert parts[-1].done and parts[-1].done_reason == "stop" and parts[-1].eval_count == 3
        assert all(p.model == "llama3" for p in parts)
        gen = list(client.generate(model="llama3", prompt="hello there", stream=True))
        assert [g.response for g in gen] == [*TEXTS, ""]
        assert gen[-1].done and gen[-1].eval_count == 3 and not any(g.done for g in gen[:-1])


def test_openai_client_streams_chat_and_completions(fleet: Fleet) -> None:
    gw, _ = fleet.queued()
    with openai_client(gw.url) as client:
        chunks = list(client.chat.completions.create(model="llama3", messages=chat()["messages"], stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(TEXTS)
        assert chunks[-1].choices[0].finish_reason == "stop"
        pieces = list(client.completions.create(model="llama3", prompt="hello there", stream=True))
        assert "".join(p.choices[0].text for p in pieces if p.choices) == "".join(TEXTS)


# ---------------------------------------------------------------- failures


def test_native_mid_stream_failure_ends_with_error_line(fleet: Fleet) -> None:
    gw, client = fleet.queued()
    fleet.backend.fail_mid_stream = True
    with client.stream(NATIVE, chat(stream=True)) as response:
        assert response.status_code == 200
        lines = ndjson(response.iter_lines())
    assert lines[0]["message"]["content"] == TEXTS[0] and lines[0]["done"] is False
    assert len(lines) == 2 and set(lines[1]) == {"error"} and lines[1]["error"]
    with ollama_client(gw.url) as oc, pytest.raises(ollama.ResponseError) as raised:
        list(oc.chat(model="llama3", messages=chat()["messages"], stream=True))
    assert raised.value.error == lines[1]["error"]


def test_openai_mid_stream_failure_ends_with_error_event(fleet: Fleet) -> None:
    gw, client = fleet.queued()
    fleet.backend.fail_mid_stream = True
    with client.stream(OPENAI, chat(stream=True)) as response:
        assert response.status_code == 200
        events = sse_data(response.iter_lines())
    assert len(events) == 2 and orjson.loads(events[0])["object"] == "chat.completion.chunk"
    error = orjson.loads(events[1])["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    with openai_client(gw.url) as oai, pytest.raises(openai.APIError) as raised:
        list(oai.chat.completions.create(model="llama3", messages=chat()["messages"], stream=True))
    assert raised.value.message == error["message"]


def test_upstream_error_status_reaches_streaming_client(fleet: Fleet) -> None:
    gw, client = fleet.queued()
    body = {"error": 'model "x" not found'}
    fleet.backend.respond_status(404, body)
    with client.stream(NATIVE, chat(stream=True)) as response:  # dispatched at once: no early headers
        assert response.status_code == 404
        assert orjson.loads(response.read()) == body
    with ollama_client(gw.url) as oc, pytest.raises(ollama.ResponseError) as raised:
        list(oc.chat(model="llama3", messages=chat()["messages"], stream=True))
    assert raised.value.status_code == 404 and raised.value.error == body["error"]


@pytest.mark.parametrize(("path", "content_type"), [(NATIVE, "application/x-ndjson"),
                                                      (OPENAI, "text/event-stream")])
def test_slow_backend_still_gets_client_headers_after_the_grace(fleet: Fleet, path: str, content_type: str) -> None:
    """A backend that sends nothing for a while (Ollama loading a model) must not trip the
    client's header timeout: after `header_grace_s` the client gets 200 and stream headers."""
    _, client = fleet.queued(header_grace_s=0.2)
    fleet.backend.hold()
    with client.stream(path, chat(stream=True)) as response:
        assert fleet.backend.waiting == 1, "headers must come while the backend is still silent"
        assert response.status_code == 200 and response.headers["content-type"] == content_type
        assert "x-queue-position" not in response.headers  # it was not queued
        fleet.backend.release()
        lines = [line for line in response.iter_lines() if line]
    if path == NATIVE:
        assert orjson.loads(lines[-1])["done"] is True
    else:
        assert lines[-1] == "data: [DONE]"


def test_slow_backend_error_after_the_grace_ends_the_stream_in_band(fleet: Fleet) -> None:
    _, client = fleet.queued(header_grace_s=0.2)
    fleet.backend.hold()
    fleet.backend.respond_status(404, {"error": 'model "llama3" not found, try pulling it first'})
    with client.stream(NATIVE, chat(stream=True)) as response:
        assert response.status_code == 200
        fleet.backend.release()
        lines = ndjson(response.iter_lines())
    assert lines == [{"error": 'model "llama3" not found, try pulling it first'}]


# ---------------------------------------------------------------- `stream` defaults, never `Accept`


@pytest.mark.parametrize("accept", ["application/json", "text/event-stream", "application/x-ndjson"])
def test_native_streams_when_stream_is_absent(fleet: Fleet, accept: str) -> None:
    _, client = fleet.queued()
    headers, first, rest = first_line_while_held(client, fleet.backend, NATIVE, chat(stream=None),
                                                 {"Accept": accept})
    assert headers["content-type"] == "application/x-ndjson" and headers["x-accel-buffering"] == "no"
    assert orjson.loads(first)["done"] is False and ndjson(rest)[-1]["done"] is True


@pytest.mark.parametrize("accept", ["application/json", "text/event-stream", "application/x-ndjson"])
def test_openai_answers_one_object_when_stream_is_absent(fleet: Fleet, accept: str) -> None:
    _, client = fleet.queued()
    response = client.post(OPENAI, chat(stream=None), {"Accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert "x-accel-buffering" not in response.headers
    reply = response.json()
    assert reply["object"] == "chat.completion" and reply["choices"][0]["message"]["content"] == "".join(TEXTS)


def test_a_client_that_reads_slowly_gets_every_byte_of_a_long_stream(gateways: GatewayFactory) -> None:
    """The relay writes tokens straight from the backend's callback (server/direct.py): when the
    client's socket is full, reading from the backend pauses and resumes once it drains, and
    the client still gets the stream whole, in order, ended by its done line."""
    import socket
    import time

    with FakeBackend(chunks=60000) as backend:
        gw = gateways.start([backend])
        body = orjson.dumps({**chat(), "stream": True})
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # a small window: the gateway's buffer fills
            sock.connect((gw.server.host, gw.server.port))
            sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
                         b"Authorization: Bearer tok-alice\r\nConnection: close\r\n"
                         b"Content-Length: %d\r\n\r\n%b" % (len(body), body))
            time.sleep(0.5)  # not reading: the backend's stream must wait, not pile up in the gateway
            parts = []
            while data := sock.recv(65536):
                parts.append(data)
        raw = b"".join(parts)
    head, _, chunked = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"transfer-encoding: chunked" in head.lower()
    lines = ndjson(_dechunk(chunked).decode().splitlines())
    assert len(lines) == 60001 and lines[-1]["done"] is True
    assert [line["message"]["content"] for line in lines[:-1]] == chunk_texts(60000)


def _dechunk(data: bytes) -> bytes:
    out, at = [], 0
    while True:
        end = data.index(b"\r\n", at)
        size = int(data[at:end], 16)
        if size == 0:
            return b"".join(out)
        out.append(data[end + 2:end + 2 + size])
        at = end + 2 + size + 2
