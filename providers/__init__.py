"""Storage providers: filesystem (fsspec), S3 (s3fs) and Redis (redis-py).

Each is imported on first use, so a missing optional extra only matters to the provider that
needs it (and the error names the extra to install).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from providers.filesystem import FilesystemStorageProvider
    from providers.redis import RedisStorageProvider
    from providers.s3 import S3StorageProvider

__all__ = ["FilesystemStorageProvider", "RedisStorageProvider", "S3StorageProvider"]

_LAZY = {
    "FilesystemStorageProvider": "providers.filesystem",
    "S3StorageProvider": "providers.s3",
    "RedisStorageProvider": "providers.redis",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'providers' has no attribute {name!r}")
