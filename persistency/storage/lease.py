"""Session leases: who owns a session's run, until when (the ownership issue's primitives).

A backend that can take a lease atomically (exclusive create, ``SET NX PX``, a conditional PUT)
overrides `StorageBackend.acquire_lease`, `renew_lease` and `release_lease`; the base's defaults
raise `NotImplementedError` naming the backend, so a caller can tell "no leases here" from a
lost race. Expiry is wall-clock time (UTC seconds since the epoch) as the backend sees it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Lease"]


@dataclass(frozen=True)
class Lease:
    """A held lease on one session."""

    #: the session the lease is on
    session_id: str
    #: the holder's token: random per worker and run, compared on renew and release
    owner: str
    #: when the lease lapses unless renewed (seconds since the epoch, UTC)
    expires_at: float
    #: the session generation the lease was taken in (see `StorageBackend.session_generation`)
    generation: int = 0
    #: backend-specific proof for renew and release (an ETag, a file's inode, a version); opaque
    token: str = ""
