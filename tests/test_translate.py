"""Ollama's native API in front of an OpenAI-only backend (llama.cpp's server, vLLM): the
ollama client works unchanged, through translation both ways."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import ollama
import orjson
import pytest

from seadragon_gw.translate.ollama_over_openai import StreamTranslator
from tests.conftest import ADMIN, ALICE, GatewayFactory, RunningGateway
from tests.support.checks import poll
from tests.support.fakebackend import FakeBackend

MODEL = "qwen-coder:7b"
USER = [{"role": "user", "content": "Hello there"}]
ANSWER_PARTS = 3


@pytest.fixture(scope="module")
def _llamacpp() -> Iterator[FakeBackend]:
    with FakeBackend(models=[MODEL, "nomic-embed-text:latest"], kind="openai") as fb:
        yield fb


@pytest.fixture(scope="module")
def _gw(_llamacpp: FakeBackend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    factory = GatewayFactory(tmp_path_factory.mktemp("translate"))
    try:
        yield factory.start([_llamacpp])
    finally:
        factory.close()


@pytest.fixture
def llamacpp(_llamacpp: FakeBackend) -> FakeBackend:
    _llamacpp.reset()
    return _llamacpp


@pytest.fixture
def gw(_gw: RunningGateway, llamacpp: FakeBackend) -> RunningGateway:
    return _gw


def client(gw: RunningGateway) -> ollama.Client:
    return ollama.Client(host=gw.url, headers=ALICE)


def sent(backend: FakeBackend) -> dict:
    request = backend.inference_requests()[-1]
    assert request.json is not None
    return request.json


def test_chat_stream(gw: RunningGateway, llamacpp: FakeBackend) -> None:
    chunks = list(client(gw).chat(model=MODEL, messages=USER, stream=True))
    assert all(c.model == MODEL and c.created_at for c in chunks)
    assert [c.done for c in chunks] == [False] * ANSWER_PARTS + [True]
    assert "".join(c.message.content or "" for c in chunks[:-1]).strip()
    final = chunks[-1]
    assert final.done_reason == "stop" and final.eval_count == ANSWER_PARTS
    assert final.prompt_eval_count and final.prompt_eval_count > 0
    assert final.total_duration is not None and final.eval_duration is not None
    assert llamacpp.inference_requests()[-1].path == "/v1/chat/completions"
    body = sent(llamacpp)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"] == USER


def test_chat_non_stream(gw: RunningGateway, llamacpp: FakeBackend) -> None:
    reply = client(gw).chat(model=MODEL, messages=USER, stream=False)
    assert reply.model == MODEL and reply.done is True and reply.done_reason == "stop"
    assert reply.message.role == "assistant" and reply.message.content
    assert reply.eval_count == ANSWER_PARTS and reply.prompt_eval_count
    assert sent(llamacpp)["stream"] is False


def test_chat_stream_is_ndjson_with_ollama_fields(gw: RunningGateway) -> None:
    resp = httpx.post(gw.url + "/api/chat", headers=ALICE, json={"model": MODEL, "messages": USER})
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/x-ndjson"
    lines = [orjson.loads(line) for line in resp.content.splitlines()]
    assert set(lines[0]) == {"model", "created_at", "message", "done"}
    assert lines[0]["message"]["role"] == "assistant" and lines[0]["created_at"].endswith("Z")
    assert {"total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count",
            "eval_duration", "done_reason"} <= set(lines[-1])


def test_generate_stream_and_non_stream(gw: RunningGateway, llamacpp: FakeBackend) -> None:
    chunks = list(client(gw).generate(model=MODEL, prompt="Why is the sky blue?", system="Be brief", stream=True))
    assert "".join(c.response for c in chunks).strip() and chunks[-1].done is True
    assert chunks[-1].eval_count == ANSWER_PARTS
    assert sent(llamacpp)["messages"] == [{"role": "system", "content": "Be brief"},
                                          {"role": "user", "content": "Why is the sky blue?"}]
    reply = client(gw).generate(model=MODEL, prompt="Why?", stream=False)
    assert reply.response and reply.done is True and reply.eval_count == ANSWER_PARTS


def test_embed_and_embeddings(gw: RunningGateway, llamacpp: FakeBackend) -> None:
    embed = client(gw).embed(model="nomic-embed-text", input=["one", "two"])
    assert len(embed.embeddings) == 2 and all(len(v) > 0 for v in embed.embeddings)
    assert embed.model == "nomic-embed-text" and embed.prompt_eval_count
    request = llamacpp.inference_requests()[-1]
    assert request.path == "/v1/embeddings" and request.json == {"model": "nomic-embed-text:latest",
                                                                 "input": ["one", "two"]}
    single = client(gw).embeddings(model="nomic-embed-text", prompt="one")
    assert list(single.embedding) == list(embed.embeddings[0])
    assert sent(llamacpp)["input"] == "one"


def test_tool_call_arguments_are_an_object(gw: RunningGateway, llamacpp: FakeBackend) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    llamacpp.respond_status(200, {"choices": [{"index": 0, "finish_reason": "tool_calls",
                                               "message": {"role": "assistant", "content": "", "tool_calls": [call]}}],
                                  "usage": {"prompt_tokens": 5, "completion_tokens": 7}})
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    reply = client(gw).chat(model=MODEL, messages=USER, tools=tools, stream=False)
    assert reply.message.tool_calls is not None
    assert reply.message.tool_calls[0].function.name == "get_weather"
    assert reply.message.tool_calls[0].function.arguments == {"city": "Oslo"}
    assert reply.eval_count == 7 and reply.prompt_eval_count == 5
    assert sent(llamacpp)["tools"] == tools


def test_images_become_data_urls(gw: RunningGateway, llamacpp: FakeBackend) -> None:
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
    messages = [{"role": "user", "content": "What is this?", "images": [png]}]
    list(client(gw).chat(model=MODEL, messages=messages))
    content = sent(llamacpp)["messages"][0]["content"]
    assert content == [{"type": "text", "text": "What is this?"},
                       {"type": "image_url", "image_url": {"url": "data:image/png;base64," + png}}]


def test_options_and_format_are_mapped(gw: RunningGateway, llamacpp: FakeBackend) -> None:
    options = {"num_ctx": 8192, "temperature": 0.2, "top_p": 0.9, "top_k": 40, "stop": ["\n\n"], "seed": 7,
               "num_predict": 64}
    client(gw).chat(model=MODEL, messages=USER, options=options, format="json", stream=False)
    body = sent(llamacpp)
    assert "num_ctx" not in body and "options" not in body
    assert {k: body[k] for k in ("temperature", "top_p", "top_k", "stop", "seed", "max_tokens")} == {
        "temperature": 0.2, "top_p": 0.9, "top_k": 40, "stop": ["\n\n"], "seed": 7, "max_tokens": 64}
    assert body["response_format"] == {"type": "json_object"}
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    client(gw).chat(model=MODEL, messages=USER, format=schema, stream=False)
    assert sent(llamacpp)["response_format"] == {"type": "json_schema",
                                                 "json_schema": {"name": "response", "schema": schema}}


def test_backend_error_before_the_head(gw: RunningGateway, llamacpp: FakeBackend) -> None:
    llamacpp.respond_status(500, {"error": {"message": "out of memory", "type": "server_error"}})
    for stream in (False, True):
        with pytest.raises(ollama.ResponseError) as info:
            result = client(gw).chat(model=MODEL, messages=USER, stream=stream)
            if stream:
                list(result)
        assert info.value.status_code == 500 and info.value.error == "out of memory"


def test_stream_broken_mid_way_ends_with_an_error_line(gw: RunningGateway, llamacpp: FakeBackend) -> None:
    llamacpp.fail_mid_stream = True
    resp = httpx.post(gw.url + "/api/chat", headers=ALICE, json={"model": MODEL, "messages": USER})
    assert resp.status_code == 200
    lines = [orjson.loads(line) for line in resp.content.splitlines()]
    assert lines[0]["done"] is False and lines[0]["message"]["content"]
    assert "error" in lines[-1] and "stream broke" in lines[-1]["error"]
    assert not any(line.get("done") for line in lines)


def test_the_record_counts_the_translated_tokens(gateways: GatewayFactory, llamacpp: FakeBackend) -> None:
    """The writer scans the bytes it sends: the translated final line carries the counts."""
    gw = gateways.start([llamacpp], usage={"flush_s": 0.05})
    list(client(gw).chat(model=MODEL, messages=USER, stream=True))
    client(gw).generate(model=MODEL, prompt="Hello there", stream=False)
    prompt = client(gw).chat(model=MODEL, messages=USER, stream=False).prompt_eval_count
    assert prompt

    def by_model() -> list[tuple[str, int, int, int]]:
        answer = httpx.get(gw.url + "/api/admin/usage", params={"group_by": "model"}, headers=ADMIN)
        assert answer.status_code == 200, answer.text
        return [(g["model"], g["requests"], g["tokens_in"], g["tokens_out"]) for g in answer.json()["groups"]]

    poll(lambda: by_model() == [(MODEL, 3, 3 * prompt, 3 * ANSWER_PARTS)], what="3 translated requests logged")


# ------------------------------------------------------------------ the stream transform itself


def sse(event: dict) -> bytes:
    return b"data: " + orjson.dumps(event) + b"\n\n"


def test_streamed_tool_call_deltas_are_assembled_into_one_object() -> None:
    translator = StreamTranslator("/api/chat", "m", started=0.0)
    deltas = [{"index": 0, "id": "c1", "function": {"name": "get_weather", "arguments": ""}},
              {"index": 0, "function": {"arguments": '{"city": '}},
              {"index": 0, "function": {"arguments": '"Oslo"}'}}]
    events = b"".join(sse({"choices": [{"index": 0, "delta": {"tool_calls": [d]}}]}) for d in deltas)
    events += sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    events += sse({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4},
                   "timings": {"prompt_ms": 1.5, "predicted_ms": 20.0}}) + b"data: [DONE]\n\n"
    cut = len(events) // 2  # a line split across two chunks waits for its end
    lines = [orjson.loads(line) for line in (translator.feed(events[:cut]) + translator.feed(events[cut:]) +
                                             translator.finish()).splitlines()]
    assert [line["done"] for line in lines] == [False, True]
    assert lines[0]["message"]["tool_calls"] == [{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]
    final = lines[1]
    assert (final["done_reason"], final["prompt_eval_count"], final["eval_count"]) == ("stop", 9, 4)
    assert (final["prompt_eval_duration"], final["eval_duration"]) == (1_500_000, 20_000_000)


def test_generate_chunks_carry_response_and_length_is_kept() -> None:
    translator = StreamTranslator("/api/generate", "m", started=0.0)
    out = translator.feed(sse({"choices": [{"index": 0, "delta": {"content": "Hi"}}]}) +
                          sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}))
    lines = [orjson.loads(line) for line in (out + translator.finish()).splitlines()]
    assert lines[0]["response"] == "Hi" and "message" not in lines[0]
    assert lines[1]["done"] is True and lines[1]["done_reason"] == "length" and lines[1]["response"] == ""


def test_an_error_event_in_the_stream_becomes_an_error_line() -> None:
    translator = StreamTranslator("/api/chat", "m", started=0.0)
    out = translator.feed(sse({"error": {"message": "context full", "type": "server_error"}}))
    assert out == b'{"error":"context full"}\n' and translator.finish() == b""


def test_an_async_job_on_the_native_route_is_translated_too(gw: RunningGateway, llamacpp: FakeBackend) -> None:
    """Jobs forward through the same Exchange.open, so they get the same translation."""
    prefer = {**ALICE, "Prefer": "respond-async"}
    submitted = httpx.post(gw.url + "/api/chat", json={"model": MODEL, "messages": USER}, headers=prefer)
    assert submitted.status_code == 202, submitted.text
    job_url = f"{gw.url}/api/jobs/{submitted.json()['request_id']}"

    def ended() -> dict | None:
        job = httpx.get(job_url, headers=ALICE).json()
        return job if job["status"] in ("completed", "failed", "cancelled") else None

    job = poll(ended, what="the job to end")
    assert job["status"] == "completed", job
    assert job["result"]["message"]["content"] and job["result"]["done"] is True
    assert job["result"]["eval_count"] == ANSWER_PARTS
    assert llamacpp.inference_requests()[-1].path == "/v1/chat/completions"


def test_raw_generate_uses_plain_completions(gw: RunningGateway, llamacpp: FakeBackend) -> None:
    chunks = list(client(gw).generate(model=MODEL, prompt="<s>Once", raw=True, stream=True))
    assert "".join(c.response for c in chunks).strip() and chunks[-1].done is True
    request = llamacpp.inference_requests()[-1]
    assert request.path == "/v1/completions" and request.json is not None
    assert request.json["prompt"] == "<s>Once" and "messages" not in request.json
