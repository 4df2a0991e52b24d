"""The OCR server alone (seadragon_gw/ocr): health while loading, /v1/models, text out of a real
image with the real PP-OCRv4 models, SSE, usage, and clear 400s for bad input."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("rapidocr_onnxruntime", reason="the ocr extra (rapidocr-onnxruntime) is not installed")
Image = pytest.importorskip("PIL.Image", reason="the ocr extra (Pillow) is not installed")

from PIL import ImageDraw, ImageFont  # noqa: E402

from seadragon_gw.ocr.engine import Engine  # noqa: E402
from seadragon_gw.ocr.install import REQUIREMENTS  # noqa: E402
from seadragon_gw.ocr.server import OcrService, OcrSettings, build_app  # noqa: E402
from tests.support.checks import poll  # noqa: E402
from tests.support.server import ThreadedServer, free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def text_png(big: str, small: str | None = None) -> bytes:
    """`big` in 72 px letters on a 900x220 white PNG; `small` in 14 px below it (lost at low resolutions)."""
    image = Image.new("RGB", (900, 220), "white")
    draw = ImageDraw.Draw(image)
    draw.text((30, 60), big, fill="black", font=ImageFont.load_default(size=72))
    if small is not None:
        draw.text((30, 180), small, fill="black", font=ImageFont.load_default(size=14))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def chat_body(*urls: str, text: str = "read this", **extra: Any) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    parts += [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return {"model": "rapidocr", "messages": [{"role": "user", "content": parts}], **extra}


@pytest.fixture(scope="module")
def ocr_url() -> Iterator[str]:
    """The real server, as a managed backend runs it: `python -m seadragon_gw.ocr`."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "seadragon_gw.ocr", "--port", str(port), "--det-limit", "1024",
                                "--threads", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/health").status_code == 200
        except httpx.TransportError:
            return False

    try:
        poll(healthy, timeout=60, what="the OCR server to load its models")
        yield url
    finally:
        process.terminate()
        process.wait(10)


def test_reads_text_with_usage(ocr_url: str) -> None:
    image = data_url(text_png("SEADRAGON 4217", "small print here 99"))
    response = httpx.post(f"{ocr_url}/v1/chat/completions", json=chat_body(image), timeout=60)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["object"] == "chat.completion" and answer["model"] == "rapidocr"
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "SEADRAGON 4217\nsmall print here 99"}
    assert answer["choices"][0]["finish_reason"] == "stop"
    # one image + the 2 words of the text part; the answer's 6 words
    assert answer["usage"] == {"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9}


def test_streams_sse_with_usage_last(ocr_url: str) -> None:
    body = chat_body(data_url(text_png("SEADRAGON 4217", "small print here 99")), stream=True)
    response = httpx.post(f"{ocr_url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = [line[len("data: "):] for line in response.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [httpx.Response(200, content=e).json() for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "SEADRAGON 4217\nsmall print here 99"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9}


def test_models_and_health(ocr_url: str) -> None:
    assert httpx.get(f"{ocr_url}/v1/models").json() == {
        "object": "list", "data": [{"id": "rapidocr", "object": "model", "created": 0, "owned_by": "seadragon_gw"}]}
    assert httpx.get(f"{ocr_url}/health").json() == {"status": "ok", "model": "rapidocr", "det_limit": 1024}


@pytest.mark.parametrize(("body", "message"), [
    (chat_body(), "no image: send one as a content part {\"type\": \"image_url\", \"image_url\": "
                  "{\"url\": \"data:image/png;base64,...\"}}"),
    (chat_body("data:image/png;base64,@@@"), "image 1: the data URL is not valid base64"),
    (chat_body(data_url(b"hello, not an image")), "image 1: not a readable image (PNG, JPEG, WebP, ...)"),
    (chat_body("https://example.com/a.png"),
     "image 1: image_url.url must be a data: URL (data:image/png;base64,...); this server fetches nothing"),
    (chat_body("data:image/png,rawbytes"), "image 1: the data URL must be base64 (data:image/png;base64,...)"),
    ({"messages": "hi"}, "messages is required: a list with a user message holding an image_url part"),
    (["a list"], "request body must be a JSON object (an OpenAI chat completion request)"),
])
def test_bad_input_is_a_clear_400(ocr_url: str, body: Any, message: str) -> None:
    response = httpx.post(f"{ocr_url}/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json() == {"error": {"message": message, "type": "invalid_request_error", "param": None,
                                         "code": None}}


def test_not_json_is_400(ocr_url: str) -> None:
    response = httpx.post(f"{ocr_url}/v1/chat/completions", content=b"{nope")
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "request body must be JSON (an OpenAI chat completion request)"


def test_health_is_503_until_the_models_are_loaded() -> None:
    """Loading is held on an event, so the 503 phase is seen for certain."""
    release = threading.Event()

    def slow_load(threads: int) -> Engine:
        release.wait(10)
        return Engine(threads)

    service = OcrService(OcrSettings(threads=1), load=slow_load)
    with ThreadedServer(build_app(service)) as server:
        assert httpx.get(f"{server.url}/health").json() == {"status": "loading"}
        assert httpx.get(f"{server.url}/health").status_code == 503
        response = httpx.post(f"{server.url}/v1/chat/completions", json=chat_body(data_url(text_png("X"))))
        assert response.status_code == 503
        assert response.json()["error"]["message"] == "the OCR models are loading; try again shortly"
        release.set()
        poll(lambda: httpx.get(f"{server.url}/health").status_code == 200, timeout=30, what="the models to load")


def test_requirements_are_the_ocr_extra() -> None:
    """The first-use installer installs exactly pyproject's `ocr` extra (one list, checked here)."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert list(REQUIREMENTS) == extras["ocr"]
    assert set(REQUIREMENTS) <= set(extras["test"])


def test_missing_extra_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from seadragon_gw.ocr import __main__ as cli
    from seadragon_gw.ocr import install

    monkeypatch.setattr(install, "missing", lambda: ["rapidocr_onnxruntime"])
    assert cli.main(["--port", "1"]) == cli.EXIT_MISSING
    assert capsys.readouterr().err == ("the OCR server needs the ocr extra: pip install 'seadragon_gw[ocr]' "
                                       "(or pass --install-missing)\n")
