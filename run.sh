#!/usr/bin/env bash
# ./run.sh            create .venv, install, start the gateway with config.yaml (and, when no Ollama
#                     answers, install the built-in local model first: about 7 minutes the first time)
# ./run.sh test       install the test extras, lint (ruff), type-check (mypy --strict), run the whole suite
# ./run.sh ARGS...    any other seadragon-gw command (keys, whitelist, admin, tokens, --port N)
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
say() { echo "[run.sh] $*" >&2; }
if [ ! -x .venv/bin/python ]; then
  if ! command -v "$PY" >/dev/null 2>&1; then
    say "$PY not found: install Python 3.11 or newer, or point PYTHON at one"; exit 1
  fi
  if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    say "$("$PY" --version 2>&1) is too old: seadragon_gw needs Python 3.11 or newer (set PYTHON=...)"; exit 1
  fi
  say "creating .venv (the gateway's own Python environment)"
  "$PY" -m venv .venv
fi
install() {  # $1 = pip target, $2 = stamp name, $3 = what; re-install only when pyproject.toml changed
  local stamp=".venv/.installed-$2"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    say "installing $3 (about 30 s the first time)"
    .venv/bin/python -m pip install -q --disable-pip-version-check -e "$1"
    touch "$stamp"
    say "installed"
  fi
}
case "${1:-serve}" in
  test)
    shift
    install ".[test]" test "seadragon_gw with its test extras"
    # tests/browser drive Debian's Chromium; without it (and not root) they are skipped, saying why
    if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      say "installing Chromium for the browser tests (Debian's package; once, about a minute)"
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null \
        || say "could not install Chromium: the browser tests will be skipped"
    fi
    say "lint: ruff check"
    .venv/bin/ruff check .
    say "types: mypy --strict seadragon_gw"
    .venv/bin/mypy
    say "running the tests"
    exec .venv/bin/python -m pytest "$@"
    ;;
  serve|-*)  # `./run.sh --port 8080` is `./run.sh serve --port 8080`
    if [ "${1:-}" = serve ]; then shift; fi
    install "." base "seadragon_gw and its dependencies"
    # The built-in local model (config.yaml's `local` backend): installed now when no other backend
    # answers with a model, so a first chat does not wait for llama.cpp to compile (see localmodel/prepare.py)
    .venv/bin/python -m seadragon_gw.localmodel prepare --config "${SEADRAGON_CONFIG:-config.yaml}"
    say "starting the gateway with ${SEADRAGON_CONFIG:-config.yaml}"
    exec .venv/bin/python -m seadragon_gw serve --config "${SEADRAGON_CONFIG:-config.yaml}" "$@"
    ;;
  *)
    install "." base "seadragon_gw and its dependencies"
    exec .venv/bin/seadragon-gw "$@"
    ;;
esac
