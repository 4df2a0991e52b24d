"""Config loading and validation, and the two start-up commands run as real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from seadragon_gw.cli import resolve_config
from seadragon_gw.config import ConfigError, load_config, parse_config
from tests.support.checks import poll
from tests.support.server import free_port

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def config_error(raw: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    message = str(info.value)
    assert "\n" not in message and message
    return message


def write_yaml(path: Path, raw: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return path


# ------------------------------------------------------------------ parse_config / load_config


@pytest.mark.parametrize(("raw", "key"), [
    ({"queue": {"max_wating": 3}}, "queue.max_wating"),
    ({"server": {"port": "x"}}, "server.port"),
    ({"server": {"access_log": "yes"}}, "server.access_log"),
    ({"colour": "blue"}, "colour"),
    ({"backends": [{"name": "a"}]}, "backends[0].url"),
    ({"backends": [{"name": "a", "url": "http://h", "kind": "vllm"}]}, "backends[0].kind"),
    ({"backends": [{"name": "a", "url": "http://h", "modles": "*"}]}, "backends[0].modles"),
    ({"auth": {"anonymous_read": 1}}, "auth.anonymous_read"),
])
def test_bad_config_names_the_key(raw: Any, key: str) -> None:
    assert config_error(raw).startswith(key + ":")


def test_wrong_type_message_says_what_was_expected() -> None:
    message = config_error({"server": {"port": "x"}})
    assert "int" in message and "'x'" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(info.value) and "\n" not in str(info.value)


def test_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("server:\n  port: [1, 2\n  host: x\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "invalid YAML" in str(info.value) and "\n" not in str(info.value)


def test_shipped_config_parses() -> None:
    config = load_config(REPO / "config.yaml")
    assert config.server.port == 11435
    assert [(b.name, b.kind, b.url) for b in config.backends] == [
        ("local-ollama", "ollama", "http://127.0.0.1:11434"), ("local", "openai", ""), ("ocr", "openai", "")]
    assert config.backends[1].managed is not None  # the built-in local model (tests/test_localmodel.py)
    ocr = config.backends[2]  # the OCR server (tests/test_ocr_gateway.py reads text through it)
    assert ocr.role == "ocr" and ocr.managed is not None and ocr.managed.default_profile == "base"
    assert {name: p.args for name, p in ocr.managed.profiles.items()} == {
        "tiny": ["--det-limit", "512"], "small": ["--det-limit", "640"], "base": ["--det-limit", "1024"],
        "large": ["--det-limit", "1280"], "gundam": ["--det-limit", "0"]}
    assert config.base_dir == str(REPO)


def test_relative_paths_resolve_against_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    path = write_yaml(tmp_path / "etc" / "gw.yaml", {"auth": {"tokens_file": "secrets/tokens.json"}})
    config = load_config(path)
    assert config.resolve_path(config.auth.tokens_file) == str(tmp_path / "etc" / "secrets" / "tokens.json")
    assert config.resolve_path(config.database) == str(tmp_path / "etc" / "seadragon.db")
    assert config.resolve_path("/abs/tokens.json") == "/abs/tokens.json"


def test_seadragon_config_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_yaml(tmp_path / "env.yaml", {"server": {"port": 12345}})
    monkeypatch.setenv("SEADRAGON_CONFIG", str(path))
    assert resolve_config(None).server.port == 12345


# ------------------------------------------------------------------ the commands as processes


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "SEADRAGON_CONFIG"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "seadragon_gw", *args], capture_output=True, text=True,
                          timeout=30, env=full_env, cwd=cwd or REPO)


@pytest.fixture
def bad_config(tmp_path: Path) -> Path:
    return write_yaml(tmp_path / "bad.yaml", {"queue": {"max_wating": 3}})


def test_module_bad_config_exits_2_with_one_line(bad_config: Path) -> None:
    result = run_cli("--config", str(bad_config))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "queue.max_wating" in lines[0]
    assert "Traceback" not in result.stderr


def test_module_missing_config_exits_2(tmp_path: Path) -> None:
    result = run_cli("--config", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "absent.yaml" in result.stderr


def test_module_honours_seadragon_config_env(bad_config: Path, tmp_path: Path) -> None:
    result = run_cli(env={"SEADRAGON_CONFIG": str(bad_config)}, cwd=tmp_path)
    assert result.returncode == 2 and "queue.max_wating" in result.stderr


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """`seadragon-gw serve` against a backend that is not running."""
    (tmp_path / "tokens.json").write_text('{"alice": "tok-alice"}')
    config = write_yaml(tmp_path / "gw.yaml", {
        "server": {"log_level": "info"},
        "database": "gw.db",
        "backends": [{"name": "gone", "kind": "ollama", "url": f"http://127.0.0.1:{free_port()}",
                      "connect_timeout_s": 1}],
    })
    port = free_port()
    proc = subprocess.Popen([str(VENV_BIN / "seadragon-gw"), "serve", "--config", str(config), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def _answers(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=1)
    except httpx.TransportError:
        return None


def test_console_script_serves_with_backend_down(served: tuple[subprocess.Popen, str]) -> None:
    proc, url = served
    root = poll(lambda: proc.poll() is not None or _answers(url + "/"), timeout=20, what="gateway up")
    assert proc.poll() is None, proc.communicate(timeout=5)[1]
    assert root.status_code == 200 and root.text == "Ollama is running"
    health = httpx.get(url + "/health", headers={"Authorization": "Bearer tok-alice"}, timeout=5)
    report = health.json()
    assert health.status_code == 503 and report["status"] == "unhealthy"
    assert [(b["name"], b["state"]) for b in report["backends"]] == [("gone", "down")]
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=15)
    # uvicorn shuts down gracefully, then re-raises the captured SIGTERM (exit status -15)
    assert proc.returncode in (0, -signal.SIGTERM), stderr
    assert "Application shutdown complete" in stderr
    assert "Traceback" not in stderr
