"""The local model installer's decisions that need no download or compile: where it installs,
what an empty cache reports, and the clear refusal on a machine without a C++ compiler."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from seadragon_gw import localmodel
from seadragon_gw.config import GatewayConfig, load_config, parse_config
from seadragon_gw.localmodel.launcher import ServeOptions, serve
from seadragon_gw.localmodel.prepare import Decision, prepare, uses_local_model
from seadragon_gw.localmodel.server import build_argv
from tests.support.fakebackend import FakeBackend
from tests.support.server import free_port


def test_cache_location_follows_seadragon_cache(tmp_path: Path) -> None:
    layout = localmodel.default_layout({"SEADRAGON_CACHE": str(tmp_path / "cache")})
    assert layout.venv == tmp_path / "cache" / "llama.cpp"
    assert layout.model == tmp_path / "cache" / "llama.cpp" / "model" / "gemma-3-270m-q4_k_m.gguf"
    assert localmodel.default_layout({}).venv == Path.home() / ".cache" / "seadragon_gw" / "llama.cpp"


def test_empty_cache_is_not_installed_and_server_argv_says_how_to_install(tmp_path: Path) -> None:
    layout = localmodel.Layout(tmp_path / "llama.cpp")
    status = localmodel.status(layout)
    assert not status.installed and status.server is None and not status.model and not status.template
    with pytest.raises(localmodel.NotInstalled, match="python -m seadragon_gw.localmodel install"):
        localmodel.server_argv(18080, layout=layout)


def test_no_compiler_and_no_way_to_get_one_is_impossible_before_anything_is_written(tmp_path: Path) -> None:
    layout = localmodel.Layout(tmp_path / "llama.cpp")
    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    said: list[str] = []
    with pytest.raises(localmodel.InstallImpossible) as info:
        localmodel.install(layout, progress=said.append, env={"PATH": str(empty_path)})
    assert "C++ compiler" in str(info.value) and "g++" in str(info.value)
    assert not layout.venv.exists()
    assert said == []


def test_server_command_line(tmp_path: Path) -> None:
    layout = localmodel.Layout(tmp_path / "llama.cpp")
    argv = build_argv(Path("/bin/llama-server"), layout, 18080, parallel=2, ctx=2048)
    assert argv[:5] == ["/bin/llama-server", "-m", str(layout.model), "--host", "127.0.0.1"]
    joined = " ".join(argv)
    assert "--port 18080 -c 2048 -np 2 -t 1 -n 256 -a gemma-3-270m" in joined
    assert f"--chat-template-file {layout.template}" in joined
    assert argv[-3:] == ["--embeddings", "--pooling", "mean"] and "--no-repack" in argv
    with pytest.raises(ValueError, match="ctx >= parallel"):
        build_argv(Path("/bin/llama-server"), layout, 18080, parallel=4, ctx=2)


# -- the shipped config's built-in local model ------------------------------------------------

REPO = Path(__file__).resolve().parent.parent


def test_shipped_config_has_the_managed_local_backend_next_to_ollama() -> None:
    config = load_config(REPO / "config.yaml")
    assert [b.name for b in config.backends] == ["local-ollama", "local", "ocr"]
    local = config.backends[1]
    assert (local.kind, local.models, local.max_concurrent) == ("openai", ["gemma3:270m"], 2)
    assert local.managed is not None and uses_local_model(local)
    assert local.managed.command[:5] == ["{python}", "-m", "seadragon_gw.localmodel", "serve", "--port"]
    assert local.managed.start == "on_demand" and local.managed.idle_ttl_s == 600
    assert local.managed.start_timeout_s >= 900  # a first start may compile llama.cpp (about 7 minutes)
    assert not uses_local_model(config.backends[0])


def _no_compiler_env(tmp_path: Path) -> dict[str, str]:
    empty = tmp_path / "bin"
    empty.mkdir(exist_ok=True)
    return {**os.environ, "PATH": str(empty), "SEADRAGON_CACHE": str(tmp_path / "cache")}


def test_launcher_without_a_compiler_exits_3_with_the_reason_before_writing_anything(tmp_path: Path) -> None:
    """What a managed start of the local backend reports on such a machine (its stderr tail
    is in the 502 the waiting request gets)."""
    done = subprocess.run([sys.executable, "-m", "seadragon_gw.localmodel", "serve", "--port", "18099"],
                          env=_no_compiler_env(tmp_path), capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 3
    assert "the local model is not installed yet: installing it before the first start" in done.stderr
    assert "cannot install here: building llama.cpp's server needs a C++ compiler" in done.stderr
    assert not (tmp_path / "cache" / "llama.cpp").exists()


@pytest.mark.skipif(not localmodel.is_installed(), reason="the local model is not installed on this machine")
def test_launcher_execs_llama_server_under_the_configured_alias() -> None:
    said: list[str] = []
    calls: list[tuple[str, list[str]]] = []
    serve(ServeOptions(18098, parallel=2, ctx=2048, threads=1), progress=said.append,
          execv=lambda path, argv: calls.append((path, argv)))
    [(path, argv)] = calls
    assert path == argv[0] and path.endswith("llama-server")
    assert " -c 2048 -np 2 -t 1 " in " ".join(argv) and argv[argv.index("-a") + 1] == "gemma3:270m"
    assert said == ["starting llama-server on 127.0.0.1:18098 as model 'gemma3:270m'"]


def _local_config(ollama_url: str) -> GatewayConfig:
    return parse_config({"backends": [
        {"name": "local-ollama", "url": ollama_url},
        {"name": "local", "kind": "openai", "models": ["gemma3:270m"], "managed": {
            "command": ["{python}", "-m", "seadragon_gw.localmodel", "serve", "--port", "{port}"]}}]})


def test_start_up_installs_nothing_where_ollama_answers_with_models(tmp_path: Path) -> None:
    layout = localmodel.Layout(tmp_path / "llama.cpp")
    said: list[str] = []
    with FakeBackend() as ollama:
        decision = prepare(_local_config(ollama.url), progress=said.append, layout=layout,
                           env=_no_compiler_env(tmp_path))
    assert decision == Decision(False, f"backend 'local-ollama' at {ollama.url} answers with 3 models: the local "
                                       f"model is installed only if a request asks for gemma3:270m")
    assert said == [] and not layout.venv.exists()


def test_start_up_installs_when_no_backend_answers_and_says_how_long_first(tmp_path: Path) -> None:
    layout = localmodel.Layout(tmp_path / "llama.cpp")
    said: list[str] = []
    decision = prepare(_local_config(f"http://127.0.0.1:{free_port()}"), progress=said.append, layout=layout,
                       env=_no_compiler_env(tmp_path))
    assert said == ["no other backend answers with a model: installing the built-in local model (gemma3:270m: "
                    "llama.cpp's server and Gemma 3 270M) before the gateway starts; compiling llama.cpp takes "
                    "about 7 minutes on 2 cores the first time, later starts find it in place"]
    assert not decision.installed_now
    assert decision.message.startswith("the local model cannot be installed here: building llama.cpp's server "
                                       "needs a C++ compiler")
