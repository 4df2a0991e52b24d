"""Model name normalization.

Ollama treats `llama3` and `llama3:latest` as one model, and matches names case-insensitively.
The gateway routes on the normalized key but always echoes the name the client sent.
"""

from __future__ import annotations


def model_key(name: str) -> str:
    """Return the routing key: lower-cased, with `:latest` when the name has no tag.

    A tag is a `:` after the last `/`, so `host:5000/model` has no tag but `hf.co/u/m:Q4` has.
    """
    name = name.strip().lower()
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return name


QueueKey = tuple[str, str | None]
"""(model key, backend kind required or None): what a request needs from a backend, and so
which queue it waits in. Native routes need an Ollama backend; OpenAI routes take either."""
