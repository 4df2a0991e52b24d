"""Token counts read from the answer as it is relayed, without a second parse of the stream.

Ollama puts `prompt_eval_count` / `eval_count` in its final chunk (or its whole answer);
OpenAI-style servers put `"usage": {"prompt_tokens", "completion_tokens"}` in the answer or in
the last chunk of a stream. Only a chunk that contains one of those names is searched (a
substring test in C for every other chunk), and only with a regular expression, never a
JSON parse, so the relay's cost per chunk stays what it was.
"""

from __future__ import annotations

import re

from .record import RequestRecord

COUNT_MARKER, TOKENS_MARKER = b"eval_count", b"_tokens"
"""A chunk with neither holds no count: the per-token path tests them itself (two substring
tests in C) and calls `scan_usage` only for a chunk that has one, nearly always the last."""
_FIELDS = re.compile(rb'"(prompt_eval_count|eval_count|prompt_tokens|completion_tokens)"\s*:\s*(\d+)')
_PROMPT = frozenset({b"prompt_eval_count", b"prompt_tokens"})


def scan_usage(record: RequestRecord, data: bytes) -> None:
    """Take token counts from `data` (a relayed chunk or a whole body) into `record`.
    Later counts win: the last chunk of a stream carries the totals."""
    if COUNT_MARKER not in data and TOKENS_MARKER not in data:
        return
    for name, value in _FIELDS.findall(data):
        if name in _PROMPT:
            record.prompt_tokens = int(value)
        else:
            record.completion_tokens = int(value)
