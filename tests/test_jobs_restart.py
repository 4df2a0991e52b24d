"""Jobs across a gateway's end: a stop keeps queued jobs queued, and after SIGKILL of the
gateway process every job still completes exactly once, in its original order."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from seadragon_gw.queue.errors import ShuttingDown
from tests.conftest import ALICE, FAST_AUTH, TOKENS, GatewayFactory
from tests.support.fakebackend import FakeBackend
from tests.support.gwclient import chat, markers, wait_until
from tests.support.server import free_port


def job(marker: str) -> dict[str, Any]:
    return {"route": "/api/chat", "body": chat(marker, stream=None)}


def submit(url: str, marker: str) -> str:
    response = httpx.post(f"{url}/api/jobs", json=job(marker), headers=ALICE)
    assert response.status_code == 202, response.text
    return str(response.json()["request_id"])


def read(url: str, job_id: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/api/jobs/{job_id}", headers=ALICE)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def rows(database: Path) -> dict[str, str]:
    """Job id -> status, read by another connection (committed rows only)."""
    connection = sqlite3.connect(database)
    try:
        return dict(connection.execute("SELECT id, status FROM jobs ORDER BY n").fetchall())
    finally:
        connection.close()


def all_completed(url: str, ids: list[str], timeout: float = 10) -> list[dict[str, Any]]:
    wait_until(lambda: all(read(url, i)["status"] == "completed" for i in ids), "every job to complete", timeout)
    return [read(url, i) for i in ids]


@pytest.mark.parametrize("refused_first", [True, False], ids=["waiting-answered-first", "plain-stop"])
def test_a_stop_leaves_waiting_jobs_queued_and_a_running_one_runs_again_at_the_next_start(
        gateways: GatewayFactory, backend: FakeBackend, refused_first: bool) -> None:
    gw = gateways.start([backend])
    backend.hold()
    ids = [submit(gw.url, "s0")]
    backend.wait_waiting(1)
    ids += [submit(gw.url, f"s{i}") for i in (1, 2)]
    database = Path(gw.config.base_dir) / "gw.db"
    wait_until(lambda: rows(database)[ids[0]] == "processing", "the running job marked processing")
    if refused_first:  # the graceful stop: new requests refused, waiting ones answered "shutting down"
        gw.on_loop(lambda g: g.requests.refuse_new(ShuttingDown("the gateway is shutting down")))
        gw.on_loop(lambda g: g.scheduler.reject_waiting(None, ShuttingDown("the gateway is shutting down")))
    gw.server.stop()
    assert rows(database) == dict.fromkeys(ids, "queued")
    backend.wait_disconnects(1)
    backend.release()
    again = gateways.start([backend])
    done = all_completed(again.url, ids)
    assert markers(backend) == ["s0", "s0", "s1", "s2"]
    assert [d["metadata"]["attempts"] for d in done] == [2, 1, 1]


# -- SIGKILL -------------------------------------------------------------------------------
@contextmanager
def gateway_process(config: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m seadragon_gw serve` as its own process; killed at the end if still running."""
    log = (config.parent / "gateway.log").open("ab")
    process = subprocess.Popen([sys.executable, "-m", "seadragon_gw", "serve", "--config", str(config),
                                "--port", str(port)], cwd=config.parent, stdout=log, stderr=log,
                               stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}", process), "the gateway process to serve", 30)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        log.close()


def _answers(url: str, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"the gateway exited with {process.returncode}")
    try:
        return httpx.get(f"{url}/api/version", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_after_sigkill_and_a_restart_every_job_completes_exactly_once_in_order(
        tmp_path: Path, backend: FakeBackend) -> None:
    (tmp_path / "tokens.json").write_text(json.dumps(TOKENS))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "database": "gw.db", "auth": {"tokens_file": "tokens.json", **FAST_AUTH},
        "backends": [{"name": "fake", "url": backend.url, "max_concurrent": 1}],
    }))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    database = tmp_path / "gw.db"

    with gateway_process(config, port) as first:
        done_before = submit(url, "j0")
        wait_until(lambda: read(url, done_before)["status"] == "completed", "j0 to complete")
        completed_at = read(url, done_before)["finished_at"]
        backend.hold()
        ids = [submit(url, "j1")]
        backend.wait_waiting(1)  # j1 is upstream
        ids += [submit(url, f"j{i}") for i in range(2, 6)]  # j2..j5 queued behind it
        wait_until(lambda: rows(database)[ids[0]] == "processing", "j1 marked processing")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert rows(database) == {done_before: "completed", ids[0]: "processing", **dict.fromkeys(ids[1:], "queued")}
    backend.wait_disconnects(1)

    with gateway_process(config, port) as second:
        backend.wait_waiting(1)  # j1 runs again first, before every job submitted after it
        assert [read(url, i)["status"] for i in ids] == ["processing", "queued", "queued", "queued", "queued"]
        backend.release()
        done = all_completed(url, ids)
        assert read(url, done_before)["finished_at"] == completed_at  # not run again
        second.send_signal(signal.SIGTERM)
        second.wait(30)

    assert markers(backend) == ["j0", "j1", "j1", "j2", "j3", "j4", "j5"]
    assert [d["metadata"]["attempts"] for d in done] == [2, 1, 1, 1, 1]
    assert all(d["result"]["done"] is True for d in done)
    assert set(rows(database).values()) == {"completed"}
