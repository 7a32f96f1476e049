"""The shipped conformance kit, run against every backend (the ``provider`` fixture in conftest)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from persistency import PersistencyStorageProvider, provider_from_url
from persistency.testing import ProviderConformance
from tests.conftest import stored_bytes_counter


class TestConformance(ProviderConformance):
    """Every provider keeps the same contract: file, memory://, Redis, Redis Cluster, S3."""

    @pytest.fixture
    def provider_factory(self, storage_url: str) -> Callable[[], PersistencyStorageProvider]:
        """Another instance on the same store, opened from the same URL as a second worker would."""
        return lambda: provider_from_url(storage_url)

    @pytest.fixture
    def stored_bytes(self, backend: str, storage_url: str, request: pytest.FixtureRequest) -> Callable[[], int]:
        """Bytes the backend holds under the test's URL, counted in the backend itself."""
        return stored_bytes_counter(backend, storage_url, request)
