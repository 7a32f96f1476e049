"""Two broken providers the conformance kit must fail (issue #14): kept here as negative fixtures.

- `SnapshotProvider` stores the whole checkpoint at every step. It answers every call correctly,
  and stores ~200x the transcript at 400 steps.
- `InProcessLockProvider` makes its create-only write an in-process lock around "exists, then
  write", on a store that takes a moment to write (as a network store does). Threads of one
  process race correctly; separate processes all "win".
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from persistency.errors import CheckpointConflictError, CheckpointNotFoundError, SerializationError
from persistency.ids import validate_id
from persistency.models import Checkpoint, CheckpointInfo
from persistency.provider import PersistencyStorageProvider
from persistency.storage import NewRecord, StorageBackend, check_limit


class SnapshotProvider(PersistencyStorageProvider):
    """One JSON file per checkpoint holding the whole checkpoint (the seed system's design)."""

    def __init__(self, root: str) -> None:
        self.root = Path(root)

    def _path(self, sid: str, cid: str) -> Path:
        return self.root / validate_id(sid, "session_id") / f"{validate_id(cid, 'checkpoint_id')}.json"

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        path = self._path(checkpoint.session_id, checkpoint.checkpoint_id)
        if checkpoint.parent_id is not None and not self._path(checkpoint.session_id, checkpoint.parent_id).exists():
            raise CheckpointNotFoundError(f"parent {checkpoint.parent_id!r} is not in the session")
        try:
            data = json.dumps(checkpoint.model_dump(mode="json")).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            raise SerializationError(f"the message at step {checkpoint.step} cannot be stored: {exc}") from exc
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError as exc:
            raise CheckpointConflictError(f"checkpoint {checkpoint.checkpoint_id!r} exists") from exc
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    def get_checkpoint(self, session_id: str, checkpoint_id: str) -> Checkpoint:
        path = self._path(session_id, checkpoint_id)
        if not path.exists():
            raise CheckpointNotFoundError(f"no checkpoint {checkpoint_id!r}")
        return Checkpoint.model_validate(json.loads(path.read_bytes()))

    def _ids(self, session_id: str) -> list[str]:
        folder = self.root / validate_id(session_id, "session_id")
        return sorted(p.stem for p in folder.glob("*.json")) if folder.exists() else []

    def list_checkpoints(self, session_id: str, *, run_id: str | None = None, limit: int | None = None,
                         before: str | None = None) -> list[CheckpointInfo]:
        lim = check_limit(limit)
        for value, what in ((before, "before"), (run_id, "run_id")):
            if value is not None:
                validate_id(value, what)
        infos = [self.get_checkpoint(session_id, c).info() for c in self._ids(session_id)
                 if before is None or c < before]
        infos = [i for i in infos if run_id is None or i.run_id == run_id]
        return infos[-lim:] if lim else ([] if lim == 0 else infos)

    def list_sessions(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self._ids(p.name)) \
            if self.root.exists() else []

    def delete_session(self, session_id: str) -> None:
        for cid in self._ids(session_id):
            self._path(session_id, cid).unlink()


class InProcessLockProvider(StorageBackend):
    """Records as files; "create-only" by a process-local lock around exists-then-write."""

    backend_name = "in-process-lock"
    WRITE_LATENCY = 0.5  # seconds a write takes to land (a network store)

    def __init__(self, root: str) -> None:
        super().__init__()
        self.root = Path(root)
        self._lock = threading.Lock()

    def _path(self, sid: str, cid: str) -> Path:
        return self.root / sid / f"{cid}.rec"

    def write_record(self, record: NewRecord) -> None:
        path = self._path(record.session_id, record.checkpoint_id)
        with self._lock:  # holds within this process only
            if path.exists():
                raise CheckpointConflictError(f"checkpoint {record.checkpoint_id!r} exists")
            path.parent.mkdir(parents=True, exist_ok=True)
            time.sleep(self.WRITE_LATENCY)
            tmp = path.with_suffix(f".tmp{uuid.uuid4().hex}")
            tmp.write_bytes(record.data)
            os.replace(tmp, path)

    def read_records(self, session_id: str, checkpoint_ids: Sequence[str]) -> dict[str, bytes]:
        return {c: self._path(session_id, c).read_bytes() for c in checkpoint_ids if self._path(session_id, c).exists()}

    def list_ids(self, session_id: str) -> list[str]:
        folder = self.root / session_id
        return sorted(p.stem for p in folder.glob("*.rec")) if folder.exists() else []

    def list_session_ids(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if self.list_ids(p.name)) if self.root.exists() else []

    def delete_records(self, session_id: str) -> None:
        for cid in self.list_ids(session_id):
            self._path(session_id, cid).unlink()
