"""Every error this library raises, in one module so that callers catch one family.

The tree::

    * PersistencyError                 -- base: anything this library refuses or cannot do
      + InvalidIdentifierError         -- a session or checkpoint id that is empty, too long or path-like
      + CheckpointNotFoundError        -- no checkpoint (or session) with that id
      + CheckpointConflictError        -- a create-only write lost: that id already exists
        - SessionBusyError             -- another worker holds a live lease on the session's run
        - SessionDeletedError          -- the session was deleted (its generation advanced) under a live chat
      + CorruptCheckpointError         -- stored bytes that do not decode to a checkpoint
      + UnsupportedSchemaError         -- written by a newer version of this library
      + SerializationError             -- a checkpoint that cannot be written as JSON
      + ProviderConfigError            -- a bad URL, an unknown scheme, a bad option
        - MissingDependencyError       -- the provider needs an extra that is not installed
      + StorageUnavailableError        -- the backend cannot be reached or refused us
      + EncryptionError                -- a payload that cannot be decrypted with the key given
      + ResumeError                    -- a resume policy that cannot be applied to this session
      + CheckpointWriteError           -- checkpoints were lost while a run went on (on_error="continue")
      + AG2VersionError                -- AG2 Classic missing or outside the tested range (also an ImportError)

Errors from the layer below (OSError, botocore, redis) are translated at the provider boundary
with ``raise ... from exc`` so the cause is kept; no message carries a secret.
"""

from __future__ import annotations

__all__ = [
    "AG2VersionError",
    "CheckpointConflictError",
    "CheckpointNotFoundError",
    "CheckpointWriteError",
    "CorruptCheckpointError",
    "EncryptionError",
    "InvalidIdentifierError",
    "MissingDependencyError",
    "PersistencyError",
    "ProviderConfigError",
    "ResumeError",
    "SerializationError",
    "SessionBusyError",
    "SessionDeletedError",
    "StorageUnavailableError",
    "UnsupportedSchemaError",
]


class PersistencyError(Exception):
    """Base class: anything this library refuses or cannot do."""


class InvalidIdentifierError(PersistencyError, ValueError):
    """A session or checkpoint id that is empty, too long, or could be read as a path or key."""


class CheckpointNotFoundError(PersistencyError, LookupError):
    """No checkpoint (or no session) with the id asked for."""


class CheckpointConflictError(PersistencyError):
    """A create-only write lost: a checkpoint with that id exists already (another writer won)."""


class CorruptCheckpointError(PersistencyError):
    """Stored bytes that do not decode to a valid checkpoint; the message names where they are."""


class UnsupportedSchemaError(PersistencyError):
    """A checkpoint written with a newer schema than this version of the library understands."""


class SerializationError(PersistencyError, TypeError):
    """Part of a checkpoint (usually a message) cannot be written as UTF-8 JSON."""


class ProviderConfigError(PersistencyError, ValueError):
    """A provider URL or option that is malformed, unknown or inconsistent."""


class MissingDependencyError(ProviderConfigError, ImportError):
    """The provider needs an optional extra that is not installed; the message names it."""


class StorageUnavailableError(PersistencyError, ConnectionError):
    """The storage backend cannot be reached, or refused the request (auth, missing bucket)."""


class EncryptionError(PersistencyError):
    """An encrypted payload that cannot be decrypted (wrong key, tampered bytes)."""


class ResumeError(PersistencyError):
    """A resume policy that cannot be applied to this session (for example an unknown checkpoint)."""


class CheckpointWriteError(PersistencyError):
    """Checkpoints that could not be stored while the run went on; lists what was lost."""


class SessionBusyError(CheckpointConflictError):
    """Another worker holds a live lease on the session: nothing was touched; retry after `expires_at`."""

    def __init__(self, session_id: str, expires_at: float, message: str | None = None) -> None:
        from datetime import datetime, timezone

        when = datetime.fromtimestamp(expires_at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        super().__init__(message or f"session {session_id!r} is busy: another worker owns its run "
                                    f"until {when} (unless renewed); nothing was written")
        self.session_id = session_id
        self.expires_at = expires_at


class SessionDeletedError(CheckpointConflictError):
    """The session was deleted (its generation advanced) under a live chat; the save was refused."""


class AG2VersionError(PersistencyError, ImportError):
    """AG2 Classic is missing or outside the tested version range; the message names the extras to install."""
