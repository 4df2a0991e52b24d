"""Rate limits and daily quotas through a real gateway, on injected clocks.

The bucket refills on the monotonic clock and the days turn on the wall clock; both are the
tests' (`Clocks`), so every header and message is exact and nothing sleeps. The wall clock
starts at noon UTC, 43,200 s before midnight.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from seadragon_gw.auth.tokens_file import parse_tokens
from seadragon_gw.gateway import Clocks
from tests.conftest import ADMIN, FAST_AUTH, TOKENS, FakeClock, GatewayFactory, RunningGateway
from tests.support.checks import native_error, openai_error, poll
from tests.support.fakebackend import FakeBackend
from tests.support.identity import Admin, bearer, login

NOON = 1_799_971_200.0 + 43_200  # 12:00:00 UTC
TO_MIDNIGHT = 43_200
TIERS = {
    "pro": {"per_minute": 120, "burst": 5},
    "free": {"per_minute": 600, "burst": 100, "requests_per_day": 3},
    "metered": {"per_minute": 600, "burst": 100, "tokens_per_day": 5},
}
LIMITED_TOKENS: dict[str, Any] = {
    **TOKENS,
    "dave": {"token": "tok-dave", "tier": "pro"},
    "erin": {"token": "tok-erin", "tier": "free"},
    "fred": {"token": "tok-fred", "tier": "metered"},
}
ALICE = bearer("tok-alice")
CHAT = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}], "stream": False}
OPENAI_CHAT = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}
RATE_HEADERS = ("retry-after", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")


class Limited:
    """A gateway with rate limits on (default bucket: 60 a minute, burst 3) and its clocks."""

    def __init__(self, gateways: GatewayFactory, backend: FakeBackend, usage: dict[str, Any] | None = None,
                 **limits: Any) -> None:
        self.mono = FakeClock()
        self.wall = FakeClock(NOON)
        config = {"enabled": True, "default": {"per_minute": 60, "burst": 3}, "tiers": TIERS, **limits}
        self.gw = gateways.start([backend], clocks=Clocks(monotonic=self.mono, wall=self.wall),
                                 tokens=LIMITED_TOKENS, rate_limits=config, usage=usage or {})
        self.url = self.gw.url

    def chat(self, headers: dict[str, str], body: dict[str, Any] = CHAT, path: str = "/api/chat") -> httpx.Response:
        return httpx.post(self.url + path, json=body, headers=headers, timeout=10)

    def passes(self, headers: dict[str, str], n: int) -> None:
        for i in range(n):
            response = self.chat(headers)
            assert response.status_code == 200, (i, response.status_code, response.text)

    def me(self, headers: dict[str, str]) -> dict[str, Any]:
        response = httpx.get(self.url + "/auth/me", headers=headers)
        assert response.status_code == 200, response.text
        limits: dict[str, Any] = response.json()["limits"]
        return limits


@pytest.fixture
def limited(gateways: GatewayFactory, backend: FakeBackend) -> Limited:
    return Limited(gateways, backend)


def rate_headers(response: httpx.Response) -> tuple[str | None, ...]:
    return tuple(response.headers.get(h) for h in RATE_HEADERS)


# ------------------------------------------------------------------ the bucket


def test_burst_then_429_with_the_exact_headers(limited: Limited) -> None:
    limited.passes(ALICE, 3)
    refused = limited.chat(ALICE)
    assert native_error(refused, 429) == "rate limit exceeded: 60 requests per minute (burst 3) for token 'alice'"
    # Retry-After: one request back after 1 s; Reset: the bucket is full again after 3 s.
    assert rate_headers(refused) == ("1", "60", "0", "3")
    limited.passes(bearer("tok-bob"), 3)  # a bucket per client


def test_openai_routes_answer_429_in_their_error_shape(limited: Limited) -> None:
    limited.passes(ALICE, 3)
    refused = limited.chat(ALICE, OPENAI_CHAT, "/v1/chat/completions")
    message = openai_error(refused, 429)
    assert message == "rate limit exceeded: 60 requests per minute (burst 3) for token 'alice'"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert rate_headers(refused) == ("1", "60", "0", "3")


def test_the_bucket_refills_with_the_clock_up_to_its_burst(limited: Limited) -> None:
    limited.passes(ALICE, 3)
    assert limited.chat(ALICE).status_code == 429
    limited.mono.advance(1.0)  # 60 a minute: one request back per second
    limited.passes(ALICE, 1)
    half = limited.chat(ALICE)
    assert native_error(half, 429).startswith("rate limit exceeded")
    limited.mono.advance(0.5)
    assert rate_headers(limited.chat(ALICE)) == ("1", "60", "0", "3")  # 0.5 left: 0.5 s to one, 2.5 s to full
    limited.mono.advance(3600)  # an hour idle refills to the burst, never beyond
    limited.passes(ALICE, 3)
    assert limited.chat(ALICE).status_code == 429


def test_requests_refused_before_the_check_are_not_counted(limited: Limited) -> None:
    """Refused at auth (401) or routing (404 model): no bucket is made or drawn from."""
    for _ in range(5):
        assert limited.chat(bearer("tok-nobody")).status_code == 401
        assert limited.chat(ALICE, {**CHAT, "model": "no-such-model"}).status_code == 404
    assert limited.gw.on_loop(lambda g: g.limits.clients) == 0
    limited.passes(ALICE, 3)


def test_buckets_are_bounded_and_the_least_recent_goes(gateways: GatewayFactory, backend: FakeBackend) -> None:
    limited = Limited(gateways, backend, max_clients=2)
    limited.passes(ALICE, 3)
    limited.passes(bearer("tok-bob"), 1)
    limited.passes(bearer("tok-carol"), 1)  # alice's bucket (least recently used) is dropped
    assert limited.gw.on_loop(lambda g: g.limits.clients) == 2
    limited.passes(ALICE, 3)  # ...so she starts again with a full one


# ------------------------------------------------------------------ tiers and overrides


def test_a_tokens_json_tier_sets_the_bucket(limited: Limited) -> None:
    dave = bearer("tok-dave")
    limited.passes(dave, 5)
    refused = limited.chat(dave)
    assert native_error(refused, 429) == ("rate limit exceeded: 120 requests per minute (burst 5) "
                                          "for token 'dave' (tier 'pro')")
    assert rate_headers(refused) == ("1", "120", "0", "3")  # 0.5 s to one request, 2.5 s to full


def test_an_api_key_gets_its_tier_and_its_own_rate_overrides_it(limited: Limited) -> None:
    admin = Admin(limited.url)
    created = admin.create_key("ci", tier="pro", rate_limit_per_min=30)
    assert (created["tier"], created["rate_limit_per_min"]) == ("pro", 30)
    key = {"X-API-Key": created["key"]}
    limited.passes(key, 5)
    refused = limited.chat(key)
    assert native_error(refused, 429) == ("rate limit exceeded: 30 requests per minute (burst 5) "
                                          "for api key 'ci' (tier 'pro')")
    assert rate_headers(refused) == ("2", "30", "0", "10")
    plain = {"X-API-Key": admin.create_key("batch", rate_limit_per_min=6)["key"]}
    limited.passes(plain, 3)
    assert native_error(limited.chat(plain), 429) == ("rate limit exceeded: 6 requests per minute (burst 3) "
                                                      "for api key 'batch'")


def test_two_api_keys_named_alike_have_a_bucket_each(limited: Limited) -> None:
    """A bucket belongs to the key (its id), not to its name: names are not unique."""
    admin = Admin(limited.url)
    first, second = ({"X-API-Key": admin.create_key("ci")["key"]} for _ in range(2))
    limited.passes(first, 3)
    assert native_error(limited.chat(first), 429) == (
        "rate limit exceeded: 60 requests per minute (burst 3) for api key 'ci'")
    assert limited.me(second)["remaining"] == 3
    limited.passes(second, 3)
    assert limited.chat(second).status_code == 429
    assert limited.gw.on_loop(lambda g: g.limits.clients) == 2


def test_two_api_keys_named_alike_have_a_daily_quota_each(gateways: GatewayFactory, backend: FakeBackend) -> None:
    """The day's count is per key too, also when a restart reads it back from the usage log."""
    first = Limited(gateways, backend)
    admin = Admin(first.url)
    one, other = ({"X-API-Key": admin.create_key("batch", tier="free")["key"]} for _ in range(2))
    first.passes(one, 3)
    assert native_error(first.chat(one), 429) == ("daily quota exceeded: 3 requests per day for api key 'batch' "
                                                  "(tier 'free'); it resets at 00:00 UTC")
    first.passes(other, 1)
    assert (first.me(one)["requests_today"], first.me(other)["requests_today"]) == (3, 1)
    first.gw.server.stop()  # the usage log is written on the way out
    second = Limited(gateways, backend)
    assert (second.me(one)["requests_today"], second.me(other)["requests_today"]) == (3, 1)
    assert second.chat(one).status_code == 429
    second.passes(other, 2)
    assert native_error(second.chat(other), 429).startswith("daily quota exceeded: 3 requests per day")


def test_a_users_tier_applies_to_its_logins(limited: Limited, tmp_path: Path) -> None:
    admin = Admin(limited.url)
    token = admin.registration_token()
    body = {"username": "gina", "password": "correct horse battery", "registration_token": token}
    assert httpx.post(limited.url + "/auth/register", json=body).status_code == 201
    changed = admin.ok("PATCH", "/api/admin/users/gina", {"tier": "pro"})
    assert changed["tier"] == "pro"
    jwt = bearer(login(limited.url, "gina").json()["access_token"])
    assert limited.me(jwt)["tier"] == "pro"
    limited.passes(jwt, 5)
    assert native_error(limited.chat(jwt), 429) == ("rate limit exceeded: 120 requests per minute (burst 5) "
                                                    "for user 'gina' (tier 'pro')")
    assert admin.ok("PATCH", "/api/admin/users/gina", {"tier": None})["tier"] is None
    assert limited.me(jwt)["tier"] is None


@pytest.mark.parametrize(("path", "body"), [
    ("/api/admin/apikeys", {"name": "k", "tier": "gold"}),
    ("/api/admin/users/root", {"tier": "gold"}),
])
def test_an_unknown_tier_is_refused_naming_the_configured_ones(limited: Limited, path: str,
                                                               body: dict[str, Any]) -> None:
    method = "POST" if path.endswith("apikeys") else "PATCH"
    response = httpx.request(method, limited.url + path, json=body, headers=ADMIN)
    assert native_error(response, 400) == "tier: no tier 'gold' (configured: free, metered, pro)"


def test_tokens_json_refuses_an_unknown_tier() -> None:
    with pytest.raises(ValueError, match=r"entry 'x': unknown tier 'gold' \(rate_limits.tiers: free, pro\)"):
        parse_tokens({"x": {"token": "t", "tier": "gold"}}, 2, frozenset({"free", "pro"}))
    assert parse_tokens({"x": {"token": "t", "tier": "pro"}}, 2, {"pro"}).popitem()[1].tier == "pro"


def test_the_cli_gives_keys_and_users_tiers(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"database": "cli.db", "auth": {"tokens_file": None, **FAST_AUTH},
                                      "rate_limits": {"tiers": TIERS}}))
    binary = Path(sys.executable).with_name("seadragon-gw")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEADRAGON_")}

    def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(binary), *args, "--config", str(config)], check=False, capture_output=True,
                              text=True, timeout=60, env=env, input=stdin)

    made = cli("keys", "create", "ci", "--tier", "pro")
    assert made.returncode == 0, made.stderr
    assert "priority 2, tier pro." in made.stdout
    bad = cli("keys", "create", "ci", "--tier", "gold")
    assert (bad.returncode, bad.stderr.strip()) == (
        1, "seadragon-gw: tier: no tier 'gold' (configured: free, metered, pro)")
    admin = cli("admin", "create", "gina", "--password-stdin", "--tier", "free", stdin="correct horse battery\n")
    assert (admin.returncode, admin.stdout.strip()) == (0, "admin 'gina' created"), admin.stderr
    assert cli("users", "set-tier", "gina", "pro").stdout.strip() == "user 'gina' now has tier pro"
    assert cli("users", "set-tier", "gina", "default").stdout.strip() == "user 'gina' now has the default limits"
    missing = cli("users", "set-tier", "nobody", "pro")
    assert (missing.returncode, missing.stderr.strip()) == (1, "seadragon-gw: no user 'nobody'")


# ------------------------------------------------------------------ daily quotas


def test_a_daily_request_quota_resets_at_utc_midnight(limited: Limited) -> None:
    erin = bearer("tok-erin")
    limited.passes(erin, 3)
    refused = limited.chat(erin)
    assert native_error(refused, 429) == ("daily quota exceeded: 3 requests per day for token 'erin' "
                                          "(tier 'free'); it resets at 00:00 UTC")
    assert rate_headers(refused) == (str(TO_MIDNIGHT), "3", "0", str(TO_MIDNIGHT))
    limited.wall.advance(TO_MIDNIGHT - 1)
    assert limited.chat(erin).status_code == 429
    limited.wall.advance(1)
    limited.passes(erin, 3)
    assert limited.chat(erin).status_code == 429


def test_a_daily_token_quota_counts_prompt_and_completion_tokens(limited: Limited) -> None:
    fred = bearer("tok-fred")
    limited.passes(fred, 1)  # the fake backend counts 1 prompt token and 3 completion tokens
    poll(lambda: limited.me(fred)["tokens_today"] == 4, what="the first answer's tokens counted")
    limited.passes(fred, 1)  # 4 of 5 used: still under the quota
    poll(lambda: limited.me(fred)["tokens_today"] == 8, what="the second answer's tokens counted")
    refused = limited.chat(fred)
    assert native_error(refused, 429) == ("daily quota exceeded: 5 tokens per day for token 'fred' "
                                          "(tier 'metered'); it resets at 00:00 UTC")
    assert rate_headers(refused) == (str(TO_MIDNIGHT), "5", "0", str(TO_MIDNIGHT))
    openai = limited.chat(fred, OPENAI_CHAT, "/v1/chat/completions")
    assert openai_error(openai, 429).startswith("daily quota exceeded: 5 tokens per day")


def test_a_restart_keeps_the_days_counts_from_the_usage_log(gateways: GatewayFactory, backend: FakeBackend) -> None:
    first = Limited(gateways, backend)
    first.passes(bearer("tok-erin"), 2)
    first.gw.server.stop()  # the usage log is written on the way out
    second = Limited(gateways, backend)
    assert second.me(bearer("tok-erin"))["requests_today"] == 2
    second.passes(bearer("tok-erin"), 1)
    assert native_error(second.chat(bearer("tok-erin")), 429).startswith("daily quota exceeded: 3 requests")


# ------------------------------------------------------------------ async jobs


def submit_job(limited: Limited, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(limited.url + "/api/jobs", json={"route": "/api/chat", "body": CHAT}, headers=headers)


def job_status(limited: Limited, job_id: str) -> str:
    response = httpx.get(f"{limited.url}/api/jobs/{job_id}", headers=ADMIN)
    assert response.status_code == 200, response.text
    return str(response.json()["status"])


def test_a_job_pays_its_rate_limit_when_submitted_and_a_flood_is_refused(limited: Limited) -> None:
    """Checked before queueing, as any request: past the bucket a submission is 429 with the
    usual headers and nothing is queued; the accepted jobs' runs take nothing more."""
    accepted = [submit_job(limited, ALICE) for _ in range(3)]
    assert [a.status_code for a in accepted] == [202] * 3
    refused = submit_job(limited, ALICE)
    assert native_error(refused, 429) == "rate limit exceeded: 60 requests per minute (burst 3) for token 'alice'"
    assert rate_headers(refused) == ("1", "60", "0", "3")
    prefer = {**ALICE, "Prefer": "respond-async"}
    openai = limited.chat(prefer, OPENAI_CHAT, "/v1/chat/completions")
    assert openai_error(openai, 429) == "rate limit exceeded: 60 requests per minute (burst 3) for token 'alice'"
    assert rate_headers(openai) == ("1", "60", "0", "3")
    ids = [str(a.json()["request_id"]) for a in accepted]
    poll(lambda: all(job_status(limited, job_id) == "completed" for job_id in ids), what="the jobs to run")
    jobs = httpx.get(limited.url + "/api/jobs", params={"all": "1"}, headers=ADMIN).json()["jobs"]
    assert len(jobs) == 3  # the refused submissions left no job behind
    shown = limited.me(ALICE)
    assert (shown["remaining"], shown["requests_today"]) == (0, 3)  # three runs, nothing taken twice
    limited.mono.advance(1.0)
    assert submit_job(limited, ALICE).status_code == 202


def test_accepted_jobs_run_whatever_their_clients_bucket_holds_by_then(limited: Limited,
                                                                       backend: FakeBackend) -> None:
    backend.hold()
    ids = [submit_job(limited, ALICE).json()["request_id"] for _ in range(3)]
    backend.wait_waiting(1)
    assert native_error(limited.chat(ALICE), 429).startswith("rate limit exceeded")  # the jobs emptied it
    backend.release()
    # the clock stands still: a run that needed a token would wait forever
    poll(lambda: all(job_status(limited, job_id) == "completed" for job_id in ids), what="the jobs to run")


def test_a_refused_job_submission_is_in_the_usage_log_and_the_rate_limited_count(
        gateways: GatewayFactory, backend: FakeBackend) -> None:
    """Refused before its job is written, a submission is still a refused request: a usage row
    (an error, outcome rejected, not counted by the daily quota) and one rate-limited in /metrics."""
    limited = Limited(gateways, backend, usage={"flush_s": 0.05})
    ids = [str(submit_job(limited, ALICE).json()["request_id"]) for _ in range(3)]
    refused = submit_job(limited, ALICE)
    assert native_error(refused, 429) == "rate limit exceeded: 60 requests per minute (burst 3) for token 'alice'"
    poll(lambda: all(job_status(limited, job_id) == "completed" for job_id in ids), what="the jobs to run")

    def alice() -> tuple[int, int] | None:
        groups = httpx.get(limited.url + "/api/admin/usage", params={"group_by": "credential"},
                           headers=ADMIN).json()["groups"]
        return next(((g["requests"], g["errors"]) for g in groups if g["credential"] == "token:alice"), None)

    poll(lambda: alice() == (4, 1), what="three runs and one refusal in the usage log")
    metrics = httpx.get(limited.url + "/metrics", headers=ADMIN).text
    limited_total = [(s.labels, s.value) for f in text_string_to_metric_families(metrics) for s in f.samples
                     if s.name == "seadragon_rate_limited_total"]
    assert limited_total == [({"route": "/api/chat"}, 1.0)]
    assert limited.me(ALICE)["requests_today"] == 3  # the refusal took nothing from the day


def test_job_submissions_count_toward_the_daily_request_quota(limited: Limited) -> None:
    erin = bearer("tok-erin")
    assert [submit_job(limited, erin).status_code for _ in range(2)] == [202, 202]
    limited.passes(erin, 1)
    refused = submit_job(limited, erin)
    assert native_error(refused, 429) == ("daily quota exceeded: 3 requests per day for token 'erin' "
                                          "(tier 'free'); it resets at 00:00 UTC")
    assert rate_headers(refused) == (str(TO_MIDNIGHT), "3", "0", str(TO_MIDNIGHT))
    assert limited.me(erin)["requests_today"] == 3


# ------------------------------------------------------------------ what the caller sees


def test_auth_me_shows_the_limits_and_what_is_left(limited: Limited) -> None:
    limited.passes(ALICE, 2)
    poll(lambda: limited.me(ALICE)["tokens_today"] == 8, what="both answers' tokens counted")
    assert limited.me(ALICE) == {
        "enabled": True, "tier": None, "per_minute": 60, "burst": 3, "remaining": 1, "reset_s": 2,
        "requests_per_day": None, "requests_today": 2, "requests_remaining": None,
        "tokens_per_day": None, "tokens_today": 8, "tokens_remaining": None,
        "quota_resets_at": "2027-01-16T00:00:00+00:00",
    }
    erin = bearer("tok-erin")
    limited.passes(erin, 1)
    shown = limited.me(erin)
    assert (shown["tier"], shown["requests_per_day"], shown["requests_today"], shown["requests_remaining"]) == (
        "free", 3, 1, 2)


def test_limits_off_admit_everything_and_say_so(gateways: GatewayFactory, backend: FakeBackend) -> None:
    gw: RunningGateway = gateways.start([backend], rate_limits={"enabled": False, "default": {"burst": 1}})
    for _ in range(5):
        assert httpx.post(gw.url + "/api/chat", json=CHAT, headers=ALICE).status_code == 200
    assert httpx.get(gw.url + "/auth/me", headers=ALICE).json()["limits"] == {"enabled": False}
    assert gw.on_loop(lambda g: (g.limits in g.requests.limits, g.limits.clients)) == (False, 0)
