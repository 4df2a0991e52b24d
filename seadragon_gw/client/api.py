"""The SDK's surface, declared once for both clients.

`Operation(plan)` is a descriptor: on a sync client it is a method returning the plan's
result, on an async client a coroutine method; `StreamOperation` gives an iterator or an
async iterator. The classes below only list which operation has which name (`client.chat`,
`client.jobs.wait`, `client.admin.create_key`), so the sync and async clients cannot drift.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from . import operations as ops
from .operations import JSON, Context
from .protocol import Plan, StreamPlan

P = ParamSpec("P")
T = TypeVar("T")
D = TypeVar("D")


class SyncDriver(ABC):
    """Carries out plans with blocking I/O."""

    @abstractmethod
    def run(self, plan: Plan[T]) -> T: ...

    @abstractmethod
    def stream(self, plan: StreamPlan) -> Iterator[Any]: ...


class AsyncDriver(ABC):
    """Carries out plans on the running event loop."""

    @abstractmethod
    async def run(self, plan: Plan[T]) -> T: ...

    @abstractmethod
    def stream(self, plan: StreamPlan) -> AsyncIterator[Any]: ...


class Bound(Generic[D]):
    """Something operations are called on: a driver and the client's context."""

    def __init__(self, driver: D, ctx: Context) -> None:
        self._driver = driver
        self._ctx = ctx


class Operation(Generic[P, T]):
    def __init__(self, plan: Callable[Concatenate[Context, P], Plan[T]]) -> None:
        self.plan = plan

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Operation[P, T]: ...
    @overload
    def __get__(self, obj: Bound[SyncDriver], owner: type[Any]) -> Callable[P, T]: ...
    @overload
    def __get__(self, obj: Bound[AsyncDriver], owner: type[Any]) -> Callable[P, Awaitable[T]]: ...

    def __get__(self, obj: Bound[Any] | None, owner: type[Any]) -> Any:
        if obj is None:
            return self
        driver, ctx, plan = obj._driver, obj._ctx, self.plan
        if isinstance(driver, SyncDriver):
            def call(*args: P.args, **kwargs: P.kwargs) -> T:
                return driver.run(plan(ctx, *args, **kwargs))
            return functools.wraps(plan)(call)

        async def call_async(*args: P.args, **kwargs: P.kwargs) -> T:
            result: T = await driver.run(plan(ctx, *args, **kwargs))
            return result
        return functools.wraps(plan)(call_async)


class StreamOperation(Generic[P]):
    def __init__(self, plan: Callable[Concatenate[Context, P], StreamPlan]) -> None:
        self.plan = plan

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> StreamOperation[P]: ...
    @overload
    def __get__(self, obj: Bound[SyncDriver], owner: type[Any]) -> Callable[P, Iterator[JSON]]: ...
    @overload
    def __get__(self, obj: Bound[AsyncDriver], owner: type[Any]) -> Callable[P, AsyncIterator[JSON]]: ...

    def __get__(self, obj: Bound[Any] | None, owner: type[Any]) -> Any:
        if obj is None:
            return self
        driver, ctx, plan = obj._driver, obj._ctx, self.plan

        def call(*args: P.args, **kwargs: P.kwargs) -> Any:
            return driver.stream(plan(ctx, *args, **kwargs))
        return functools.wraps(plan)(call)


class Jobs(Bound[D]):
    """Async jobs: `submit` answers at once, `wait` polls until the job ended."""

    submit = Operation(ops.submit_job)
    get = Operation(ops.get_job)
    wait = Operation(ops.wait_job)
    cancel = Operation(ops.cancel_job)
    list = Operation(ops.list_jobs)


class Queue(Bound[D]):
    status = Operation(ops.queue_status)
    clear = Operation(ops.clear_queue)


class Admin(Bound[D]):
    """The admin API (an admin credential): keys, whitelist, tokens, users, managed models, logs."""

    create_key = Operation(ops.create_key)
    list_keys = Operation(ops.list_keys)
    revoke_key = Operation(ops.revoke_key)
    add_whitelist = Operation(ops.add_whitelist)
    list_whitelist = Operation(ops.list_whitelist)
    remove_whitelist = Operation(ops.remove_whitelist)
    create_registration_token = Operation(ops.create_registration_token)
    list_registration_tokens = Operation(ops.list_registration_tokens)
    list_users = Operation(ops.list_users)
    set_user_active = Operation(ops.set_user_active)
    set_user_tier = Operation(ops.set_user_tier)
    list_models = Operation(ops.list_models)
    list_backends = Operation(ops.list_backends)
    model_logs = Operation(ops.model_logs)
    start_model = Operation(ops.start_model)
    stop_model = Operation(ops.stop_model)
    switch_profile = Operation(ops.switch_profile)
    usage = Operation(ops.usage)
    crashes = Operation(ops.crashes)
    missing_models = Operation(ops.missing_models)
    stats = Operation(ops.stats)
    model_queue = Operation(ops.model_queue)
    clear_queue = Operation(ops.clear_queue)


class ClientApi(Bound[D]):
    """Inference, listings and the caller's own view; `jobs`, `queue` and `admin` below."""

    chat = Operation(ops.chat)
    chat_stream = StreamOperation(ops.chat_stream)
    generate = Operation(ops.generate)
    generate_stream = StreamOperation(ops.generate_stream)
    embed = Operation(ops.embed)
    chat_completion = Operation(ops.chat_completion)
    chat_completion_stream = StreamOperation(ops.chat_completion_stream)
    ocr = Operation(ops.ocr)
    models = Operation(ops.models)
    health = Operation(ops.health)
    me = Operation(ops.me)
    logout = Operation(ops.logout)
    request = Operation(ops.raw)

    @property
    def jobs(self) -> Jobs[D]:
        return Jobs(self._driver, self._ctx)

    @property
    def queue(self) -> Queue[D]:
        return Queue(self._driver, self._ctx)

    @property
    def admin(self) -> Admin[D]:
        return Admin(self._driver, self._ctx)
