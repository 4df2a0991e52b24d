"""The JSON shapes of a job: the gateway's (seed 004's `request_id` and `status`) and seed
003's task (`task_id`, `status`, `result`, `metadata`). Shared by the API and the webhook."""

from __future__ import annotations

from typing import Any

import orjson

from ..store.jobs import JobStatus, StoredJob
from .request import STREAM_FORCED


def accepted_json(job_id: str, stream_forced: bool) -> dict[str, Any]:
    """The 202 answer to a submission."""
    answer: dict[str, Any] = {"request_id": job_id, "status": "queued"}
    if stream_forced:
        answer.update(stream=False, warning=STREAM_FORCED)
    return answer


def job_json(job: StoredJob, status: JobStatus | None = None, *, with_result: bool = True) -> dict[str, Any]:
    """`status` overrides the stored one (a job that took its slot a moment ago)."""
    out: dict[str, Any] = {
        "request_id": job.id, "status": status or job.status, "route": job.route, "model": job.model,
        "created_at": job.created_at, "started_at": job.started_at, "finished_at": job.finished_at,
        "error": job.error, "metadata": metadata(job),
    }
    if with_result:
        out["result"] = result_of(job)
    if job.stream_forced:
        out.update(stream=False, warning=STREAM_FORCED)
    if job.callback_url is not None:
        out.update(callback_url=job.callback_url, callback_state=job.callback_state)
    if job.profile is not None:
        out["profile"] = job.profile  # the managed profile it runs with (an OCR resolution)
    return out


def task_json(job: StoredJob, status: JobStatus | None = None) -> dict[str, Any]:
    """Seed 003's task: a generate job's result is its text."""
    result = result_of(job)
    if job.route == "/api/generate" and isinstance(result, dict) and (status or job.status) == "completed":
        result = {"generated_text": result.get("response", ""), "done_reason": result.get("done_reason")}
    return {"task_id": job.id, "status": status or job.status, "result": result, "error": job.error,
            "metadata": metadata(job)}


def metadata(job: StoredJob) -> dict[str, Any]:
    meta = job.meta
    return {
        "processing_time": meta.get("processing_time"),
        "worker_id": meta.get("backend"),
        "model_info": {"name": job.model, "route": job.route, "prompt_tokens": meta.get("prompt_tokens"),
                       "completion_tokens": meta.get("completion_tokens")},
        "queue_wait": meta.get("queue_wait"),
        "http_status": meta.get("http_status"),
        "attempts": job.attempts,
    }


def result_of(job: StoredJob) -> Any:
    """The answer's JSON (a backend's answer that is not JSON comes back as text)."""
    if job.result is None:
        return None
    try:
        return orjson.loads(job.result)
    except orjson.JSONDecodeError:
        return job.result.decode("utf-8", "replace")
