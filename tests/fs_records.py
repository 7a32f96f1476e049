"""Test helper: a checkpoint's record inside a local session segment, read and rewritten like a file.

Tests that damage or edit one stored record (as a disk fault or another writer would) use this
instead of a per-record path: `record_file(root, session, checkpoint_id)` has ``read_bytes``,
``write_bytes``, ``unlink``, ``stat`` and ``name`` like a `pathlib.Path`; writing replaces the record's bytes in the
segment (the end line kept) through a new file, so a provider's cached index cannot mask the edit.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from persistency.providers.filesystem.segment import SEGMENT, SegmentIndex, scan

__all__ = ["RecordInSegment", "record_file", "run_racers", "segment_path"]


def segment_path(root: Path, session: str) -> Path:
    """The session's segment file."""
    return Path(root) / session / "checkpoints" / SEGMENT


class RecordInSegment:
    """One record's bytes in a segment, as a file-like path."""

    def __init__(self, root: Path, session: str, checkpoint_id: str) -> None:
        self.segment = segment_path(root, session)
        self.checkpoint_id = checkpoint_id
        self.name = checkpoint_id  # error messages name the checkpoint

    def _span(self) -> tuple[bytes, int, int]:
        data = self.segment.read_bytes()
        idx = SegmentIndex(0, 0)
        scan(data, 0, idx)
        entry = idx.entries[self.checkpoint_id]
        return data, entry.start, entry.stop

    def read_bytes(self) -> bytes:
        """The record's two lines."""
        data, start, stop = self._span()
        return data[start:stop]

    def write_bytes(self, new: bytes) -> None:
        """Replace the record's bytes (the end line after them stays)."""
        data, start, stop = self._span()
        tmp = self.segment.with_name(".edit")
        tmp.write_bytes(data[:start] + new + data[stop:])
        os.replace(tmp, self.segment)


    def unlink(self) -> None:
        """Remove the record and its end line from the segment, as if it had never been written."""
        data, start, stop = self._span()
        end = data.index(b"\n", stop) + 1
        tmp = self.segment.with_name(".edit")
        tmp.write_bytes(data[:start] + data[end:])
        os.replace(tmp, self.segment)

    def stat(self) -> os.stat_result:
        """A stat result whose ``st_size`` is the record's size (other fields: the segment's)."""
        st = os.stat(self.segment)
        fields = list(st)
        fields[6] = len(self.read_bytes())
        return os.stat_result(fields)


def record_file(root: Path, session: str, checkpoint_id: str) -> RecordInSegment:
    """The record of ``checkpoint_id`` in the session's segment under ``root``."""
    return RecordInSegment(root, session, checkpoint_id)


def run_racers(target: Callable[..., None], root: Path, n: int, delay: float = 1.5) -> list[Any]:
    """Start ``n`` spawned processes running ``target(root, i, start, queue)`` released together at
    ``start`` (``delay`` seconds from now); return what each put on the queue."""
    ctx = mp.get_context("spawn")
    q: Any = ctx.Queue()
    start = time.time() + delay
    procs = [ctx.Process(target=target, args=(str(root), i, start, q)) for i in range(n)]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join(60)
    return [q.get(timeout=5) for _ in procs]
