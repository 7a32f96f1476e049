"""Reference point: a full snapshot per step, as the seed and Koog store checkpoints.

`SnapshotPerStepProvider` keeps the same contract as our providers (so the same AG2 chat and the
same feature drive it), but each checkpoint is one JSON file holding the whole transcript and
state, written like our filesystem provider writes (temporary file, fsync, hard link) so that
the comparison isolates the data layout. Listing parses every file, as Koog's file provider does.

Its bytes grow with the square of the steps; past ``cap_bytes`` it stops writing (saves become
no-ops that are counted) and the benchmark extrapolates the total from the sizes it did write.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

from persistency.errors import CheckpointConflictError, CheckpointNotFoundError
from persistency.models import Checkpoint, CheckpointInfo
from persistency.provider import PersistencyStorageProvider

__all__ = ["SnapshotPerStepProvider", "extrapolate_quadratic"]


class SnapshotPerStepProvider(PersistencyStorageProvider):
    """One self-contained JSON document per checkpoint under ``ROOT/SESSION/ID.json``."""

    schemes = ("snapshot",)

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True, cap_bytes: int | None = None) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self.cap_bytes = cap_bytes
        self.written_bytes = 0
        self.sizes: list[tuple[int, int]] = []  # (step, bytes) of every written checkpoint
        self.skipped = 0
        self.stopped_at_step: int | None = None

    def _dir(self, session_id: str) -> Path:
        return self.root / session_id

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Write the whole checkpoint as one JSON file (or count it as skipped past the cap)."""
        if self.cap_bytes is not None and self.written_bytes >= self.cap_bytes:
            if self.stopped_at_step is None:
                self.stopped_at_step = checkpoint.step
            self.skipped += 1
            return
        data = checkpoint.model_dump_json().encode("utf-8")
        directory = self._dir(checkpoint.session_id)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{checkpoint.checkpoint_id}.json"
        tmp = directory / f".tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(data)
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError as exc:
            raise CheckpointConflictError(f"{checkpoint.checkpoint_id} exists") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self.written_bytes += len(data)
        self.sizes.append((checkpoint.step, len(data)))

    def _read(self, session_id: str, checkpoint_id: str) -> bytes:
        """One whole file (named like the record providers' reader, so the benchmark's spy counts it)."""
        path = self._dir(session_id) / f"{checkpoint_id}.json"
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise CheckpointNotFoundError(str(path)) from exc

    def get_checkpoint(self, session_id: str, checkpoint_id: str) -> Checkpoint:
        """Parse one whole file."""
        return Checkpoint.model_validate_json(self._read(session_id, checkpoint_id))

    def _ids(self, session_id: str) -> list[str]:
        try:
            names = os.listdir(self._dir(session_id))
        except FileNotFoundError:
            return []
        return sorted(n[:-5] for n in names if n.endswith(".json") and not n.startswith("."))

    def get_latest_checkpoint(self, session_id: str) -> Checkpoint | None:
        """Parse the file with the greatest id."""
        ids = self._ids(session_id)
        return self.get_checkpoint(session_id, ids[-1]) if ids else None

    def list_checkpoints(
        self,
        session_id: str,
        *,
        run_id: str | None = None,
        limit: int | None = None,
        before: str | None = None,
    ) -> list[CheckpointInfo]:
        """Parse every file (payloads included), as Koog's getCheckpoints does."""
        ids = [i for i in self._ids(session_id) if before is None or i < before]
        out = [self.get_checkpoint(session_id, i).info() for i in ids]
        out = [i for i in out if run_id is None or i.run_id == run_id]
        return out[-limit:] if limit else out

    def list_sessions(self) -> list[str]:
        """Every folder with at least one checkpoint file."""
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self._ids(p.name))

    def delete_session(self, session_id: str) -> None:
        """Remove the session's folder."""
        import shutil

        shutil.rmtree(self._dir(session_id), ignore_errors=True)


def extrapolate_quadratic(sizes: list[tuple[int, int]], steps: int) -> int:
    """Total bytes of ``steps`` full snapshots, fitting size = a + b*step to the ones written."""
    if not sizes:
        return 0
    written = {s: b for s, b in sizes}
    if len(sizes) == 1:
        s0, b0 = sizes[0]
        b = b0 / max(1, s0)
        a = 0.0
    else:
        (s0, b0), (s1, b1) = sizes[0], sizes[-1]
        b = (b1 - b0) / max(1, s1 - s0)
        a = b0 - b * s0
    # Steps are transcript lengths; a run writes about one checkpoint per step, 1..steps.
    return int(sum(written.get(s, a + b * s) for s in range(1, steps + 1)))
