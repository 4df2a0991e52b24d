#!/usr/bin/env bash
# ./run.sh        create .venv, install, start the gateway with config.yaml
# ./run.sh test   install the test extras and run the whole suite
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
install() {  # $1 = pip target; re-install only when pyproject.toml changed
  local stamp=".venv/.installed-$2"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -e "$1"
    touch "$stamp"
  fi
}
case "${1:-serve}" in
  test)
    shift
    install ".[test]" test
    exec .venv/bin/python -m pytest "$@"
    ;;
  serve)
    [ "$#" -gt 0 ] && shift
    install "." base
    exec .venv/bin/python -m seadragon_gw serve --config "${SEADRAGON_CONFIG:-config.yaml}" "$@"
    ;;
  *)
    install "." base
    exec .venv/bin/seadragon-gw "$@"
    ;;
esac
