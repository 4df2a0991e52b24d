"""The garbage-collection pacer as `seadragon-gw serve` runs it: started with the gateway, its
figures in `/metrics`, told by the scheduler whether requests are in progress. A request whose
body parses into 200,000 objects grows the heap enough for full collections to run (CPython
runs one per ~70,000 objects of growth); with `gc_freeze_after_ms: 0` each freezes what it
kept, nothing is thawed while the request is in progress, and once it is gone the pacer thaws."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ADMIN
from tests.support.checks import poll
from tests.support.fakebackend import FakeBackend
from tests.support.gwclient import chat
from tests.test_shutdown import serve

OBJECTS = 200_000  # the request body's empty JSON arrays, each a list the collector tracks once parsed


def gc_figures(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", headers=ADMIN, timeout=10).text
    return {sample.name: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name.startswith("seadragon_gc_")}


def open_big_stream(url: str) -> socket.socket:
    """A streaming chat with OBJECTS empty arrays in an extra field: the held backend keeps it
    in progress (holding the slot, its parsed body alive) until the socket is closed."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({**chat("big", stream=True), "padding": [[]] * OBJECTS}).encode()
    head = (f"POST /api/chat HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer tok-alice\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    sock = socket.create_connection((host, int(port)))
    sock.sendall(head + body)
    return sock


def test_serve_freezes_while_a_request_is_in_progress_and_thaws_once_it_is_gone(tmp_path: Path,
                                                                                backend: FakeBackend) -> None:
    backend.hold()
    with serve(tmp_path, backend, {"gc_freeze_after_ms": 0}) as served:
        start = gc_figures(served.url)
        assert start["seadragon_gc_freezes_total"] == 1 and start["seadragon_gc_thaws_total"] == 0  # start-up
        sock = open_big_stream(served.url)
        try:
            poll(lambda: backend.waiting == 1, 20, "the big request to reach the backend")
            time.sleep(2.5)  # the pacer looks every second: it has looked, and seen the request in progress
            held = gc_figures(served.url)
            assert held["seadragon_gc_full_collections_total"] >= 1, held
            assert held["seadragon_gc_freezes_total"] == 1 + held["seadragon_gc_full_collections_total"]
            assert held["seadragon_gc_longest_full_collection_seconds"] > 0
            assert held["seadragon_gc_thaws_total"] == 0  # a request in progress: nothing thawed
        finally:
            sock.close()
            backend.release()
        poll(lambda: gc_figures(served.url)["seadragon_gc_thaws_total"] >= 1, 20,
             "the pacer to thaw once the request is gone")


def test_serve_with_freezing_off_only_measures(tmp_path: Path, backend: FakeBackend) -> None:
    with serve(tmp_path, backend, {"gc_freeze_after_ms": None}) as served:
        figures = gc_figures(served.url)
        assert figures["seadragon_gc_freezes_total"] == 0 and figures["seadragon_gc_thaws_total"] == 0
        assert "seadragon_gc_longest_full_collection_seconds" in figures
