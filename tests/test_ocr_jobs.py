"""A job's profile (an OCR resolution, schema v5) is stored with it and read back, also by the
start-up load of queued jobs, so a job queued before a restart still runs at its resolution."""

from __future__ import annotations

from pathlib import Path

from seadragon_gw.store.bundle import Store
from seadragon_gw.store.jobs import NewJob, Owner


def new_job(job_id: str, profile: str | None) -> NewJob:
    return NewJob(id=job_id, route="/v1/chat/completions", model="rapidocr", body=b"{}", owner=Owner("token", "alice"),
                  principal={"kind": "token", "name": "alice"}, priority=2.0, created_at=1.0, stream_forced=False,
                  callback_url=None, profile=profile)


async def test_profile_is_stored_and_loaded_again(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "gw.db"))
    try:
        await store.jobs.insert(new_job("with", "tiny"))
        await store.jobs.insert(new_job("without", None))
        assert [(q.id, q.profile) for q in await store.jobs.queued()] == [("with", "tiny"), ("without", None)]
        stored = await store.jobs.get("with")
        assert stored is not None and stored.profile == "tiny"
    finally:
        await store.close()
