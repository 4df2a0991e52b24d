"""`POST /api/ocr` end to end: the gateway starts the real OCR server (`python -m seadragon_gw.ocr`,
RapidOCR's PP-OCRv4 models on CPU) as a managed backend with resolution profiles, and reads text
rendered with Pillow at two resolutions: the request for the other one waits while the process
restarts with it. Also the unknown-resolution 400, seed 004's explicit switch, auth."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

pytest.importorskip("rapidocr_onnxruntime", reason="the ocr extra (rapidocr-onnxruntime) is not installed")
pytest.importorskip("PIL.Image", reason="the ocr extra (Pillow) is not installed")

from tests.conftest import ADMIN, ALICE, GatewayFactory, RunningGateway
from tests.support.checks import native_error, openai_error, poll
from tests.test_ocr_server import chat_body, data_url, text_png

RESOLUTIONS = {"tiny": "512", "small": "640", "base": "1024", "large": "1280", "gundam": "0"}
BIG, SMALL = "SEADRAGON 4217", "small print here 99"


def ocr_backend(tmp_path: Path) -> dict[str, Any]:
    """As the shipped config.yaml has it, with one onnxruntime thread (a shared test machine)."""
    return {"name": "ocr", "kind": "openai", "role": "ocr", "models": ["rapidocr"], "max_concurrent": 1,
            "managed": {"command": [sys.executable, "-m", "seadragon_gw.ocr", "--host", "{host}", "--port", "{port}",
                                    "--model-name", "rapidocr", "--threads", "1"],
                        "profiles": {name: {"args": ["--det-limit", limit]} for name, limit in RESOLUTIONS.items()},
                        "default_profile": "base", "start_timeout_s": 60, "health": {"interval_s": 0.05},
                        "log_dir": str(tmp_path / "logs")}}


@pytest.fixture
def ocr_gw(gateways: GatewayFactory, tmp_path: Path) -> RunningGateway:
    return gateways.start([ocr_backend(tmp_path)])


def ocr(gw: RunningGateway, resolution: str | None = None, **extra: Any) -> httpx.Response:
    headers = {**ALICE, **({"X-Resolution": resolution} if resolution else {})}
    body = chat_body(data_url(text_png(BIG, SMALL)), **extra)
    return httpx.post(f"{gw.url}/api/ocr", json=body, headers=headers, timeout=90)


def running_profile(gw: RunningGateway) -> str | None:
    return gw.on_loop(lambda g: g.registry.profile_of(g.registry.get("ocr")))


def test_reads_text_at_two_resolutions(ocr_gw: RunningGateway) -> None:
    """tiny (512 px) reads the headline only; the default, base (1024 px), also the small print.
    The second request switches the process for real: it waits in the queue meanwhile."""
    tiny = ocr(ocr_gw, "tiny")
    assert tiny.status_code == 200, tiny.text
    assert tiny.json()["model"] == "rapidocr"
    assert tiny.json()["choices"][0]["message"]["content"].replace(" ", "") == BIG.replace(" ", "")
    assert running_profile(ocr_gw) == "tiny"
    base = ocr(ocr_gw)
    assert base.status_code == 200, base.text
    assert base.json()["choices"][0]["message"]["content"] == f"{BIG}\n{SMALL}"
    assert base.json()["usage"] == {"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9}
    assert running_profile(ocr_gw) == "base"


def test_the_shipped_config_reads_text_out_of_the_box(gateways: GatewayFactory, tmp_path: Path) -> None:
    """config.yaml's own `ocr` backend, unchanged but for its log folder: /api/ocr works with it."""
    raw = yaml.safe_load((Path(__file__).resolve().parent.parent / "config.yaml").read_text(encoding="utf-8"))
    (shipped,) = [b for b in raw["backends"] if b.get("role") == "ocr"]
    shipped["managed"]["log_dir"] = str(tmp_path / "logs")
    gw = gateways.start([shipped])
    response = ocr(gw)  # X-Resolution left out: the default profile, base
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == f"{BIG}\n{SMALL}"
    assert running_profile(gw) == "base"


def test_stream_and_explicit_switch(ocr_gw: RunningGateway) -> None:
    switched = httpx.post(f"{ocr_gw.url}/admin/ocr/resolution", params={"resolution": "small"}, headers=ADMIN,
                          timeout=90)
    assert switched.status_code == 200
    # stopped until the first request: the switch only sets the profile of the next start
    assert switched.json() == {"status": "switched", "resolution": "small",
                               "message": "OCR backend ocr is stopped: it starts at resolution small"}
    streamed = httpx.post(f"{ocr_gw.url}/api/ocr", headers={**ALICE, "X-Resolution": "small"}, timeout=90,
                          json=chat_body(data_url(text_png(BIG, SMALL)), stream=True))
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    assert '"content":"small print here 99"' in streamed.text and streamed.text.endswith("data: [DONE]\n\n")
    assert running_profile(ocr_gw) == "small"
    again = httpx.post(f"{ocr_gw.url}/api/admin/ocr/resolution", params={"resolution": "large", "graceful": "true"},
                       headers=ADMIN, timeout=90)
    assert again.json() == {"status": "switched", "resolution": "large",
                            "message": "OCR now runs at resolution large"}
    assert running_profile(ocr_gw) == "large"


def test_refusals(ocr_gw: RunningGateway) -> None:
    known = "tiny, small, base, large, gundam"
    assert openai_error(ocr(ocr_gw, "huge"), 400) == f"unknown resolution 'huge' (known: {known})"
    switch = httpx.post(f"{ocr_gw.url}/admin/ocr/resolution", params={"resolution": "huge"}, headers=ADMIN)
    assert native_error(switch, 400) == f"unknown resolution 'huge' (known: {known})"
    not_admin = httpx.post(f"{ocr_gw.url}/admin/ocr/resolution", params={"resolution": "tiny"}, headers=ALICE)
    assert not_admin.status_code == 403
    anonymous = httpx.post(f"{ocr_gw.url}/api/ocr", json=chat_body(data_url(text_png("X"))))
    assert anonymous.status_code == 401
    other_model = httpx.post(f"{ocr_gw.url}/api/ocr", headers=ALICE,
                             json={**chat_body(data_url(text_png("X"))), "model": "llama3"})
    assert openai_error(other_model, 400) == "model must be the OCR model 'rapidocr' (or left out)"
    # nothing above needed the process
    assert ocr_gw.on_loop(lambda g: g.registry.get("ocr").state.value) == "stopped"


def test_bad_image_is_the_ocr_servers_400(ocr_gw: RunningGateway) -> None:
    response = httpx.post(f"{ocr_gw.url}/api/ocr", headers=ALICE, timeout=90,
                          json=chat_body(data_url(b"not an image")))
    assert openai_error(response, 400) == "image 1: not a readable image (PNG, JPEG, WebP, ...)"


def test_no_ocr_backend_is_404(gateways: GatewayFactory) -> None:
    gw = gateways.start([])
    response = httpx.post(f"{gw.url}/api/ocr", headers=ALICE, json=chat_body(data_url(text_png("X"))))
    assert openai_error(response, 404) == "no OCR backend: configure a backend with role: ocr"


def test_async_job_keeps_its_resolution_and_usage_records_it(ocr_gw: RunningGateway) -> None:
    """`Prefer: respond-async`: seed 004's answer; the job runs at its resolution (tiny: no small
    print), and the usage log keeps the resolution each request asked for (what auto_switch reads)."""
    submitted = httpx.post(f"{ocr_gw.url}/api/ocr", json=chat_body(data_url(text_png(BIG, SMALL))), timeout=30,
                           headers={**ALICE, "X-Resolution": "tiny", "Prefer": "respond-async"})
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["request_id"]
    assert submitted.json() == {"request_id": job_id, "status": "queued", "resolution": "tiny"}
    assert submitted.headers["location"] == f"/api/jobs/{job_id}"

    def finished() -> dict[str, Any] | None:
        job: dict[str, Any] = httpx.get(f"{ocr_gw.url}/api/jobs/{job_id}", headers=ALICE).json()
        return job if job["status"] in ("completed", "failed") else None

    job = poll(finished, timeout=90, what="the OCR job to finish")
    assert job["status"] == "completed" and job["profile"] == "tiny"
    assert job["result"]["choices"][0]["message"]["content"].replace(" ", "") == BIG.replace(" ", "")
    assert ocr(ocr_gw, "small").status_code == 200

    async def demand(g: Any) -> list[Any]:
        await g.logs.flush()
        return list(await g.store.usage.demand([(0.0, 1e12)]))

    rows = ocr_gw.await_on_loop(demand)
    assert sorted((r.model, r.backend, r.profile, r.requests) for r in rows) == [
        ("rapidocr:latest", "ocr", "small", 1), ("rapidocr:latest", "ocr", "tiny", 1)]
