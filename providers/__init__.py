"""Storage providers: filesystem (fsspec), S3 (s3fs) and Redis (redis-py), installed as ``persistency.providers``.

The repository keeps them in its top-level ``providers/`` folder; packaging maps that folder onto
``persistency.providers`` (see setup.py), so modules here import each other relatively.

Each is imported on first use, so a missing optional extra only matters to the provider that
needs it (and the error names the extra to install).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .filesystem import FilesystemStorageProvider
    from .redis import RedisStorageProvider
    from .s3 import S3StorageProvider

__all__ = ["FilesystemStorageProvider", "RedisStorageProvider", "S3StorageProvider"]

_LAZY = {
    "FilesystemStorageProvider": ".filesystem",
    "S3StorageProvider": ".s3",
    "RedisStorageProvider": ".redis",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
