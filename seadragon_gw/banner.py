"""What the console shows the operator: where the gateway listens and what to paste first.

Printed, never logged: logs are kept and shipped, and some of these lines carry a secret (a
first user's token, a bootstrap registration token). Text only: callers pass the real values,
so every line can be copied and run as it stands (no `HOST:PORT` placeholders).
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}
FALLBACK_MODEL = "llama3.2"


def base_url(host: str, port: int) -> str:
    """The URL a client on this machine uses; a wildcard listen address is reached on loopback."""
    shown = _WILDCARDS.get(host, host)
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


def listening(url: str, host: str) -> str:
    where = " (all interfaces: other machines use this machine's address)" if host in _WILDCARDS else ""
    return f"\n  seadragon_gw is listening on {url}{where}\n"


def first_chat(url: str, token: str, model: str | None, kind: str) -> str:
    """A chat request that works as pasted: real URL, real token, a model a backend listed."""
    messages = [{"role": "user", "content": "Hello"}]
    auth = shlex.quote(f"Authorization: Bearer {token}")
    if kind == "openai":
        body = json.dumps({"model": model or FALLBACK_MODEL, "messages": messages})
        return (f"curl -s {url}/v1/chat/completions -H {auth} -H 'Content-Type: application/json' "
                f"-d {shlex.quote(body)}")
    body = json.dumps({"model": model or FALLBACK_MODEL, "messages": messages, "stream": False})
    return f"curl -s {url}/api/chat -H {auth} -d {shlex.quote(body)}"


def first_user(tokens_path: str, user: str, url: str, token: str, model: str | None, kind: str) -> str:
    """Shown once, on the start that created the tokens file."""
    hint = "" if model else ("\n  (no backend has listed a model yet: start it, then use a model it has, "
                             "e.g. from `ollama list`)")
    return (f"  Created {tokens_path} with a token for '{user}' (readable only by you; add more users "
            f"there, edits apply without a restart).\n"
            f"  Try a first chat (copy this line):\n\n"
            f"    {first_chat(url, token, model, kind)}\n{hint}\n")


def bootstrap_admin(url: str, token: str, cli: str) -> str:
    """The one-time admin registration, for a gateway whose database has no admin yet."""
    body = json.dumps({"username": "admin", "password": "choose-a-long-password",
                       "registration_token": token})
    return (f"\n  No admin exists yet. Create one (the token is valid 24 h, for one use):\n"
            f"    curl -s -X POST {url}/auth/register -H 'Content-Type: application/json' "
            f"-d {shlex.quote(body)}\n"
            f"  or run: {cli} admin create USERNAME\n")


def port_in_use(host: str, port: int, config_path: str) -> str:
    return (f"seadragon-gw: port {port} on {host} is already in use: pick another with server.port in "
            f"{config_path} or --port")


def cannot_listen(host: str, port: int, reason: str, config_path: str) -> str:
    return (f"seadragon-gw: cannot listen on {host}:{port} ({reason}): check server.host/server.port in "
            f"{config_path}, or pass --host/--port")


def cli_command() -> str:
    """How to run this CLI from here: `.venv/bin/seadragon-gw` in a clone (it is not on PATH)."""
    script = Path(sys.executable).with_name("seadragon-gw")
    return shown_path(str(script)) if script.exists() else "seadragon-gw"


def shown_path(path: str) -> str:
    """Relative to the current directory when below it: shorter to read, and it pastes as is."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path
