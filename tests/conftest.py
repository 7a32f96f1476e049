"""Shared fixtures: one storage URL per backend, every backend on servers the tests start.

``storage_url`` is parametrized over every backend, so a test that takes it runs on the local
filesystem, ``memory://``, a Redis server, a three-node Redis Cluster and an S3 server (moto),
all started by the tests themselves on free loopback ports (see ``tests/servers``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from persistency import PersistencyStorageProvider, provider_from_url

pytest_plugins = ["pytester", "tests.servers.redis_server", "tests.servers.s3_server"]

BACKENDS = ["file", "memory", "redis", "redis_cluster", "s3"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the backend this test instance runs on."""
    return str(request.param)


@pytest.fixture
def storage_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh, empty storage URL on ``backend`` (unique folder, key prefix or S3 prefix)."""
    return url_for(backend, tmp_path, request)


def url_for(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """`storage_url`'s value for ``backend`` (also used by fixtures that add backends of their own)."""
    if backend == "file":
        return str(tmp_path / "store")
    if backend == "memory":
        return f"memory://t-{uuid.uuid4().hex}"
    return str(request.getfixturevalue(f"{backend}_url"))


def stored_bytes_counter(backend: str, url: str, request: pytest.FixtureRequest) -> Callable[[], int]:
    """A function counting the bytes stored under ``url`` (files, memory entries, Redis fields, S3 objects)."""
    if backend == "file":
        return lambda: sum(f.stat().st_size for f in Path(url).rglob("*") if f.is_file())
    if backend == "memory":
        from fsspec.implementations.memory import MemoryFileSystem

        prefix = "/" + url.split("://", 1)[1]
        store = MemoryFileSystem.store
        return lambda: sum(len(f.getvalue()) for k, f in list(store.items()) if k.startswith(prefix + "/"))
    if backend in ("redis", "redis_cluster"):
        import redis
        import redis.cluster

        base, prefix = url.split("?")[0], url.split("key_prefix=")[1]
        client = redis.cluster.RedisCluster.from_url(base) if backend == "redis_cluster" else redis.Redis.from_url(base)
        request.addfinalizer(client.close)

        def redis_bytes() -> int:
            total = 0
            for key in client.scan_iter(match=f"{prefix}:*"):
                if client.type(key) == b"hash":
                    total += sum(len(v) for v in client.hgetall(key).values())
            return total

        return redis_bytes
    server = request.getfixturevalue("s3_server")
    prefix = url.split("/", 3)[3].split("?")[0] + "/"

    def s3_bytes() -> int:
        pages = server.client().get_paginator("list_objects_v2").paginate(Bucket=server.bucket, Prefix=prefix)
        return sum(o["Size"] for page in pages for o in page.get("Contents", []))

    return s3_bytes


@pytest.fixture
def provider(storage_url: str) -> Iterator[PersistencyStorageProvider]:
    """A provider on a fresh URL of every backend, closed after the test."""
    p = provider_from_url(storage_url)
    try:
        yield p
    finally:
        p.close()
