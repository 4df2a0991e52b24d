"""Pure auth building blocks: secrets, password hashing, JWTs, whitelist matching, the login
throttle and the bounded hasher."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from dataclasses import dataclass

import jwt
import pytest

from seadragon_gw.auth.errors import HashingBusy, LoginThrottled
from seadragon_gw.auth.hashing import BoundedHasher
from seadragon_gw.auth.jwt_tokens import JwtCodec, JwtError
from seadragon_gw.auth.passwords import PasswordHasher, validate_password
from seadragon_gw.auth.throttle import LoginThrottle
from seadragon_gw.auth.whitelist import WhitelistMatcher
from seadragon_gw.networks import parse_network
from seadragon_gw.secret_tokens import (
    display_prefix,
    generate_secret,
    hash_secret,
)

SECRET = "test-secret-" + "x" * 64


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def cheap_hasher(**overrides: int) -> PasswordHasher:
    params = {"time_cost": 1, "memory_cost": 8, "parallelism": 1, **overrides}
    return PasswordHasher(**params)


def b64(data: dict) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# --- secrets --------------------------------------------------------------------------


def test_generate_secret_is_prefixed_random_and_hashable() -> None:
    a, b = generate_secret("sdk-"), generate_secret("sdk-")
    assert a.startswith("sdk-") and a != b and len(a) > 40
    assert len(hash_secret(a)) == 64 and hash_secret(a) == hash_secret(a)
    assert display_prefix(a) == a[:12]


# --- passwords ------------------------------------------------------------------------


def test_password_hash_and_verify() -> None:
    hasher = cheap_hasher()
    hashed = hasher.hash("correct horse")
    assert "correct horse" not in hashed and hashed.startswith("$argon2id$")
    assert hasher.verify(hashed, "correct horse")
    assert not hasher.verify(hashed, "wrong horse")


@pytest.mark.parametrize("bad_hash", ["", "not-a-hash", "$argon2id$garbage", None])
def test_password_verify_never_raises_on_bad_input(bad_hash: object) -> None:
    assert cheap_hasher().verify(bad_hash, "whatever1") is False  # type: ignore[arg-type]


def test_password_needs_rehash_when_params_change() -> None:
    old = cheap_hasher().hash("correct horse")
    assert not cheap_hasher().needs_rehash(old)
    assert cheap_hasher(time_cost=2).needs_rehash(old)
    assert cheap_hasher().needs_rehash("garbage")


def test_validate_password() -> None:
    assert validate_password("12345678") is None
    assert "at least 8" in (validate_password("short") or "")
    assert "at most 1024" in (validate_password("x" * 1025) or "")


# --- JWT ------------------------------------------------------------------------------


def test_jwt_roundtrip_carries_standard_and_extra_claims() -> None:
    codec = JwtCodec(SECRET, clock=FakeClock())
    claims = codec.decode(codec.issue("alice", "access", {"admin": True}), "access")
    assert claims["sub"] == "alice" and claims["typ"] == "access" and claims["admin"] is True
    assert claims["exp"] - claims["iat"] == 3600 and claims["jti"]


def test_jwt_refresh_has_longer_ttl_and_unique_jti() -> None:
    codec = JwtCodec(SECRET, clock=FakeClock())
    a = codec.decode(codec.issue("alice", "refresh"), "refresh")
    b = codec.decode(codec.issue("alice", "refresh"), "refresh")
    assert a["exp"] - a["iat"] == 14 * 86400 and a["jti"] != b["jti"]


def test_jwt_extra_may_not_override_standard_claims() -> None:
    with pytest.raises(ValueError):
        JwtCodec(SECRET).issue("alice", "access", {"exp": 1})


def test_jwt_expired_via_clock() -> None:
    clock = FakeClock()
    codec = JwtCodec(SECRET, access_ttl_s=60, clock=clock)
    token = codec.issue("alice", "access")
    clock.now += 59
    codec.decode(token, "access")
    clock.now += 1
    with pytest.raises(JwtError, match="expired"):
        codec.decode(token, "access")


def test_jwt_wrong_signature() -> None:
    token = JwtCodec("another-secret-of-sufficient-length!!").issue("alice", "access")
    with pytest.raises(JwtError, match="signature"):
        JwtCodec(SECRET).decode(token, "access")


def test_jwt_alg_none_refused() -> None:
    now = int(FakeClock()())
    claims = {"sub": "admin", "iat": now, "exp": now + 60, "typ": "access"}
    token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."
    with pytest.raises(JwtError, match="algorithm"):
        JwtCodec(SECRET, clock=FakeClock()).decode(token, "access")


@pytest.mark.parametrize("alg", ["HS512", "RS256"])
def test_jwt_other_algorithms_refused(alg: str) -> None:
    now = int(FakeClock()())
    claims = {"sub": "admin", "iat": now, "exp": now + 60, "typ": "access"}
    if alg == "HS512":
        token = jwt.encode(claims, SECRET, algorithm="HS512")
    else:  # header claims RS256, "signed" with the shared secret (algorithm confusion)
        signing_input = f"{b64({'alg': 'RS256', 'typ': 'JWT'})}.{b64(claims)}"
        token = f"{signing_input}.{b64({'x': 1})}"
    with pytest.raises(JwtError, match="algorithm"):
        JwtCodec(SECRET, clock=FakeClock()).decode(token, "access")


def test_jwt_token_types_not_interchangeable() -> None:
    codec = JwtCodec(SECRET, clock=FakeClock())
    with pytest.raises(JwtError, match="access"):
        codec.decode(codec.issue("alice", "refresh"), "access")
    with pytest.raises(JwtError, match="refresh"):
        codec.decode(codec.issue("alice", "access"), "refresh")


@pytest.mark.parametrize("missing", ["exp", "iat", "sub", "typ"])
def test_jwt_missing_claims_refused(missing: str) -> None:
    now = int(FakeClock()())
    claims = {"sub": "alice", "iat": now, "exp": now + 60, "typ": "access"}
    del claims[missing]
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    with pytest.raises(JwtError, match=missing):
        JwtCodec(SECRET, clock=FakeClock()).decode(token, "access")


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "...."])
def test_jwt_malformed_refused(token: str) -> None:
    with pytest.raises(JwtError):
        JwtCodec(SECRET).decode(token, "access")


# --- whitelist ------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    network: str
    priority: int = 1
    label: str = ""


def matcher(*entries: Entry) -> WhitelistMatcher[Entry]:
    return WhitelistMatcher.from_entries(entries)


def test_whitelist_single_ipv4() -> None:
    m = matcher(Entry("127.0.0.1", label="lo"))
    assert m.match("127.0.0.1") == Entry("127.0.0.1", label="lo")
    assert m.match("127.0.0.2") is None


def test_whitelist_cidr() -> None:
    m = matcher(Entry("10.0.0.0/8"))
    assert m.match("10.200.3.4") is not None
    assert m.match("11.0.0.1") is None


def test_whitelist_most_specific_wins() -> None:
    broad, narrow, host = Entry("10.0.0.0/8", 3), Entry("10.1.0.0/16", 2), Entry("10.1.2.3", 1)
    m = matcher(broad, host, narrow)
    assert m.match("10.1.2.3") is host
    assert m.match("10.1.9.9") is narrow
    assert m.match("10.9.9.9") is broad


def test_whitelist_ipv6() -> None:
    m = matcher(Entry("2001:db8::/32", label="v6"), Entry("::1"))
    assert m.match("2001:db8:1::5") is not None
    assert m.match("::1") is not None
    assert m.match("2001:db9::1") is None
    assert m.match("127.0.0.1") is None


def test_whitelist_ipv4_mapped_ipv6_matches_ipv4_entry() -> None:
    m = matcher(Entry("127.0.0.0/8"))
    assert m.match("::ffff:127.0.0.2") is not None
    assert matcher(Entry("::ffff:10.0.0.1")).match("10.0.0.1") is not None


def test_whitelist_unparsable_client_never_matches() -> None:
    assert matcher(Entry("0.0.0.0/0")).match("testclient") is None


def test_parse_network_normalises() -> None:
    assert parse_network("127.0.0.1") == "127.0.0.1/32"
    assert parse_network(" 10.0.0.7/8 ") == "10.0.0.0/8"
    assert parse_network("::1") == "::1/128"
    assert parse_network("::ffff:10.0.0.0/104") == "10.0.0.0/8"


@pytest.mark.parametrize("garbage", ["", "   ", "localhost", "300.1.1.1", "10.0.0.0/33", "1.2.3"])
def test_parse_network_rejects_garbage(garbage: str) -> None:
    with pytest.raises(ValueError, match="IP|network"):
        parse_network(garbage)


# --- login throttle -------------------------------------------------------------------


def fail(throttle: LoginThrottle, user: str, address: str) -> None:
    with throttle.attempt(user, address):
        pass  # not marked a success: a failed login


def test_throttle_refuses_after_the_limit_per_username_and_per_address() -> None:
    clock = FakeClock(100.0)
    throttle = LoginThrottle(max_failures=3, window_s=60, clock=clock)
    for i in range(3):
        fail(throttle, "Ann", f"10.0.0.{i}")
    with pytest.raises(LoginThrottled, match="for this username") as refused:
        fail(throttle, "ann", "10.0.0.9")  # names ignore case
    assert refused.value.retry_after_s == 60
    for name in ("a", "b", "c"):
        fail(throttle, name, "10.9.9.9")
    with pytest.raises(LoginThrottled, match="for this address"):
        fail(throttle, "d", "10.9.9.9")
    clock.now += 30
    with pytest.raises(LoginThrottled) as later:
        fail(throttle, "ann", "10.0.0.8")
    assert later.value.retry_after_s == 30
    clock.now += 30.5
    fail(throttle, "ann", "10.0.0.8")  # the old failures left the window


def test_throttle_success_clears_the_username_and_void_leaves_no_trace() -> None:
    throttle = LoginThrottle(max_failures=2, window_s=60, clock=FakeClock())
    fail(throttle, "bo", "10.0.0.1")
    with throttle.attempt("bo", "10.0.0.2") as attempt:
        attempt.success()
    for _ in range(3):
        with throttle.attempt("bo", "10.0.0.3") as attempt:
            attempt.void()
    fail(throttle, "bo", "10.0.0.4")
    fail(throttle, "bo", "10.0.0.5")
    with pytest.raises(LoginThrottled):
        fail(throttle, "bo", "10.0.0.6")


def test_throttle_counts_attempts_in_flight() -> None:
    throttle = LoginThrottle(max_failures=2, window_s=60, clock=FakeClock())
    with throttle.attempt("cy", "10.0.0.1"), throttle.attempt("cy", "10.0.0.2"), \
            pytest.raises(LoginThrottled):
        fail(throttle, "cy", "10.0.0.3")


def test_throttle_tracks_a_bounded_number_of_keys() -> None:
    throttle = LoginThrottle(max_failures=1, window_s=60, clock=FakeClock(), max_keys=10)
    for i in range(1000):
        fail(throttle, f"user{i}", "10.0.0.1" if i == 0 else f"10.1.{i // 256}.{i % 256}")
    assert throttle.tracked_keys <= 10


# --- bounded hashing ------------------------------------------------------------------


async def test_bounded_hasher_refuses_beyond_its_slots_at_once() -> None:
    gate = threading.Event()

    class Slow(PasswordHasher):
        def hash(self, password: str) -> str:
            gate.wait(10)
            return super().hash(password)

    hasher = BoundedHasher(Slow(time_cost=1, memory_cost=8, parallelism=1), slots=2)
    running = [asyncio.ensure_future(hasher.hash("pw one")) for _ in range(2)]
    await asyncio.sleep(0)  # both take their slot
    with pytest.raises(HashingBusy) as busy:
        await hasher.hash("pw three")
    assert busy.value.retry_after_s == 1
    gate.set()
    hashes = await asyncio.gather(*running)
    assert all(await asyncio.gather(*(hasher.verify(h, "pw one") for h in hashes)))


def test_throttle_keys_are_bounded_in_length_too() -> None:
    throttle = LoginThrottle(max_failures=1, window_s=60, clock=FakeClock())
    fail(throttle, "n" * 50_000, "10.0.0.1")
    with pytest.raises(LoginThrottled, match="for this username"):
        fail(throttle, "n" * 64 + "different tail", "10.0.0.2")
