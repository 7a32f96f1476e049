"""Shared fixtures: one storage URL per backend, every backend on servers the tests start.

``storage_url`` is parametrized over every backend, so a test that takes it runs on the local
filesystem, ``memory://``, a Redis server, a three-node Redis Cluster and an S3 server (moto),
all started by the tests themselves on free loopback ports (see ``tests/servers``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from persistency import PersistencyStorageProvider, provider_from_url

pytest_plugins = ["tests.servers.redis_server", "tests.servers.s3_server"]

BACKENDS = ["file", "memory", "redis", "redis_cluster", "s3"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the backend this test instance runs on."""
    return str(request.param)


@pytest.fixture
def storage_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh, empty storage URL on ``backend`` (unique folder, key prefix or S3 prefix)."""
    if backend == "file":
        return str(tmp_path / "store")
    if backend == "memory":
        return f"memory://t-{uuid.uuid4().hex}"
    return str(request.getfixturevalue(f"{backend}_url"))


@pytest.fixture
def provider(storage_url: str) -> Iterator[PersistencyStorageProvider]:
    """A provider on a fresh URL of every backend, closed after the test."""
    p = provider_from_url(storage_url)
    try:
        yield p
    finally:
        p.close()
