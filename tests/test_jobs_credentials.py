"""A queued job runs only while the credential that submitted it stands: through a real gateway,
a job waiting inside the scheduler's queue (the admission window) and one waiting beyond it
(in the jobs index) both fail, never reaching the backend, once their API key is revoked,
their user deactivated or their tokens.json entry removed."""

from __future__ import annotations

import json
import os

import httpx
import pytest

from tests.conftest import ADMIN, TOKENS, GatewayFactory, RunningGateway
from tests.support.fakebackend import FakeBackend
from tests.support.gwclient import markers, wait_until
from tests.support.identity import Admin, bearer, new_user
from tests.test_jobs import finished, job, submit

REVOKED = "the credential that submitted this job was revoked"


class Held:
    """One slot, held by alice's job; then a job in the window and one in the index."""

    def __init__(self, gateways: GatewayFactory, backend: FakeBackend) -> None:
        self.backend = backend
        self.gw: RunningGateway = gateways.start([backend], jobs={"admit_window": 1})
        self.admin = Admin(self.gw.url)
        backend.hold()
        self.running = submit(self.gw, job("alice"))
        backend.wait_waiting(1)

    def queue_two(self, headers: dict[str, str]) -> list[str]:
        ids = [submit(self.gw, job("windowed"), headers), submit(self.gw, job("beyond"), headers)]
        wait_until(lambda: self.gw.waiting() == 1, "one job in the scheduler's queue")
        assert self.gw.on_loop(lambda g: g.jobs.runner.waiting()) == 1
        return ids

    def both_fail(self, ids: list[str], message: str) -> None:
        self.backend.release()
        assert finished(self.gw, self.running)["status"] == "completed"
        for job_id in ids:
            ended = finished(self.gw, job_id, ADMIN)
            assert (ended["status"], ended["error"]) == ("failed", message)
        assert markers(self.backend) == ["alice"] and self.gw.drained()


@pytest.fixture
def held(gateways: GatewayFactory, backend: FakeBackend) -> Held:
    return Held(gateways, backend)


def test_jobs_of_a_revoked_api_key_fail_and_never_run(held: Held) -> None:
    created = held.admin.create_key("ci")
    ids = held.queue_two({"X-API-Key": created["key"]})
    held.admin.ok("DELETE", f"/api/admin/apikeys/{created['id']}")
    held.both_fail(ids, f"{REVOKED} (api key 'ci' is revoked)")


@pytest.mark.parametrize(("reactivate", "reason"), [
    (False, "user 'gina' is deactivated"),
    (True, "user 'gina' was deactivated after submitting it"),  # its tokens were cut off, so is its work
])
def test_jobs_of_a_deactivated_user_fail_and_never_run(held: Held, reactivate: bool, reason: str) -> None:
    access = new_user(held.gw.url, held.admin, "gina")["access_token"]
    ids = held.queue_two(bearer(access))
    held.admin.ok("POST", "/api/admin/users/gina/deactivate")
    if reactivate:
        held.admin.ok("POST", "/api/admin/users/gina/activate")
    held.both_fail(ids, f"{REVOKED} ({reason})")


def test_jobs_of_a_token_removed_from_tokens_json_fail_and_never_run(held: Held) -> None:
    carol = {"Authorization": "Bearer tok-carol"}
    ids = held.queue_two(carol)
    path = held.gw.tokens_path
    before = path.stat().st_mtime_ns
    path.write_text(json.dumps({name: spec for name, spec in TOKENS.items() if name != "carol"}))
    os.utime(path, ns=(before + 10**9, before + 10**9))  # a new mtime even on a coarse clock
    wait_until(lambda: httpx.get(held.gw.url + "/auth/me", headers=carol).status_code == 401,
               "the tokens file to be read again")
    held.both_fail(ids, f"{REVOKED} (token 'carol' is no longer in the tokens file)")


def test_jobs_of_a_credential_that_stands_run(held: Held) -> None:
    """The same two places, nothing revoked: both run (the check refuses nothing else)."""
    ids = held.queue_two(bearer("tok-bob"))
    held.backend.release()
    for job_id in [held.running, *ids]:
        assert finished(held.gw, job_id, ADMIN)["status"] == "completed"
    assert markers(held.backend) == ["alice", "windowed", "beyond"]
