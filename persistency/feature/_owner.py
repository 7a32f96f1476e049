"""Owner tokens that say where their holder ran, so a lease left by a dead process of this machine can be
told from one held by a live worker elsewhere (`dead_here`), and the lease primitives in the sync and
async forms the plans call (`LeaseIO`)."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any

from persistency.storage import Lease

if TYPE_CHECKING:
    from persistency.provider import PersistencyStorageProvider

__all__ = ["LIVE", "LeaseIO", "dead_here", "owner_token"]

LIVE: set[str] = set()
"""Owner tokens of this process's runs that are claiming or holding a lease right now."""


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:60] or "host"


def _pid_namespace() -> str:
    """This process's PID namespace (an inode number on Linux; "0" where there is none to read)."""
    try:
        return re.sub(r"\D", "", os.readlink("/proc/self/ns/pid")) or "0"
    except OSError:
        return "0"


def owner_token() -> str:
    """A fresh owner name ``host@pidns@pid@random`` (a lease is compared on its token anyway; the rest tells
    `dead_here` whether the holder was a process of this machine)."""
    return f"{_host()}@{_pid_namespace()}@{os.getpid()}@{uuid.uuid4().hex[:12]}"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process: it exists
        return True
    try:  # a zombie (killed, not yet reaped) holds nothing
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def dead_here(owner: str) -> bool:
    """True only if ``owner`` (an `owner_token`) was a process of this host and PID namespace that is gone,
    or a run of this very process that is over (not in `LIVE`).

    Anything else (another machine or container, a live run of this process, a token of another form, a
    running PID) is treated as alive: its lease is waited out, never taken early."""
    parts = owner.split("@")
    if len(parts) != 4 or not parts[2].isdigit() or parts[0] != _host() or parts[1] != _pid_namespace():
        return False
    pid = int(parts[2])
    if pid == os.getpid():  # this process: stale unless one of its runs still claims it (a release that
        return owner not in LIVE  # failed in an outage leaves such a lease behind)
    return pid > 0 and not _running(pid)


class LeaseIO:
    """The lease primitives with sync and async forms (`io` calls ``name`` or ``a`` + ``name``)."""

    def __init__(self, provider: PersistencyStorageProvider) -> None:
        self.provider: Any = provider

    def acquire(self, session_id: str, owner: str, ttl: float) -> Lease | None:
        """Take the lease, or None."""
        return self.provider.acquire_lease(session_id, owner, ttl)  # type: ignore[no-any-return]

    async def aacquire(self, session_id: str, owner: str, ttl: float) -> Lease | None:
        """Async `acquire`."""
        return await asyncio.to_thread(self.acquire, session_id, owner, ttl)

    def current(self, session_id: str) -> Lease | None:
        """The live lease (None if the backend cannot say)."""
        probe = getattr(self.provider, "current_lease", None)
        return probe(session_id) if probe is not None else None  # type: ignore[no-any-return]

    async def acurrent(self, session_id: str) -> Lease | None:
        """Async `current`."""
        return await asyncio.to_thread(self.current, session_id)

    def generation(self, session_id: str) -> int:
        """The session's generation."""
        return int(self.provider.session_generation(session_id))

    async def ageneration(self, session_id: str) -> int:
        """Async `generation`."""
        return await asyncio.to_thread(self.generation, session_id)

    def release(self, lease: Lease) -> None:
        """Give the lease up."""
        self.provider.release_lease(lease)

    async def arelease(self, lease: Lease) -> None:
        """Async `release`."""
        await asyncio.to_thread(self.release, lease)

    def sleep(self, seconds: float) -> None:
        """Wait (sync chats)."""
        time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        """Wait without blocking the event loop."""
        await asyncio.sleep(seconds)
