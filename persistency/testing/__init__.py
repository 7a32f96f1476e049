"""The conformance kit: the provider contract as pytest tests, for our providers and third parties'.

Subclass `ProviderConformance` in a test module and supply the fixtures::

    import pytest
    from persistency.testing import ProviderConformance

    class TestMyProvider(ProviderConformance):
        @pytest.fixture
        def provider(self, tmp_path):            # required: a fresh, empty provider
            with MyProvider(tmp_path) as p:
                yield p

        @pytest.fixture
        def provider_factory(self, tmp_path):    # another instance on the same store
            return lambda: MyProvider(tmp_path)

        @pytest.fixture
        def stored_bytes(self, tmp_path):        # bytes the store holds now (optional for a StorageBackend)
            return lambda: sum(f.stat().st_size for f in tmp_path.rglob("*") if f.is_file())

The kit's modules are registered for pytest's assertion rewriting, and every failure says what
the contract asks and what the provider did. It is also a pytest plugin (``-p persistency.testing``
or the ``pytest11`` entry point): its ``persistency_provider_kit`` marker lists the capabilities.
Requires pytest (and pytest-asyncio for the async twins, in ``asyncio_mode = "auto"``).
"""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite(
    "persistency.testing.contract", "persistency.testing.multi", "persistency.testing.bounds",
    "persistency.testing.checks",
)

from persistency.testing.bounds import BoundTests  # noqa: E402
from persistency.testing.builders import HOSTILE_IDS, make_chain, make_checkpoint, message  # noqa: E402
from persistency.testing.checks import expect_same, race_in_processes, run_threads  # noqa: E402
from persistency.testing.contract import ContractTests  # noqa: E402
from persistency.testing.multi import MultiInstanceTests  # noqa: E402

__all__ = [
    "HOSTILE_IDS",
    "BoundTests",
    "ContractTests",
    "MultiInstanceTests",
    "ProviderConformance",
    "expect_same",
    "make_chain",
    "make_checkpoint",
    "message",
    "race_in_processes",
    "run_threads",
]


class ProviderConformance(ContractTests, MultiInstanceTests, BoundTests):
    """Everything a provider must keep; subclass it and supply ``provider`` (and the optional fixtures)."""


def pytest_configure(config: pytest.Config) -> None:
    """As a plugin: declare the kit's marker, so ``-p persistency.testing`` runs with ``--strict-markers``."""
    config.addinivalue_line("markers", "persistency_provider_kit: a test of the persistency conformance kit")
