"""The storage layer, public: the base class for backends, the record model and codec, the cache.

Write a backend by subclassing `StorageBackend` and implementing its byte-level primitives
(``write_record``, ``read_records``, ``list_ids``, ``list_session_ids``, ``delete_records``);
linear storage, checksums, encryption, caching and the async twins come from the base. Check it
with the conformance kit, `persistency.testing`. See ``docs/storage.md`` for a worked example.

- `StorageBackend`: the base class (primitives, lease and generation hooks, ``from_url``).
- `NewRecord`, `Record`, `Lineage`: what a backend is handed, what the codec decodes.
- `persistency.storage.codec`: encode/decode functions, for tools and unusual backends.
- `LRUCache`, `Lease`, `BackendOptions`, `validate_options`: building blocks for backends.
"""

from __future__ import annotations

from persistency.storage.backend import StorageBackend
from persistency.storage.cache import LRUCache
from persistency.storage.lease import Lease
from persistency.storage.options import BackendOptions, check_limit, validate_options
from persistency.storage.records import FORMAT, LEGACY_FORMAT, Lineage, NewRecord, Record

__all__ = [
    "FORMAT",
    "LEGACY_FORMAT",
    "BackendOptions",
    "LRUCache",
    "Lease",
    "Lineage",
    "NewRecord",
    "Record",
    "StorageBackend",
    "check_limit",
    "register_provider",
    "validate_options",
]


def register_provider(scheme: str, provider: type | str, *, replace: bool = False) -> None:
    """Serve URLs of ``scheme`` with ``provider`` (a class or ``"module:Class"``); see `persistency.registry`."""
    from persistency.registry import register_provider as _register

    _register(scheme, provider, replace=replace)
