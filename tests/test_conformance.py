"""The shipped conformance suite, run against every backend (the ``provider`` fixture in conftest)."""

from __future__ import annotations

from persistency.testing import ProviderConformance


class TestConformance(ProviderConformance):
    """Every provider keeps the same contract: file, memory://, Redis, Redis Cluster, S3."""
