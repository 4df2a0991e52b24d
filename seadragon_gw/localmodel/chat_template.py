"""Gemma's chat turn format, as a Jinja template for llama-server's `--chat-template-file`.

The pinned GGUF is Gemma 3 270M's *base* model and carries no chat template of its own;
without one llama-server would format `/v1/chat/completions` requests in a generic way.
"""

from __future__ import annotations

GEMMA_CHAT_TEMPLATE = """\
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = '' -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- set role = 'model' if message['role'] == 'assistant' else 'user' -%}
    {{- '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') + (message['content'] | trim) + '<end_of_turn>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<start_of_turn>model\\n' -}}
{%- endif -%}
"""
