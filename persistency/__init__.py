"""ag2-persistency: durable, resumable AG2 group chats.

A checkpoint after every step of a group chat, into pluggable storage (filesystem, S3, Redis),
resumed under an explicit policy. The public API is listed here once; everything else is private.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from persistency.errors import (
    AG2VersionError,
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
    SessionBusyError,
    SessionDeletedError,
    StorageUnavailableError,
    UnsupportedSchemaError,
)
from persistency.ids import checkpoint_id_for, run_id_for, validate_id
from persistency.models import SCHEMA_VERSION, Checkpoint, CheckpointInfo
from persistency.policies import ResumePolicy
from persistency.provider import PersistencyStorageProvider
from persistency.registry import DEFAULT_URL, provider_from_url

if TYPE_CHECKING:
    from persistency.feature import LostCheckpoint, Persistency
    from persistency.feature._ownership import Ownership
    from persistency.rebuild import RebuiltChat, continue_chat, rebuild_chat, recreate_agents_from_checkpoint
    from persistency.scripted import ScriptedModelClient

__version__ = "0.1.0"

# Names whose modules import AG2 are loaded on first use, so storage-only code (the CLI's
# listing, the providers) does not pay for importing autogen.
_LAZY = {
    "LostCheckpoint": "persistency.feature",
    "Ownership": "persistency.feature._ownership",
    "Persistency": "persistency.feature",
    "RebuiltChat": "persistency.rebuild",
    "ScriptedModelClient": "persistency.scripted",
    "continue_chat": "persistency.rebuild",
    "rebuild_chat": "persistency.rebuild",
    "recreate_agents_from_checkpoint": "persistency.rebuild",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'persistency' has no attribute {name!r}")

__all__ = [
    "DEFAULT_URL",
    "SCHEMA_VERSION",
    "AG2VersionError",
    "Checkpoint",
    "CheckpointConflictError",
    "CheckpointInfo",
    "CheckpointNotFoundError",
    "CheckpointWriteError",
    "CorruptCheckpointError",
    "EncryptionError",
    "InvalidIdentifierError",
    "LostCheckpoint",
    "MissingDependencyError",
    "Ownership",
    "Persistency",
    "PersistencyError",
    "PersistencyStorageProvider",
    "ProviderConfigError",
    "RebuiltChat",
    "ResumeError",
    "ResumePolicy",
    "ScriptedModelClient",
    "SerializationError",
    "SessionBusyError",
    "SessionDeletedError",
    "StorageUnavailableError",
    "UnsupportedSchemaError",
    "__version__",
    "checkpoint_id_for",
    "continue_chat",
    "provider_from_url",
    "rebuild_chat",
    "recreate_agents_from_checkpoint",
    "run_id_for",
    "validate_id",
]
