"""Seed 003's multi-modal routes through a real gateway to real fake backends: images and speech
(JSON), transcriptions (multipart, streamed through unread, routed by its `model` field), with
the same auth, queue and model routing as chat, and the real OpenAI client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import ALICE, GatewayFactory, RunningGateway
from tests.support.fakebackend import FakeBackend

MEDIA = ("dall-e-3", "tts-1", "whisper-1")
AUDIO = b"RIFF" + bytes(range(256)) * 64  # 16 KiB of "audio"


@pytest.fixture(scope="module")
def media() -> Iterator[tuple[FakeBackend, FakeBackend]]:
    with FakeBackend() as chat_only, FakeBackend(models=MEDIA, kind="openai") as media_server:
        yield chat_only, media_server


@pytest.fixture(scope="module")
def gw(media: tuple[FakeBackend, FakeBackend], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    factory = GatewayFactory(tmp_path_factory.mktemp("passthrough"))
    chat_only, media_server = media
    specs = [{"name": "chat", "url": chat_only.url}, {"name": "media", "kind": "openai", "url": media_server.url}]
    try:
        yield factory.start(specs, server={"max_body_bytes": 64 * 1024})
    finally:
        factory.close()


@pytest.fixture
def server(media: tuple[FakeBackend, FakeBackend]) -> FakeBackend:
    media[0].reset()
    media[1].reset()
    return media[1]


def client(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="tok-alice", max_retries=0, timeout=10)


def received(backend: FakeBackend, path: str) -> list[Any]:
    return [r for r in list(backend.requests) if r.path == path]


def test_image_generation_goes_to_the_backend_with_the_model(gw: RunningGateway, server: FakeBackend,
                                                             media: tuple[FakeBackend, FakeBackend]) -> None:
    image = client(gw).images.generate(model="dall-e-3", prompt="a sea dragon", n=1)
    assert image.data is not None and image.data[0].b64_json == "aW1hZ2U="
    assert image.data[0].revised_prompt == "a sea dragon"
    (sent,) = received(server, "/v1/images/generations")
    assert sent.json["model"] == "dall-e-3:latest"  # the name the backend lists it by, as for chat
    assert "authorization" not in sent.headers
    assert received(media[0], "/v1/images/generations") == []


def test_speech_comes_back_as_the_backends_audio(gw: RunningGateway, server: FakeBackend) -> None:
    response = client(gw).audio.speech.create(model="tts-1", voice="alloy", input="hello there")
    assert response.content == b"ID3 fake audio: hello there"
    assert response.response.headers["content-type"] == "audio/mpeg"


def test_transcription_is_streamed_through_unread(gw: RunningGateway, server: FakeBackend) -> None:
    """The OpenAI SDK sends the model field before the file; the gateway forwards the body as it
    arrives (chunked: it never held the whole upload to learn its length), byte for byte."""
    text = client(gw).audio.transcriptions.create(model="whisper-1", file=("speech.wav", AUDIO, "audio/wav"))
    (sent,) = received(server, "/v1/audio/transcriptions")
    assert text.text == f"{len(sent.body)} bytes for whisper-1"
    assert sent.headers["transfer-encoding"] == "chunked" and "content-length" not in sent.headers
    assert sent.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert AUDIO in sent.body


def _multipart(*parts: tuple[str, bytes, str | None]) -> tuple[bytes, str]:
    boundary = "sdgw-test-boundary"
    body = b""
    for name, value, filename in parts:
        extra = f'; filename="{filename}"\r\nContent-Type: audio/wav' if filename else ""
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{extra}\r\n\r\n'
        body += head.encode() + value + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _upload(gw: RunningGateway, body: bytes, content_type: str, query: str = "",
            headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(gw.url + "/v1/audio/transcriptions" + query, content=body,
                      headers={**ALICE, "content-type": content_type, **(headers or {})}, timeout=10)


def test_file_before_the_model_field_needs_the_model_query_parameter(gw: RunningGateway,
                                                                    server: FakeBackend) -> None:
    body, content_type = _multipart(("file", AUDIO, "a.wav"), ("model", b"whisper-1", None))
    refused = _upload(gw, body, content_type)
    assert (refused.status_code, refused.json()["error"]["message"]) == (
        400, "model is required: send the multipart model field before the file, or ?model=NAME")
    served = _upload(gw, body, content_type, "?model=whisper-1")
    assert served.status_code == 200 and served.json() == {"text": f"{len(body)} bytes for whisper-1"}
    assert [r.query for r in received(server, "/v1/audio/transcriptions")] == ["model=whisper-1"]


def test_a_model_field_after_the_file_cannot_name_another_model(gw: RunningGateway, server: FakeBackend) -> None:
    body, content_type = _multipart(("file", AUDIO, "a.wav"), ("model", b"secret-model", None))
    response = _upload(gw, body, content_type, "?model=whisper-1")
    assert (response.status_code, response.json()["error"]["message"]) == (
        400, "the multipart model field names 'secret-model' after the file, but the request was routed to "
             "model 'whisper-1'")
    assert received(server, "/v1/audio/transcriptions") == []
    assert gw.drained()  # refused before it was admitted: it holds no slot


def test_uploads_are_refused_like_any_request(gw: RunningGateway, server: FakeBackend) -> None:
    body, content_type = _multipart(("model", b"whisper-1", None), ("file", AUDIO, "a.wav"))
    anonymous = httpx.post(gw.url + "/v1/audio/transcriptions", content=body,
                           headers={"content-type": content_type}, timeout=10)
    assert anonymous.status_code == 401
    unknown, _ = _multipart(("model", b"whisper-9", None), ("file", AUDIO, "a.wav"))
    missing = _upload(gw, unknown, content_type)
    assert (missing.status_code, missing.json()["error"]["message"]) == (404, "model 'whisper-9' not found")
    not_form = _upload(gw, b'{"model": "whisper-1"}', "application/json")
    assert (not_form.status_code, not_form.json()["error"]["message"]) == (
        400, "expected a multipart/form-data body (the audio file and its form fields)")
    big, _ = _multipart(("model", b"whisper-1", None), ("file", AUDIO * 5, "a.wav"))
    too_large = _upload(gw, big, content_type)
    assert (too_large.status_code, too_large.json()["error"]["message"]) == (
        413, "request body too large (limit 65536 bytes)")
    assert received(server, "/v1/audio/transcriptions") == []


def test_a_chunked_upload_over_the_limit_is_cut_when_the_count_passes_it(gw: RunningGateway,
                                                                         server: FakeBackend) -> None:
    big, content_type = _multipart(("model", b"whisper-1", None), ("file", AUDIO * 5, "a.wav"))

    def pieces() -> Iterator[bytes]:
        for at in range(0, len(big), 8192):
            yield big[at:at + 8192]

    response = httpx.post(gw.url + "/v1/audio/transcriptions", content=pieces(),
                          headers={**ALICE, "content-type": content_type}, timeout=10)
    assert (response.status_code, response.json()["error"]["message"]) == (
        413, "request body too large (limit 65536 bytes)")
