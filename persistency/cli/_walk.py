"""What ``copy``, ``verify`` and ``prune`` share to stay linear in a session's length.

Reading: the provider's public `PersistencyStorageProvider.iter_checkpoints`, which a
`persistency.storage.StorageBackend` implements by reading each record once (and any other provider
by ``get_checkpoint`` per id: correct, only slower). Writing: batches through
`StorageBackend.save_checkpoints` (one sync per batch where the backend can), else one by one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from persistency.errors import PersistencyError
from persistency.models import Checkpoint
from persistency.provider import PersistencyStorageProvider
from persistency.storage import StorageBackend

__all__ = ["SAVE_BATCH", "iter_checkpoints", "save_batch"]

#: checkpoints a copy stores per `save_batch` (a Ctrl-C loses at most the batch being written)
SAVE_BATCH = 128


def iter_checkpoints(
    provider: PersistencyStorageProvider, session_id: str,
    checkpoint_ids: Iterable[str] | None = None,
) -> Iterator[tuple[str, Checkpoint | PersistencyError]]:
    """Each checkpoint of ``checkpoint_ids`` (parents before children; None: all) or the error loading it raises."""
    return provider.iter_checkpoints(session_id, checkpoint_ids)


def save_batch(dst: PersistencyStorageProvider, checkpoints: Sequence[Checkpoint]) -> None:
    """Store ``checkpoints`` (parents first) create-only: one batch on a storage backend, else one by one."""
    if isinstance(dst, StorageBackend):
        dst.save_checkpoints(checkpoints)
        return
    for cp in checkpoints:
        dst.save_checkpoint(cp)
