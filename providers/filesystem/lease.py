"""Session generation and lease on a local disk: one small state file per session, under ``flock``.

``ROOT/SESSION/session.json`` holds ``{"generation": N, "lease": {"owner", "token", "expires_at"}}``,
padded to a fixed size and rewritten in place (one ``pwrite`` inside one disk sector) while an
exclusive ``flock`` on the same file is held, so taking, renewing and releasing a lease and
advancing the generation are atomic across processes. Only a new generation is synced to disk: after a
power cut every holder of a lease on this disk is gone anyway. The file is never replaced or unlinked
(a lock on a replaced file would guard nothing); deleting a session keeps it, so the generation
only grows. Expiry is wall-clock time (``time.time()``), as `persistency.storage.Lease` says.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from persistency.errors import CorruptCheckpointError, ProviderConfigError
from persistency.ids import validate_id
from persistency.storage import Lease

from .._leases import check_lease_args as shared_lease_args
from .paths import LocalPaths, read_fd

__all__ = ["STATE_FILE", "LocalLeases", "MemoryLeases", "check_lease_args"]

STATE_FILE = "session.json"
_STATE_SIZE = 512


def check_lease_args(session_id: str, owner: object, ttl: object) -> str:
    """The session id, with the owner and ttl checked by the rules every backend shares."""
    return shared_lease_args(session_id, owner, ttl)[0]  # type: ignore[arg-type]


# -- the decisions, shared by the local and the memory store (state in, state out; no I/O) --------------
def _take(state: dict[str, Any], sid: str, owner: str, ttl: float) -> Lease | None:
    """A new lease written into ``state``, or None if another owner's lease is live."""
    now = time.time()
    held = state.get("lease")
    if held and held["expires_at"] > now and held["owner"] != owner:
        return None
    lease = Lease(sid, owner, now + ttl, int(state.get("generation", 0)), uuid.uuid4().hex)
    state["lease"] = {"owner": owner, "token": lease.token, "expires_at": lease.expires_at}
    return lease


def _extend(state: dict[str, Any], lease: Lease, ttl: float) -> Lease | None:
    """The lease extended in ``state`` if its token still holds it, else None."""
    held = state.get("lease")
    if not held or held["token"] != lease.token:
        return None
    expires = time.time() + ttl
    held["expires_at"] = expires
    return Lease(lease.session_id, lease.owner, expires, int(state.get("generation", 0)), lease.token)


def _live(state: dict[str, Any] | None, sid: str) -> Lease | None:
    """The live lease recorded in ``state`` (None if none or lapsed)."""
    held = (state or {}).get("lease")
    if not held or held["expires_at"] <= time.time():
        return None
    assert state is not None
    return Lease(sid, held["owner"], float(held["expires_at"]), int(state.get("generation", 0)), held["token"])


def _give_up(state: dict[str, Any], lease: Lease) -> None:
    """Clear the lease from ``state`` if its token still holds it."""
    held = state.get("lease")
    if held and held["token"] == lease.token:
        state["lease"] = None


class LocalLeases:
    """Generation and lease kept in each session folder's state file."""

    def __init__(self, paths: LocalPaths, fsync: bool) -> None:
        self.paths = paths
        self.fsync = fsync

    @contextlib.contextmanager
    def _state(self, sid: str, create: bool, exclusive: bool = True) -> Iterator[dict[str, Any] | None]:
        """The session's state, locked; written back if the body changed it."""
        with self.paths.session(sid, create=create, checkpoints=False) as fds:
            if fds is None:
                yield None
                return
            sess, _ = fds
            try:
                fd = self.paths.open_file(sess, STATE_FILE, os.O_RDWR | (os.O_CREAT if create else 0),
                                          f"{sid}/{STATE_FILE}")
            except FileNotFoundError:
                yield None
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
                raw = read_fd(fd).rstrip(b" \n\x00")
                try:
                    state: dict[str, Any] = json.loads(raw) if raw else {}
                    if not isinstance(state, dict):
                        raise ValueError("not an object")
                except ValueError as exc:
                    raise CorruptCheckpointError(f"{self.paths.root}/{sid}/{STATE_FILE}: damaged ({exc})") from None
                before = json.dumps(state, sort_keys=True)
                yield state
                after = json.dumps(state, sort_keys=True)
                if after != before:
                    data = after.encode("utf-8")
                    if len(data) >= _STATE_SIZE:
                        raise ProviderConfigError("lease owner too long for the session state file")
                    os.pwrite(fd, data.ljust(_STATE_SIZE - 1) + b"\n", 0)
                    if self.fsync and state.get("generation", 0) != json.loads(before).get("generation", 0):
                        os.fdatasync(fd)  # a generation must survive a power cut; a lease need not: every
                        # holder of a lease on this disk died with the machine
            finally:
                os.close(fd)

    def generation(self, sid: str) -> int:
        """The session's generation (0 if it was never deleted)."""
        with self._state(validate_id(sid, "session_id"), create=False, exclusive=False) as state:
            return 0 if state is None else int(state.get("generation", 0))

    @contextlib.contextmanager
    def advancing(self, sid: str) -> Iterator[None]:
        """Hold the state locked while the session's records are removed, and advance its generation."""
        with self.paths.session(sid, create=False, checkpoints=False) as fds:
            exists = fds is not None
        if not exists:
            yield
            return
        with self._state(sid, create=True) as state:
            assert state is not None
            state["generation"] = int(state.get("generation", 0)) + 1
            yield

    def acquire(self, sid: str, owner: str, ttl: float) -> Lease | None:
        """Take the lease if nobody else holds a live one."""
        with self._state(sid, create=True) as state:
            assert state is not None
            return _take(state, sid, owner, ttl)

    def current(self, sid: str) -> Lease | None:
        """The live lease, or None (a shared lock: nothing is written)."""
        with self._state(validate_id(sid, "session_id"), create=False, exclusive=False) as state:
            return _live(state, sid)

    def renew(self, lease: Lease, ttl: float) -> Lease | None:
        """Extend the lease if it is still ours."""
        with self._state(lease.session_id, create=False) as state:
            return None if state is None else _extend(state, lease, ttl)

    def release(self, lease: Lease) -> None:
        """Give the lease up if it is still ours."""
        with self._state(lease.session_id, create=False) as state:
            if state is not None:
                _give_up(state, lease)


class MemoryLeases:
    """The same for ``memory://``: one process by nature, a lock and a dict per root."""

    _states: dict[str, dict[str, Any]] = {}
    _guard = threading.Lock()

    def __init__(self, root: str) -> None:
        self.root = root

    @contextlib.contextmanager
    def _state(self, sid: str) -> Iterator[dict[str, Any]]:
        with self._guard:
            yield self._states.setdefault(f"{self.root}/{sid}", {})

    def generation(self, sid: str) -> int:
        """The session's generation."""
        with self._state(validate_id(sid, "session_id")) as state:
            return int(state.get("generation", 0))

    @contextlib.contextmanager
    def advancing(self, sid: str) -> Iterator[None]:
        """Advance the generation around a delete."""
        with self._state(sid) as state:
            state["generation"] = int(state.get("generation", 0)) + 1
            yield

    def acquire(self, sid: str, owner: str, ttl: float) -> Lease | None:
        """Take the lease if nobody else holds a live one."""
        with self._state(sid) as state:
            return _take(state, sid, owner, ttl)

    def current(self, sid: str) -> Lease | None:
        """The live lease, or None."""
        with self._state(validate_id(sid, "session_id")) as state:
            return _live(state, sid)

    def renew(self, lease: Lease, ttl: float) -> Lease | None:
        """Extend the lease if it is still ours."""
        with self._state(lease.session_id) as state:
            return _extend(state, lease, ttl)

    def release(self, lease: Lease) -> None:
        """Give the lease up if it is still ours."""
        with self._state(lease.session_id) as state:
            _give_up(state, lease)
