"""redis-py clients (sync and per-event-loop async), the operations they run, and error translation.

`RedisConnection.run` drives a plan (`scripts.Plan`) on the sync client and `arun` on this event
loop's redis.asyncio client; both go through `_op_calls`, written once (see `calls`). Redis
errors are translated here: connection, timeout, auth and permission errors become
`StorageUnavailableError` naming the URL without its password; a key of the wrong type
`CorruptCheckpointError`. Transient errors are retried by redis-py's own ``Retry``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Iterator
from functools import partial
from typing import Any, TypeVar

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.cluster
import redis.exceptions
from redis.backoff import ExponentialBackoff
from redis.exceptions import NoScriptError, RedisClusterException, RedisError, ResponseError
from redis.retry import Retry

from persistency.errors import CorruptCheckpointError, PersistencyError, ProviderConfigError, StorageUnavailableError

from .calls import Calls, adrive, drive
from .options import Config
from .scripts import CONNECT, SCRIPTS, Call, Op, Plan, Script

__all__ = ["RedisConnection"]

T = TypeVar("T")


class RedisConnection:
    """The clients of one provider: created on first use, closed by `close`/`aclose`."""

    def __init__(self, config: Config) -> None:
        settings = config.settings
        self.url = config.display_url
        self.scrub = config.scrub
        self.cluster: bool | None = settings["cluster"]
        self._client_url = config.client_url
        self._options = config.redis_options
        self._retries: int = settings["retries"]
        self._backoff = ExponentialBackoff(cap=settings["retry_backoff_cap"], base=settings["retry_backoff_base"])
        self._lock = threading.Lock()
        self._sync: Any = None
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        try:  # refuse options redis-py does not know now, not at the first command
            redis.Redis.from_url(self._client_url, **self._options).connection_pool.make_connection()
        except (TypeError, ValueError, RedisError) as exc:
            raise ProviderConfigError(f"bad Redis options for {self.url!r}: {self.scrub(str(exc))}") from exc

    # -- clients ------------------------------------------------------------------------------------------
    def _kwargs(self, is_async: bool) -> dict[str, Any]:
        retry_cls = redis.asyncio.retry.Retry if is_async else Retry
        # retry_on_error too: redis-py 5 retries only the errors it names (6+ retries these by default).
        return {"retry_on_error": [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
                **self._options, "retry": retry_cls(self._backoff, self._retries)}

    def _connect(self, is_async: bool) -> Calls[Any]:
        """Make a client: ask the server whether it is a cluster (unless told), then load the scripts."""
        kwargs = self._kwargs(is_async)
        if self.cluster is None:
            probe: Any = (redis.asyncio.Redis if is_async else redis.Redis).from_url(self._client_url, **kwargs)
            try:
                info = yield partial(probe.info, "cluster")
            except ResponseError:  # INFO refused (managed services may restrict it): not a cluster
                info = {}
            finally:
                yield probe.aclose if is_async else probe.close
            self.cluster = str(dict(info).get("cluster_enabled", "0")) == "1"
        if self.cluster:
            cls: Any = redis.asyncio.cluster.RedisCluster if is_async else redis.cluster.RedisCluster
        else:
            cls = redis.asyncio.Redis if is_async else redis.Redis
        client = cls.from_url(self._client_url, **kwargs)
        if is_async and self.cluster:
            yield client.initialize
        for _sha, text in SCRIPTS.values():
            with contextlib.suppress(ResponseError):  # SCRIPT may be refused; EVAL still works
                yield partial(client.script_load, text)
        return client

    def sync_client(self) -> Any:
        """The sync client, created on first use."""
        if self._sync is None:
            with self._lock, self.translate(CONNECT):
                if self._sync is None:
                    self._sync = drive(self._connect(False))
        return self._sync

    async def async_client(self) -> Any:
        """This event loop's redis.asyncio client (async clients are per loop), created on first use."""
        loop = asyncio.get_running_loop()
        client: Any = self._async.get(loop)
        if client is None:
            with self.translate(CONNECT):
                client = await adrive(self._connect(True))
            existing: Any = self._async.setdefault(loop, client)
            if existing is not client:  # another task of this loop connected meanwhile: keep one
                with contextlib.suppress(Exception):
                    await client.aclose()
                client = existing
        return client

    def close(self) -> None:
        """Close the sync client's connections (idempotent); forget async ones (see `aclose`)."""
        with self._lock:
            client, self._sync = self._sync, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        self._async = weakref.WeakKeyDictionary()

    async def aclose(self) -> None:
        """Close this event loop's async client, and the sync one."""
        with contextlib.suppress(RuntimeError):
            client = self._async.pop(asyncio.get_running_loop(), None)
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
        self.close()

    # -- running plans ------------------------------------------------------------------------------------
    def run(self, plan: Plan[T]) -> T:
        """Drive ``plan`` on the sync client."""
        steps = _PlanSteps(plan)
        for op in steps:
            with self.translate(op):
                steps.reply = drive(self._op_calls(self.sync_client(), op))
        return steps.result  # type: ignore[no-any-return]

    async def arun(self, plan: Plan[T]) -> T:
        """Drive ``plan`` on this event loop's redis.asyncio client."""
        steps = _PlanSteps(plan)
        for op in steps:
            with self.translate(op):
                steps.reply = await adrive(self._op_calls(await self.async_client(), op))
        return steps.result  # type: ignore[no-any-return]

    def _op_calls(self, client: Any, op: Op) -> Calls[Any]:
        """One operation: a script (EVALSHA, then EVAL once), a command, or a pipeline of commands."""
        if op is CONNECT:
            return None
        if isinstance(op, Script) and op.wait:
            for command in ("EVALSHA", "EVAL"):
                pipe = self._script_and_wait(client, op, command)
                replies = yield partial(pipe.execute, raise_on_error=False)
                if not isinstance(replies[0], NoScriptError):
                    return _waited(replies)
        if isinstance(op, Script):
            sha, text = SCRIPTS[op.name]
            try:
                return (yield partial(client.execute_command, "EVALSHA", sha, len(op.keys), *op.keys, *op.args))
            except NoScriptError:
                return (yield partial(client.execute_command, "EVAL", text, len(op.keys), *op.keys, *op.args))
        if isinstance(op, Call):
            return (yield partial(client.execute_command, *op.args))
        pipe = client.pipeline(transaction=False)
        for call in op.calls:
            pipe.execute_command(*call.args)
        return (yield pipe.execute)

    def _script_and_wait(self, client: Any, op: Script, command: str) -> Any:
        """A pipeline of the script then ``WAIT``, on one connection to the key's primary.

        ``WAIT`` counts the replicas that have the writes of *its own* connection, so it must follow
        the script on the same one: a pipeline, addressed to the slot's node on a cluster.
        """
        assert op.wait is not None
        sha, text = SCRIPTS[op.name]
        target = {"target_nodes": client.get_node_from_key(op.keys[0])} if self.cluster else {}
        pipe = client.pipeline(transaction=False)
        pipe.execute_command(command, sha if command == "EVALSHA" else text, len(op.keys), *op.keys, *op.args)
        pipe.execute_command("WAIT", *op.wait, **target)
        return pipe

    @contextlib.contextmanager
    def translate(self, op: Op) -> Iterator[None]:
        """Turn redis-py errors into this library's, naming the URL (never the password)."""
        try:
            yield
        except PersistencyError:
            raise
        except ResponseError as exc:
            msg = self.scrub(str(exc))
            if "WRONGTYPE" in msg:
                keys = op.keys if isinstance(op, Script) else ()
                raise CorruptCheckpointError(
                    f"{self.url}: {op.what}: key(s) {', '.join(keys)} hold a value of the wrong type ({msg})"
                ) from exc
            raise StorageUnavailableError(
                f"Redis at {self.url} refused {op.what}: {type(exc).__name__}: {msg}"
            ) from exc
        except (RedisError, RedisClusterException, OSError) as exc:
            raise StorageUnavailableError(
                f"Redis at {self.url} unavailable while {op.what}: {type(exc).__name__}: {self.scrub(str(exc))}"
            ) from exc


class _PlanSteps:
    """Iterates a plan's operations; set `reply` after each one; `result` at the end."""

    def __init__(self, plan: Plan[Any]) -> None:
        self._plan = plan
        self.reply: Any = None
        self.result: Any = None

    def __iter__(self) -> Iterator[Op]:
        while True:
            try:
                op = self._plan.send(self.reply)
            except StopIteration as stop:
                self.result = stop.value
                return
            self.reply = None
            yield op


def _waited(replies: list[Any]) -> tuple[Any, int]:
    """(script reply, replicas that acknowledged) from a script-and-WAIT pipeline; errors raised."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies[0], int(replies[1])
