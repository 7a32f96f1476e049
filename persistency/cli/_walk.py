"""Reading every checkpoint of a session in work linear in their number (``copy``, ``verify``, ``prune``).

A provider's ``get_checkpoint`` rebuilds a transcript from its chain of delta records, so loading
each of a session's n checkpoints one by one reads n(n+1)/2 records. Walking them oldest first, the
transcript just built for one checkpoint is the base of the next: with a record provider each record
is then read once, and its bases come from the transcripts already built. Any other provider (and any
record that does not fit the fast path) is loaded with ``get_checkpoint`` as before.

This leans on the record layer (`persistency._recordstore`, `persistency._codec`); if those change
shape, the walk falls back to ``get_checkpoint`` and stays correct, only slower.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from persistency.errors import PersistencyError
from persistency.models import Checkpoint
from persistency.provider import PersistencyStorageProvider

__all__ = ["iter_checkpoints"]

#: transcripts kept for the next checkpoints' bases (a straight chain needs one; a branch point, two)
_WINDOW = 4
#: keyframe records kept (their info and deltas, no messages) for the checkpoints that refer to them
_KEYFRAMES = 64


def iter_checkpoints(
    provider: PersistencyStorageProvider, session_id: str, checkpoint_ids: Iterable[str]
) -> Iterator[tuple[str, Checkpoint | PersistencyError]]:
    """Each checkpoint of ``checkpoint_ids`` (parents before children), materialized, or the error
    that loading it raised; one record read per checkpoint where the provider allows.

    The walk holds the provider's bulk-read scope for the session while it is suspended, so finish
    one walk before starting another on the same provider in the same thread (never zip two walks).
    """
    fast = _fast_loader(provider, session_id)
    with _session_view(provider, session_id):
        for cid in checkpoint_ids:
            try:
                loaded: Checkpoint | PersistencyError = (
                    fast(cid) if fast is not None else provider.get_checkpoint(session_id, cid))
            except PersistencyError as exc:
                loaded = exc
            yield cid, loaded


def _session_view(provider: PersistencyStorageProvider, session_id: str) -> AbstractContextManager[Any]:
    """The provider's bulk-read scope for one session (S3: one listing, packs fetched once), if it has one."""
    view = getattr(provider, "_viewing", None)
    if view is None:
        return nullcontext()
    try:
        return view(session_id)  # type: ignore[no-any-return]
    except TypeError:  # pragma: no cover - another signature
        return nullcontext()


def _fast_loader(provider: PersistencyStorageProvider, sid: str) -> Callable[[str], Checkpoint] | None:
    """A loader that builds each transcript on the previous ones, or None for a provider without records."""
    try:
        from persistency._codec import Record, materialize
        from persistency._recordstore import RecordStorageProvider
    except ImportError:  # pragma: no cover - the record layer moved
        return None
    if not isinstance(provider, RecordStorageProvider):
        return None
    record: Callable[..., Any] = provider._record
    built: OrderedDict[str, tuple[Any, list[dict[str, Any]]]] = OrderedDict()
    keyframes: OrderedDict[str, Any] = OrderedDict()

    def load(cid: str) -> Checkpoint:
        rec = record(sid, cid, messages=True)
        bases = {rec.base}  # ids the transcript is built from (need messages); others are keyframes

        def fetch(ref: str) -> Any:
            if ref in built:  # a transcript built already: its record stands as a base holding all of it
                kept, messages = built[ref]
                return Record(where=kept.where, info=kept.info, base=None, base_step=0,
                              messages=messages, deltas=kept.deltas)
            if ref in bases:
                older = record(sid, ref, messages=True)
                bases.add(older.base)
                return older
            # a keyframe: its deltas are enough; kept here, since many checkpoints share one and the
            # provider's cache may have let it go (another session's records pass through it too)
            frame = keyframes.get(ref)
            if frame is None:
                frame = keyframes[ref] = record(sid, ref)
                while len(keyframes) > _KEYFRAMES:
                    keyframes.popitem(last=False)
            else:
                keyframes.move_to_end(ref)
            return frame

        try:
            cp = materialize(rec, fetch)
        except (TypeError, AttributeError, RuntimeError):  # pragma: no cover - the codec changed shape
            cp = provider.get_checkpoint(sid, cid)
        built[cid] = (rec, cp.messages)
        while len(built) > _WINDOW:
            built.popitem(last=False)
        return cp

    return load
