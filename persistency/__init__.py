"""ag2-persistency: durable, resumable AG2 group chats.

A checkpoint after every step of a group chat, into pluggable storage (filesystem, S3, Redis),
resumed under an explicit policy. The public API is listed here once; everything else is private.
"""

from __future__ import annotations

from persistency.errors import (
    CheckpointConflictError,
    CheckpointNotFoundError,
    CheckpointWriteError,
    CorruptCheckpointError,
    EncryptionError,
    InvalidIdentifierError,
    MissingDependencyError,
    PersistencyError,
    ProviderConfigError,
    ResumeError,
    SerializationError,
    StorageUnavailableError,
    UnsupportedSchemaError,
)
from persistency.ids import checkpoint_id_for, run_id_for, validate_id
from persistency.models import SCHEMA_VERSION, Checkpoint, CheckpointInfo
from persistency.provider import PersistencyStorageProvider
from persistency.registry import DEFAULT_URL, provider_from_url

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_URL",
    "SCHEMA_VERSION",
    "Checkpoint",
    "CheckpointConflictError",
    "CheckpointInfo",
    "CheckpointNotFoundError",
    "CheckpointWriteError",
    "CorruptCheckpointError",
    "EncryptionError",
    "InvalidIdentifierError",
    "MissingDependencyError",
    "PersistencyError",
    "PersistencyStorageProvider",
    "ProviderConfigError",
    "ResumeError",
    "SerializationError",
    "StorageUnavailableError",
    "UnsupportedSchemaError",
    "__version__",
    "checkpoint_id_for",
    "provider_from_url",
    "run_id_for",
    "validate_id",
]
