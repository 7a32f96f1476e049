"""Placeholder until the Redis provider lands: defines redis_url / redis_cluster_url."""

from __future__ import annotations

import pytest


@pytest.fixture
def redis_url() -> str:
    pytest.skip("Redis provider not implemented yet")


@pytest.fixture
def redis_cluster_url() -> str:
    pytest.skip("Redis provider not implemented yet")
