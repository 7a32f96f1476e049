"""The lease contract (`persistency.testing._lease_suite`) on every backend; the ones without leases are skipped."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from persistency import PersistencyStorageProvider, provider_from_url
from persistency.testing._lease_suite import LeaseConformance

LEASE_BACKENDS = ["sqlite", "redis", "redis_cluster", "s3", "file", "memory"]


class TestLeaseConformance(LeaseConformance):
    """SQLite, Redis, Redis Cluster, S3; filesystem and memory once they implement leases."""

    @pytest.fixture(params=LEASE_BACKENDS)
    def url(self, request: pytest.FixtureRequest, tmp_path: Path) -> str:
        name = request.param
        if name == "sqlite":
            return f"sqlite://{tmp_path}/leases.db"
        if name == "file":
            return str(tmp_path / "store")
        if name == "memory":
            return f"memory://lease-{uuid.uuid4().hex}"
        return str(request.getfixturevalue(f"{name}_url"))

    @pytest.fixture
    def provider(self, url: str) -> Iterator[PersistencyStorageProvider]:
        with provider_from_url(url) as p:
            yield p

    @pytest.fixture
    def provider_factory(self, url: str) -> Callable[[], PersistencyStorageProvider]:
        return lambda: provider_from_url(url)
