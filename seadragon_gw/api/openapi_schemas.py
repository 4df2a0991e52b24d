"""The JSON Schemas of the API's bodies, by name (`components.schemas` of `/openapi.json`).

Bodies the gateway writes itself (admin, auth, queue, jobs, health) are described field by
field, as their views write them. Bodies that pass through to a backend (Ollama's and
OpenAI's) name the fields the gateway reads or clients commonly send and allow the rest
(`additionalProperties`), since the backend decides what else it takes: a fuzzer reading this
spec must only expect what is true. Kept as plain data so the builder (`openapi.py`) only
refers to them by name.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

STRING: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}
ANY_OBJECT: Schema = {"type": "object", "additionalProperties": True}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def null(schema: Schema) -> Schema:
    """`schema` or null (OpenAPI 3.1: JSON Schema's type list)."""
    if "type" in schema and isinstance(schema["type"], str):
        return {**schema, "type": [schema["type"], "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def array(item: Schema) -> Schema:
    return {"type": "array", "items": item}


def obj(properties: dict[str, Schema], required: tuple[str, ...] = (), *, open_: bool = False,
        description: str | None = None) -> Schema:
    """An object; `open_` allows fields beyond `properties` (bodies a backend interprets)."""
    schema: Schema = {"type": "object", "properties": properties, "additionalProperties": open_}
    if required:
        schema["required"] = list(required)
    if description:
        schema["description"] = description
    return schema


def _timing() -> Schema:
    return obj({"avg": null(NUMBER), "p95": null(NUMBER), "max": null(NUMBER)})


def _usage_group() -> Schema:
    """One group of `/api/admin/usage`: the `group_by` field names its key (a credential
    group also has the API key's id: two keys may share a name; null for other credentials)."""
    return obj({"client": null(STRING), "model": null(STRING), "day": null(STRING), "credential": null(STRING),
                "key_id": null(INT), "requests": INT, "errors": INT, "tokens_in": INT, "tokens_out": INT,
                "queue_wait_s": _timing(), "upstream_s": _timing(),
                "time_to_first_byte_s": obj({"avg": null(NUMBER)})},
               ("requests", "errors", "tokens_in", "tokens_out", "queue_wait_s", "upstream_s"),
               description="group_by's field (client, model, day or credential) is the group's key; "
                           "key_id: the API key's id in a credential group (null for other credentials)")


def _waits() -> Schema:
    summary = obj({"count": INT, "p50": null(NUMBER), "p95": null(NUMBER), "mean": null(NUMBER)})
    return obj({"window_s": NUMBER, "high": summary, "normal": summary, "low": summary}, open_=True,
               description="Queue waits per priority class (high: priority 1 or better, normal: 2, low: worse)")


_MODEL_NAME = {"type": "string", "description": "A model name; `default_model` is used when it is left out"}
_STREAM = {"type": "boolean", "description": "Ollama's routes stream by default; send false for one answer"}


def _ollama() -> dict[str, Schema]:
    message = obj({"role": STRING, "content": STRING, "images": array(STRING), "tool_calls": array(ANY_OBJECT),
                   "thinking": STRING}, ("role",), open_=True)
    return {
        "OllamaMessage": message,
        "ChatRequest": obj({"model": _MODEL_NAME, "messages": array(ref("OllamaMessage")), "stream": _STREAM,
                            "format": {}, "options": ANY_OBJECT, "tools": array(ANY_OBJECT),
                            "keep_alive": {"type": ["string", "number"]}, "think": {}}, open_=True),
        "ChatResponse": obj({"model": STRING, "created_at": STRING, "message": ref("OllamaMessage"), "done": BOOL,
                             "done_reason": STRING, "total_duration": INT, "prompt_eval_count": INT,
                             "eval_count": INT}, open_=True,
                            description="One answer, or each NDJSON line of a stream (the last has done: true)"),
        "GenerateRequest": obj({"model": _MODEL_NAME, "prompt": STRING, "suffix": STRING, "images": array(STRING),
                                "system": STRING, "template": STRING, "raw": BOOL, "stream": _STREAM, "format": {},
                                "options": ANY_OBJECT, "keep_alive": {"type": ["string", "number"]},
                                "context": array(INT)}, open_=True),
        "GenerateResponse": obj({"model": STRING, "created_at": STRING, "response": STRING, "done": BOOL,
                                 "done_reason": STRING, "context": array(INT)}, open_=True),
        "EmbedRequest": obj({"model": _MODEL_NAME, "input": {"anyOf": [STRING, array(STRING)]}, "truncate": BOOL,
                             "options": ANY_OBJECT, "keep_alive": {"type": ["string", "number"]}}, open_=True),
        "EmbedResponse": obj({"model": STRING, "embeddings": array(array(NUMBER))}, open_=True),
        "EmbeddingsRequest": obj({"model": _MODEL_NAME, "prompt": STRING, "options": ANY_OBJECT}, open_=True),
        "EmbeddingsResponse": obj({"embedding": array(NUMBER)}, open_=True),
        "ShowRequest": obj({"model": STRING, "name": STRING, "verbose": BOOL}, open_=True),
        "ShowResponse": obj({"modelfile": STRING, "parameters": STRING, "template": STRING, "details": ANY_OBJECT,
                             "model_info": ANY_OBJECT, "capabilities": array(STRING)}, open_=True),
        "Tags": obj({"models": array(obj({"name": STRING, "model": STRING, "modified_at": STRING, "size": INT,
                                          "digest": STRING, "details": ANY_OBJECT}, open_=True))}, ("models",)),
        "RunningModels": obj({"models": array(ANY_OBJECT)}, ("models",)),
        "Version": obj({"version": STRING}, ("version",)),
        "ModelOperation": obj({"model": STRING, "name": STRING, "stream": BOOL, "insecure": BOOL}, open_=True,
                              description="pull, push, create or delete: the model it works on"),
        "CopyRequest": obj({"source": STRING, "destination": STRING}, ("source", "destination"), open_=True),
        "Status": obj({"status": STRING}, open_=True, description="Ollama's progress line or answer"),
    }


def _openai() -> dict[str, Schema]:
    message = obj({"role": STRING, "content": {"anyOf": [STRING, array(ANY_OBJECT), {"type": "null"}]},
                   "name": STRING, "tool_calls": array(ANY_OBJECT), "tool_call_id": STRING}, ("role",), open_=True)
    usage = obj({"prompt_tokens": INT, "completion_tokens": INT, "total_tokens": INT}, open_=True)
    return {
        "ChatCompletionMessage": message,
        "ChatCompletionRequest": obj({"model": _MODEL_NAME, "messages": array(ref("ChatCompletionMessage")),
                                      "stream": BOOL, "temperature": NUMBER, "top_p": NUMBER, "max_tokens": INT,
                                      "stop": {"anyOf": [STRING, array(STRING)]}, "tools": array(ANY_OBJECT),
                                      "response_format": ANY_OBJECT, "seed": INT}, open_=True),
        "ChatCompletion": obj({"id": STRING, "object": STRING, "created": INT, "model": STRING,
                               "choices": array(ANY_OBJECT), "usage": usage}, open_=True,
                              description="One answer, or (stream: true) SSE events of chat.completion.chunk"),
        "CompletionRequest": obj({"model": _MODEL_NAME, "prompt": {"anyOf": [STRING, array(STRING)]},
                                  "stream": BOOL, "max_tokens": INT, "temperature": NUMBER}, open_=True),
        "Completion": obj({"id": STRING, "object": STRING, "created": INT, "model": STRING,
                           "choices": array(ANY_OBJECT), "usage": usage}, open_=True),
        "OpenAIEmbeddingsRequest": obj({"model": _MODEL_NAME, "input": {"anyOf": [STRING, array(STRING)]},
                                        "encoding_format": STRING}, open_=True),
        "EmbeddingList": obj({"object": STRING, "data": array(obj({"object": STRING, "index": INT,
                                                                   "embedding": array(NUMBER)}, open_=True)),
                              "model": STRING, "usage": usage}, open_=True),
        "Model": obj({"id": STRING, "object": STRING, "created": INT, "owned_by": STRING}, ("id",), open_=True),
        "ModelList": obj({"object": STRING, "data": array(ref("Model"))}, ("data",), open_=True),
    }


def _auth() -> dict[str, Schema]:
    return {
        "RegisterRequest": obj({"username": STRING, "password": STRING, "registration_token": STRING},
                               ("username", "password", "registration_token")),
        "RegisteredUser": obj({"username": STRING, "is_admin": BOOL}, ("username", "is_admin")),
        "TokenRequest": obj({"grant_type": {"type": "string", "enum": ["password", "refresh_token"]},
                             "username": STRING, "password": STRING, "refresh_token": STRING}, open_=True,
                            description="OAuth2 password form (or JSON); grant_type refresh_token refreshes"),
        "RefreshRequest": obj({"refresh_token": STRING}, ("refresh_token",), open_=True),
        "LogoutRequest": obj({"refresh_token": STRING}, open_=True,
                             description="The refresh token to end; without it the Bearer access token's session"),
        "TokenPair": obj({"access_token": STRING, "refresh_token": STRING, "token_type": STRING,
                          "expires_in": INT}, ("access_token", "refresh_token", "token_type", "expires_in")),
        "LoggedOut": obj({"logged_out": BOOL}, ("logged_out",)),
        "Me": obj({"name": STRING, "kind": STRING, "priority": NUMBER, "is_admin": BOOL, "limits": ANY_OBJECT},
                  ("name", "kind", "priority", "is_admin", "limits")),
    }


def _admin() -> dict[str, Schema]:
    key_fields = {"id": INT, "name": STRING, "prefix": STRING, "priority": INT, "created_at": NUMBER,
                  "last_used": null(NUMBER), "is_active": BOOL, "expires_at": null(NUMBER),
                  "allowed_models": null(array(STRING)), "rate_limit_per_min": null(INT), "is_admin": BOOL,
                  "tier": null(STRING)}
    token_fields = {"id": INT, "prefix": STRING, "is_admin": BOOL, "created_at": NUMBER, "expires_at": null(NUMBER),
                    "used_at": null(NUMBER), "used_by": null(STRING), "note": null(STRING)}
    entry = obj({"id": INT, "ip": STRING, "priority": INT, "label": null(STRING), "created_at": NUMBER})
    user = obj({"id": INT, "username": STRING, "is_admin": BOOL, "is_active": BOOL, "created_at": NUMBER,
                "last_login": null(NUMBER), "tier": null(STRING)})
    return {
        "ApiKey": obj(key_fields, tuple(key_fields)),
        "ApiKeyCreated": obj({**key_fields, "key": {"type": "string", "description": "shown this once"}},
                             (*key_fields, "key")),
        "ApiKeyCreate": obj({"name": STRING, "priority": {"type": "integer", "minimum": 0, "maximum": 1000},
                             "expires_in_s": {"type": "number", "exclusiveMinimum": 0},
                             "allowed_models": null({"type": "array", "items": STRING, "minItems": 1}),
                             "rate_limit_per_min": null({"type": "integer", "minimum": 1}), "is_admin": BOOL,
                             "tier": null(STRING)}, ("name",)),
        "ApiKeyList": obj({"apikeys": array(ref("ApiKey"))}, ("apikeys",)),
        "WhitelistEntry": entry,
        "WhitelistCreate": obj({"ip": {"type": "string", "description": "an address or CIDR network"},
                                "priority": {"type": "integer", "minimum": 0, "maximum": 1000},
                                "label": null(STRING)}, ("ip",)),
        "WhitelistList": obj({"whitelist": array(ref("WhitelistEntry"))}, ("whitelist",)),
        "Removed": obj({"removed": STRING}, ("removed",)),
        "RegistrationToken": obj(token_fields, tuple(token_fields)),
        "RegistrationTokenCreated": obj({**token_fields, "token": {"type": "string", "description": "shown once"}},
                                        (*token_fields, "token")),
        "RegistrationTokenCreate": obj({"expires_in_s": {"type": "number", "exclusiveMinimum": 0}, "is_admin": BOOL,
                                        "note": null(STRING)}),
        "RegistrationTokenList": obj({"tokens": array(ref("RegistrationToken"))}, ("tokens",)),
        "User": user,
        "UserList": obj({"users": array(ref("User"))}, ("users",)),
        "UserChange": obj({"tier": null(STRING)}, ("tier",)),
    }


def _ops() -> dict[str, Schema]:
    load = obj({"model": STRING, "waiting": INT, "processing": INT, "max_concurrent": INT})
    waiting = obj({"request_id": null(STRING), "model": STRING, "position": INT, "waited_s": NUMBER,
                   "credential": ANY_OBJECT, "client_id": null(STRING), "priority": NUMBER,
                   "effective_priority": NUMBER}, ("request_id", "model", "position", "waited_s"),
                  description="Admins also see credential, client_id, priority and effective_priority")
    return {
        "QueueStatus": obj({"models": array(load), "waiting": array(waiting)}, ("models", "waiting")),
        "QueueClear": obj({"model": STRING}, open_=True, description="Leave model out to clear every queue"),
        "QueueCleared": obj({"cleared": INT, "model": null(STRING)}, ("cleared", "model")),
        "ModelQueue": obj({"model": STRING, "processing": INT, "waiting": INT, "max_concurrent": INT,
                           "max_waiting": INT, "total_processed": INT, "total_failed": INT, "total_timeout": INT,
                           "utilization": NUMBER, "wait_seconds": _waits()},
                          ("model", "processing", "waiting", "max_concurrent", "utilization")),
        "Stats": obj({"queue_length": INT, "active_requests": INT, "requests_per_minute": NUMBER,
                      "average_wait_time": NUMBER, "wait_seconds": _waits()},
                     ("queue_length", "active_requests", "requests_per_minute", "average_wait_time")),
        "Health": obj({"status": {"type": "string", "enum": ["healthy", "degraded", "unhealthy"]},
                       "timestamp": STRING, "version": STRING, "backends": array(ANY_OBJECT),
                       "queue": obj({"waiting": INT, "processing": INT}), "database": ANY_OBJECT},
                      ("status", "timestamp"), description="Backends, queue and database only with a credential "
                                                           "(or health.detail: public)"),
        "Usage": obj({"since": null(STRING), "until": null(STRING), "client": null(STRING), "model": null(STRING),
                      "group_by": null(STRING),
                      "groups": array(_usage_group())},
                     ("groups",)),
        "Crashes": obj({"crashes": array(obj({"timestamp": null(STRING), "error": STRING, "model": null(STRING),
                                              "request_id": null(STRING), "stack_trace": null(STRING),
                                              "kind": STRING, "backend": null(STRING), "route": null(STRING),
                                              "status": null(INT)}, open_=True))}, ("crashes",)),
        "MissingModels": obj({"missing_models": array(obj({"model_name": STRING, "client_id": null(STRING),
                                                           "timestamp": null(STRING), "count": INT,
                                                           "first_seen": null(STRING), "last_seen": null(STRING)}))},
                             ("missing_models",)),
    }


def _managed() -> dict[str, Schema]:
    managed = obj({"name": STRING, "status": STRING, "state": STRING, "port": INT, "pid": null(INT),
                   "models": array(STRING), "started_at": null(STRING), "uptime_seconds": null(NUMBER),
                   "profile": null(STRING), "resolution": null(STRING), "profiles": array(STRING),
                   "is_healthy": BOOL, "active_requests": INT, "waiting": INT, "restarts": INT,
                   "last_error": null(STRING)}, ("name", "status", "state"), open_=True)
    backend = obj({"name": STRING, "kind": STRING, "managed": BOOL, "role": null(STRING), "state": STRING,
                   "healthy": BOOL, "in_flight": INT, "max_concurrent": INT, "waiting": INT,
                   "models": array(STRING), "totals": ANY_OBJECT, "last_error": null(STRING)},
                  ("name", "kind", "state", "healthy"), open_=True)
    return {
        "ManagedModel": managed,
        "ManagedList": obj({"models": array(ref("ManagedModel"))}, ("models",)),
        "BackendList": obj({"backends": array(backend)}, ("backends",)),
        "ModelAction": obj({"status": STRING, "model": STRING, "profile": null(STRING), "resolution": null(STRING),
                            "graceful": BOOL, "message": STRING}, ("status",), open_=True),
        "ModelLogs": obj({"model": STRING, "path": STRING, "lines": array(STRING)}, ("model", "lines")),
    }


def _jobs() -> dict[str, Schema]:
    status = {"type": "string", "enum": ["queued", "processing", "completed", "failed", "cancelled"]}
    meta = obj({"processing_time": null(NUMBER), "worker_id": null(STRING), "model_info": ANY_OBJECT,
                "queue_wait": null(NUMBER), "http_status": null(INT), "attempts": INT}, open_=True)
    return {
        "JobSubmit": obj({"route": {"type": "string", "description": "an inference route, e.g. /api/chat"},
                          "body": ANY_OBJECT, "callback_url": STRING}, ("route",)),
        "JobAccepted": obj({"request_id": STRING, "status": status, "stream": BOOL, "warning": STRING},
                           ("request_id", "status")),
        "Job": obj({"request_id": STRING, "status": status, "route": STRING, "model": null(STRING),
                    "created_at": NUMBER, "started_at": null(NUMBER), "finished_at": null(NUMBER),
                    "error": null(STRING), "metadata": meta, "result": {}, "stream": BOOL, "warning": STRING,
                    "callback_url": STRING, "callback_state": null(STRING)}, ("request_id", "status", "route")),
        "JobList": obj({"jobs": array(ref("Job"))}, ("jobs",)),
        "TextGenerationRequest": obj({"model_name": STRING, "prompt": STRING, "max_length": {"type": "integer",
                                                                                            "minimum": 1},
                                      "temperature": {"type": "number", "minimum": 0}, "callback_url": STRING},
                                     ("model_name", "prompt")),
        "Task": obj({"task_id": STRING, "status": status, "result": {}, "error": null(STRING), "metadata": meta},
                    ("task_id", "status", "result")),
    }


def _errors() -> dict[str, Schema]:
    return {
        "Error": obj({"error": STRING}, ("error",), description="Native routes' error"),
        "OpenAIError": obj({"error": obj({"message": STRING, "type": STRING, "param": {}, "code": {}},
                                         ("message", "type"))}, ("error",),
                           description="OpenAI-style routes' error (/v1/..., /api/chat/completions, ...)"),
    }


def schemas() -> dict[str, Schema]:
    """Every named schema; a new one is added to its group above."""
    return {**_ollama(), **_openai(), **_auth(), **_admin(), **_ops(), **_managed(), **_jobs(), **_errors()}
