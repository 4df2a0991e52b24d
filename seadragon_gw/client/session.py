"""Who the client is: an API key, a bearer token, or a username and password (a JWT session).

A password session logs in at its first call (`POST /auth/token`, the OAuth2 password form)
and, when the gateway answers 401 because the access token expired, renews it once with the
refresh token (`POST /auth/refresh`; each refresh ends the old refresh token) or, if that is
refused, by logging in again. Written as plans, so both clients share it.

Calls that run at once (tasks of the async client, threads sharing the blocking one) log in
and renew once between them: the first takes the renewal lock, the others wait for it (a plan
cannot block, so they poll it) and then use its token. Ten calls each logging in would cost
the gateway ten password hashes and trip its login throttle (429); ten refreshes would each
end the refresh token the next one sends.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from dataclasses import dataclass, field

from .errors import AuthenticationError
from .protocol import Call, Reply, Sleep, Step, json_of, send

RENEW_POLL_S = 0.01  # how often a call waiting for another's login or renewal looks again


@dataclass
class Session:
    api_key: str | None = None
    token: str | None = None  # a tokens.json token, an API key or a JWT access token
    username: str | None = None
    password: str | None = None
    refresh_token: str | None = None
    # Held by the call that logs in or renews. A lock, not a flag: its non-blocking acquire is one
    # atomic step for threads too, where a flag's check and set are two.
    _renewing: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        given = [self.api_key is not None, self.token is not None, self.username is not None]
        if sum(given) > 1:
            raise ValueError("give one credential: username/password, api_key or token")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")

    @property
    def renewable(self) -> bool:
        return self.refresh_token is not None or self.password is not None

    def headers(self) -> dict[str, str]:
        if self.api_key is not None:
            return {"X-API-Key": self.api_key}
        if self.token is not None:
            return {"Authorization": f"Bearer {self.token}"}
        return {}

    def send(self, call: Call) -> Generator[Step, Reply | None, Reply]:
        """`call` with the credential; on a 401, renew the session once and send it again."""
        if not call.auth:
            return (yield from send(call))
        if self.username is not None and self.token is None:
            yield from self._renew_once(None)
        used = self.token
        reply = yield from send(call.with_headers(self.headers()))
        if reply.status != 401 or not self.renewable:
            return reply
        yield from self._renew_once(used)
        return (yield from send(call.with_headers(self.headers())))

    def _renew_once(self, used: str | None) -> Generator[Step, Reply | None, None]:
        """Replace the token `used` (None: there is none yet), unless another call already
        did, or is doing it now: then wait for that one."""
        while not self._renewing.acquire(blocking=False):
            yield Sleep(RENEW_POLL_S)
        try:
            if self.token == used:  # not renewed meanwhile
                yield from self.renew()  # with no refresh token, a login
        finally:
            self._renewing.release()

    def login(self) -> Generator[Step, Reply | None, None]:
        assert self.username is not None and self.password is not None
        reply = yield from send(Call("POST", "/auth/token", auth=False, data={
            "grant_type": "password", "username": self.username, "password": self.password}))
        self._take(json_of(reply))

    def renew(self) -> Generator[Step, Reply | None, None]:
        """A fresh access token: by the refresh token, else (or if it is refused) by logging in."""
        if self.refresh_token is not None:
            reply = yield from send(Call("POST", "/auth/refresh", json={"refresh_token": self.refresh_token},
                                         auth=False))
            if reply.ok or self.password is None:
                self._take(json_of(reply))
                return
        yield from self.login()

    def logout(self) -> Generator[Step, Reply | None, None]:
        """End the session on the gateway (its refresh token); a key or token has none."""
        if self.refresh_token is None:
            return
        reply = yield from send(Call("POST", "/auth/logout", json={"refresh_token": self.refresh_token},
                                     auth=False))
        json_of(reply)
        self.token = self.refresh_token = None

    def _take(self, pair: object) -> None:
        if not isinstance(pair, dict) or not isinstance(pair.get("access_token"), str):
            raise AuthenticationError(401, "the login answer has no access token")
        self.token = pair["access_token"]
        refresh = pair.get("refresh_token")
        self.refresh_token = refresh if isinstance(refresh, str) else None
