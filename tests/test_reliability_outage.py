"""Storage outages in the middle of a real chat: Redis and S3 servers stopped, unreachable, or blipping.

Each test uses a server of its own (a dedicated redis-server, a dedicated moto process) or a
loopback TCP proxy of its own in front of one, never the shared session servers' availability:

- the server stops (redis-server killed, restarted on the same port from its append-only file) or
  becomes unreachable (the proxy closes its listener and every connection: connection refused),
  in the middle of a run;
- with the default ``on_error="raise"`` the chat stops with `StorageUnavailableError` (a
  `PersistencyError`) naming the backend, without a client traceback or the password;
- with ``on_error="continue"`` the chat goes on and ``lost_checkpoints`` names what was lost;
- either way, once the server is back, ``resume_latest`` continues from the last stored checkpoint
  and the run ends exactly as an uninterrupted one;
- a transient blip (every connection dropped; a reply lost after the server acted) is absorbed by
  the client's own bounded retry with backoff: nothing lost, nothing raised.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from persistency import (
    CheckpointConflictError,
    Persistency,
    PersistencyError,
    PersistencyStorageProvider,
    StorageUnavailableError,
    provider_from_url,
)
from tests.campaign import moto_process
from tests.helpers_ag2 import Faults, build_chat, histories
from tests.servers.redis_server import RedisProcess, start_redis

SECRET = "pw-9d1c7e3a-outage-secret"


# -- a loopback TCP proxy that can be made unreachable, drop connections, or lose one reply -------------
class Proxy:
    """Forwards 127.0.0.1:``port`` to an upstream port. `stop` refuses connections and resets live
    ones (the server is unreachable); `start` listens again on the same port; `blip` resets live
    connections only; `lose_reply_to` forwards the next request containing a marker and then drops
    the connection instead of returning the reply (the server acted, the client never heard)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._marker: bytes | None = None
        self._reply_prefix = b""
        self.replies_lost = 0
        self.start()

    def start(self) -> None:
        """Listen (again, on the same port once it has one)."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for attempt in range(100):
            try:
                listener.bind(("127.0.0.1", self.port))
                break
            except OSError:
                if attempt == 99:
                    raise
                time.sleep(0.1)
        listener.listen(64)
        self.port = int(listener.getsockname()[1])
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was closed: stop()
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._conns.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        swallow = False
        try:
            while True:
                ready, _, _ = select.select([client, upstream], [], [], 0.5)
                for sock in ready:
                    data = sock.recv(1 << 16)
                    if not data:
                        return
                    if sock is client:
                        marker = self._marker
                        if marker is not None and marker in data:
                            self._marker, swallow = None, True
                        upstream.sendall(data)
                    elif swallow and data.startswith(self._reply_prefix):
                        self.replies_lost += 1
                        return  # the reply is lost with the connection
                    else:
                        client.sendall(data)
        except (OSError, ValueError):  # reset by blip()/stop() from another thread (ValueError: fd -1)
            return
        finally:
            with self._lock:
                self._conns.difference_update((client, upstream))
            _reset(client)
            _reset(upstream)

    def blip(self) -> None:
        """Reset every live connection; keep listening."""
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for sock in conns:
            _reset(sock)

    def stop(self) -> None:
        """Refuse new connections and reset live ones: the server is unreachable."""
        if self._listener is not None:
            _reset(self._listener)  # shutdown wakes the accept() of the other thread; close alone would not
            self._listener = None
        self.blip()

    def lose_reply_to(self, marker: bytes, reply_prefix: bytes = b"") -> None:
        """Forward the next request containing ``marker``, then drop its connection instead of the reply
        (the first reply starting with ``reply_prefix``: an HTTP "100 Continue" is not the reply)."""
        self._reply_prefix = reply_prefix
        self._marker = marker


def _reset(sock: socket.socket) -> None:
    """Abort ``sock`` at once, also for a thread blocked on it (close alone would not wake it)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


# -- servers of our own ----------------------------------------------------------------------------------
@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server for this test only: a password, and an append-only file so a restart keeps data."""
    server = start_redis(tmp_path, "--appendonly", "yes", "--appendfsync", "always")
    with redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=5) as admin:
        admin.config_set("requirepass", SECRET)  # after start: the helper pings without a password
    try:
        yield server
    finally:
        server.stop()


def restart(server: RedisProcess) -> RedisProcess:
    """Start the stopped ``server`` again: same port, same directory, same data."""
    args = [*server.proc.args, "--requirepass", SECRET]  # type: ignore[misc]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=server.workdir)
    again = RedisProcess(server.port, proc, server.workdir)
    deadline = time.monotonic() + 30
    while True:
        try:
            with redis.Redis(host="127.0.0.1", port=server.port, password=SECRET, socket_timeout=1) as r:
                if r.ping():
                    return again
        except (redis.ConnectionError, redis.BusyLoadingError):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="module")
def own_s3() -> Iterator[str]:
    """A moto S3 server in a process of its own for this module; yields its endpoint."""
    with moto_process(set_env=False) as endpoint:
        yield endpoint


def _redis_url(port: int) -> str:
    return f"redis://:{SECRET}@127.0.0.1:{port}/0?key_prefix=o-{uuid.uuid4().hex[:8]}"


def _s3_url(endpoint_port: int) -> str:
    from tests.campaign import S3_BUCKET

    return (f"s3://{S3_BUCKET}/o-{uuid.uuid4().hex[:8]}?endpoint_url=http://127.0.0.1:{endpoint_port}"
            "&region=us-east-1&connect_timeout=1&read_timeout=5&max_attempts=3")


def _s3_provider(url: str) -> PersistencyStorageProvider:
    return provider_from_url(url, key="testing", secret="testing")


# -- the chat ----------------------------------------------------------------------------------------------
_REFERENCE: list[Any] = []


def reference() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Transcript and histories of an uninterrupted 9-step run."""
    if not _REFERENCE:
        chat = build_chat()
        Persistency(provider_from_url(f"memory://ref-{uuid.uuid4().hex}"), "ref").attach(chat.manager)
        chat.user.initiate_chat(chat.manager, message="hello", silent=True)
        _REFERENCE.extend([chat.transcript(), histories(chat)])
    return _REFERENCE[0], _REFERENCE[1]


class At(Faults):
    """Runs ``actions[step]`` as the speaker of ``step`` starts (after step - 1 was stored)."""

    def __init__(self, **actions: Any) -> None:
        super().__init__()
        self.actions = {int(k[1:]): v for k, v in actions.items()}

    def check(self, step: int) -> None:
        if step in self.actions:
            self.actions.pop(step)()
        super().check(step)


def _chat(provider: PersistencyStorageProvider, faults: Faults, **feature: Any) -> tuple[Any, Persistency]:
    chat = build_chat(faults=faults)
    return chat, Persistency(provider, "s", **feature).attach(chat.manager)


def _assert_clean(exc: BaseException, *needles: str) -> None:
    text = f"{exc} {exc!r}"
    assert isinstance(exc, PersistencyError)
    assert SECRET not in text and "Traceback" not in text, text
    for needle in needles:
        assert needle in text, text


def _resume_and_check(provider: PersistencyStorageProvider, last_stored: int) -> None:
    """The server is back: resume_latest continues after ``last_stored`` and ends like an uninterrupted run."""
    latest = provider.get_latest_checkpoint("s")
    assert latest is not None and latest.step == last_stored
    faults = Faults()
    chat, _ = _chat(provider, faults)
    chat.user.initiate_chat(chat.manager, message="hello", silent=True)
    transcript, hist = reference()
    assert chat.transcript() == transcript and histories(chat) == hist
    assert faults.calls == list(range(last_stored + 1, 10))  # nothing stored was produced again
    end = provider.get_latest_checkpoint("s")
    assert end is not None and end.run_complete and end.messages == transcript
    for info in provider.list_checkpoints("s"):  # every checkpoint loads and is a prefix
        assert provider.get_checkpoint("s", info.checkpoint_id).messages == transcript[: info.step]


# -- Redis -------------------------------------------------------------------------------------------------
def test_redis_server_stopped_mid_run_stops_the_chat_then_resume_after_restart(own_redis: RedisProcess) -> None:
    url = _redis_url(own_redis.port)
    chat, _ = _chat(provider_from_url(url, retry_backoff_cap=0.05), At(s5=own_redis.stop))  # 1-4 stored
    with pytest.raises(StorageUnavailableError) as info:
        chat.user.initiate_chat(chat.manager, message="hello", silent=True)
    _assert_clean(info.value, "edis", f"127.0.0.1:{own_redis.port}")
    server = restart(own_redis)
    try:
        _resume_and_check(provider_from_url(url), 4)
    finally:
        server.stop()


@pytest.mark.parametrize("backend", ["redis", "s3"])
def test_unreachable_mid_run_stops_the_chat_then_resume_continues(
    backend: str, own_redis: RedisProcess, own_s3: str
) -> None:
    upstream = own_redis.port if backend == "redis" else int(own_s3.rsplit(":", 1)[1])
    proxy = Proxy(upstream)
    try:
        url = _redis_url(proxy.port) if backend == "redis" else _s3_url(proxy.port)
        chat, _ = _chat(_provider(url), At(s5=proxy.stop))
        t0 = time.monotonic()
        with pytest.raises(StorageUnavailableError) as info:
            chat.user.initiate_chat(chat.manager, message="hello", silent=True)
        assert time.monotonic() - t0 < 60  # bounded retries, not a hang
        _assert_clean(info.value, "edis" if backend == "redis" else "S3 s3://", f"127.0.0.1:{proxy.port}"
                      if backend == "redis" else "cannot reach")
        proxy.start()
        _resume_and_check(_provider(url), 4)
    finally:
        proxy.stop()


@pytest.mark.parametrize("backend", ["redis", "s3"])
def test_on_error_continue_goes_on_reports_lost_checkpoints_then_resume_continues(
    backend: str, own_redis: RedisProcess, own_s3: str
) -> None:
    upstream = own_redis.port if backend == "redis" else int(own_s3.rsplit(":", 1)[1])
    proxy = Proxy(upstream)
    try:
        url = _redis_url(proxy.port) if backend == "redis" else _s3_url(proxy.port)
        chat, feature = _chat(_provider(url), At(s5=proxy.stop), on_error="continue")
        chat.user.initiate_chat(chat.manager, message="hello", silent=True)  # no error: the chat went on
        assert chat.transcript() == reference()[0]
        lost = feature.lost_checkpoints
        assert [x.step for x in lost] == [5, 6, 7, 8, 9, 9]  # every step from the outage on, and the run end
        assert lost[-1].checkpoint_id.endswith("-end1")
        for x in lost:
            assert SECRET not in x.error and ("edis" in x.error or "S3" in x.error), x
        proxy.start()
        _resume_and_check(_provider(url), 4)
    finally:
        proxy.stop()


def _provider(url: str) -> PersistencyStorageProvider:
    if url.startswith("s3://"):
        return _s3_provider(url)
    return provider_from_url(url, retry_backoff_cap=0.05)


def test_the_server_down_at_the_start_stops_the_chat_before_any_model_call(own_redis: RedisProcess) -> None:
    proxy = Proxy(own_redis.port)
    proxy.stop()
    faults = Faults()
    chat, _ = _chat(_provider(_redis_url(proxy.port)), faults)
    with pytest.raises(StorageUnavailableError) as info:
        chat.user.initiate_chat(chat.manager, message="hello", silent=True)
    _assert_clean(info.value, "edis")
    assert faults.calls == []


# -- transient errors: the client's own bounded retry with backoff ----------------------------------------
def test_the_providers_configure_their_clients_retry_with_backoff(own_s3: str) -> None:
    from redis.backoff import ExponentialBackoff

    redis_provider = provider_from_url("redis://127.0.0.1:1/0")
    for is_async in (False, True):
        options = redis_provider._conn._kwargs(is_async)  # type: ignore[attr-defined]
        retry = options["retry"]
        assert retry._retries >= 1 and isinstance(retry._backoff, ExponentialBackoff)
        assert redis.exceptions.ConnectionError in options["retry_on_error"]
    s3 = _s3_provider(_s3_url(int(own_s3.rsplit(":", 1)[1])))
    config = s3._fs.config_kwargs  # type: ignore[attr-defined]
    assert config["retries"]["max_attempts"] >= 2 and config["retries"]["mode"] == "standard"
    assert s3._fs.retries == 1  # type: ignore[attr-defined]  # no hand-written loop on top of botocore's


@pytest.mark.parametrize("backend", ["redis", "s3"])
def test_a_transient_blip_is_absorbed(backend: str, own_redis: RedisProcess, own_s3: str) -> None:
    upstream = own_redis.port if backend == "redis" else int(own_s3.rsplit(":", 1)[1])
    proxy = Proxy(upstream)
    try:
        url = _redis_url(proxy.port) if backend == "redis" else _s3_url(proxy.port)
        provider = _provider(url)
        chat, feature = _chat(provider, At(s3=proxy.blip, s5=proxy.blip, s7=proxy.blip), on_error="continue")
        chat.user.initiate_chat(chat.manager, message="hello", silent=True)
        assert feature.lost_checkpoints == []
        infos = provider.list_checkpoints("s")
        assert [i.step for i in infos] == [*range(1, 10), 9] and infos[-1].run_complete
    finally:
        proxy.stop()


@pytest.mark.parametrize("backend", ["redis", "s3"])
def test_a_save_whose_reply_is_lost_is_retried_and_the_chat_goes_on(
    backend: str, own_redis: RedisProcess, own_s3: str
) -> None:
    """The server stored step 5, the reply never arrived: the client's retry must not turn into a conflict."""
    upstream = own_redis.port if backend == "redis" else int(own_s3.rsplit(":", 1)[1])
    proxy = Proxy(upstream)
    try:
        url = _redis_url(proxy.port) if backend == "redis" else _s3_url(proxy.port)
        if backend == "redis":
            from persistency.providers.redis.scripts import SCRIPTS as _SCRIPTS

            marker = _SCRIPTS["save"][0].encode()
        else:
            marker = b"/s/checkpoints/000001-0000005.json"
        provider = _provider(url)
        prefix = b"" if backend == "redis" else b"HTTP/1.1 200"
        chat, _ = _chat(provider, At(s5=lambda: proxy.lose_reply_to(marker, prefix)))
        try:
            chat.user.initiate_chat(chat.manager, message="hello", silent=True)
        except CheckpointConflictError as exc:
            pytest.fail(f"a retried save of our own checkpoint was taken for a lost race: {exc}")
        assert proxy.replies_lost == 1
        infos = provider.list_checkpoints("s")
        assert [i.step for i in infos] == [*range(1, 10), 9] and infos[-1].run_complete
    finally:
        proxy.stop()
