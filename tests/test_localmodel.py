"""The local model installer's decisions that need no download or compile: where it installs,
what an empty cache reports, and the clear refusal on a machine without a C++ compiler."""

from __future__ import annotations

from pathlib import Path

import pytest

from seadragon_gw import localmodel
from seadragon_gw.localmodel.server import build_argv


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
