"""The `ollama` npm package (Cline's and Roo's client) against the gateway, when Node is present."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).parent / "node"

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None, reason="node/npm not on PATH"),
]


@pytest.fixture(scope="module")
def node_client() -> Path:
    """Install the pinned npm package once (`npm ci` from the committed lock file)."""
    if not (NODE_DIR / "node_modules" / "ollama").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True,
                       capture_output=True, timeout=300)
    return NODE_DIR / "ollama_client.mjs"


def test_ollama_npm_package_through_gateway(node_client: Path, gw, backend) -> None:
    run = subprocess.run(["node", str(node_client), gw.url, "tok-alice"], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert "llama3:latest" in seen["list"]
    assert seen["version"] == "0.12.6"
    assert seen["chat"] == {"model": "llama3", "content": "chunk0 chunk1 chunk2 ", "done": True}
    assert [c["done"] for c in seen["chatStream"]] == [False, False, False, True]
    assert "".join(c["content"] for c in seen["chatStream"]) == "chunk0 chunk1 chunk2 "
    assert "".join(seen["generate"]) == "chunk0 chunk1 chunk2 "
    assert seen["embed"] == 2
    assert seen["show"] > 0
    assert seen["ps"] is True
    assert seen["badToken"]["status"] == 401
    assert "unauthorized" in seen["badToken"]["message"]
    chat_request = next(r for r in backend.inference_requests() if r.path == "/api/chat")
    assert chat_request.json["options"] == {"num_ctx": 32768}
    assert "authorization" not in chat_request.headers
