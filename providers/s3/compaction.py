"""Compaction on S3: packs of chain segments, merged in levels, so a long session stays a few objects.

Whenever a chain's step count crosses a multiple of ``pack_every``, the writer that won that
checkpoint writes the chain segment since the previous crossing of the level above as one pack and
one index (both create-only), empties the records they hold, and deletes the packs the new one
replaces: packs are cumulative within a level, so a chain is at most one pack per level (two below
``pack_every`` x 256 steps) and a load reads that many. The records since the last crossing ride
along in the newest record's object (`formats.carried`).
A pack is complete before any record it holds is emptied, so every acknowledged checkpoint is
readable at every instant; a writer killed mid-compaction leaves some records both whole and
packed (a few extra bytes, never a loss).
"""

from __future__ import annotations

import logging

from .formats import INDEX_SUFFIX, PACK_SUFFIX, encode_index, encode_pack
from .reads import NAME_SEP, S3Reads

__all__ = ["FANOUT", "S3Compaction"]

logger = logging.getLogger("persistency.s3")
FANOUT = 16  # a level-n+1 pack merges the chain of 16 level-n packs


class S3Compaction(S3Reads):
    """Packing and merging (``pack_every`` set up by `S3StorageProvider.__init__`)."""

    _pack_every: int

    def _level(self, session_id: str, checkpoint_id: str) -> tuple[int, str | None]:
        """The highest pack level whose boundary the record's step crosses from its base (-1: none); its base.

        Level 0 boundaries are the multiples of ``pack_every``; level n+1 ones are every `FANOUT`-th
        boundary of level n. The winner of a record that crosses level n packs the chain segment back
        to the previous crossing of level n or higher.
        """
        rec = self.decode_stored(session_id, checkpoint_id, self._read(session_id, checkpoint_id))
        step, base_step = int(rec.info["step"]), rec.base_step
        level, size = -1, self._pack_every
        while step // size > base_step // size:
            level += 1
            size *= FANOUT
        return level, rec.base

    def _maybe_pack(self, session_id: str, checkpoint_id: str) -> bool:
        """Pack behind ``checkpoint_id`` if its step crosses a boundary; True if it did."""
        level, base = self._level(session_id, checkpoint_id)
        if level < 0:
            return False
        # Read what the pack replaces in one round: the writer usually holds it all in memory (the
        # records it wrote, the pack it wrote last), so this costs the listing.
        with self._viewing(session_id) as view:
            self._fill(view)
            self._pack_segment(session_id, checkpoint_id, level, base)
        return True

    def _pack_segment(self, session_id: str, checkpoint_id: str, level: int, base: str | None) -> None:
        """Pack the chain from ``checkpoint_id`` back to the previous crossing of a level above ``level``
        (cumulative: the new pack replaces the ones of ``level`` and below since then, so a chain is
        at most one pack per level)."""
        segment = [checkpoint_id]
        whole = 1  # the newest records, after the previous level-0 crossing, are still whole objects
        packed_below = False
        cap = 4 * self._pack_every * FANOUT**(level + 1)
        while base is not None and len(segment) < cap:
            older_level, older_base = self._level(session_id, base)
            if older_level > level:
                break  # the previous pack of a higher level ends there
            packed_below = packed_below or older_level >= 0  # from there back, smaller packs hold them
            segment.append(base)
            whole += 0 if packed_below else 1
            base = older_base
        if len(segment) < 2:
            return
        segment.reverse()
        tail = segment[-whole:]
        view = self._view(session_id)
        if view is not None and view.listing is not None:  # a merge: also empty what a crash left whole
            tail = [cid for cid in segment if view.listing.records.get(cid, 1) > 0]
        records = [self._read(session_id, cid) for cid in segment]
        name = f"{segment[0]}{NAME_SEP}{segment[-1]}"
        self._write_pack(session_id, name, segment, records, tail)
        self._drop_packs_within(session_id, set(segment), keep=name)

    def _write_pack(self, session_id: str, name: str, ids: list[str], records: list[bytes], empty: list[str]) -> None:
        """Pack, then index (both create-only), then empty the records: each step leaves every record readable."""
        infos = [r.split(b"\n", 1)[0] for r in records]
        pack, index = encode_pack(ids, records), encode_index(ids, infos)
        pack_key = self._pack_key(session_id, name, PACK_SUFFIX)
        index_key = self._pack_key(session_id, name, INDEX_SUFFIX)
        what = f"packing session {session_id!r}"
        etag = self._s3(what, self._aput, pack_key, pack, True)
        if etag is not None:
            self._packs.put(pack_key, etag, dict(zip(ids, records, strict=True)))
        etag = self._s3(what, self._aput, index_key, index, True)
        if etag is not None:
            self._packs.put(index_key, etag, dict(zip(ids, infos, strict=True)))
        keys = [self._record_key(session_id, cid) for cid in empty]
        self._s3(what, self._agather, [self._aput(k, b"", False) for k in keys])

    def _drop_packs_within(self, session_id: str, ids: set[str], keep: str) -> None:
        """Delete the smaller packs a merged pack now holds (readers that listed them fall back to it)."""
        listing = self._list_session(session_id, only_packs=True)
        doomed = []
        for name in set(listing.packs) | set(listing.indexes):
            first, _, last = name.partition(NAME_SEP)
            if name != keep and first in ids and last in ids:
                doomed += [self._pack_key(session_id, name, PACK_SUFFIX),
                           self._pack_key(session_id, name, INDEX_SUFFIX)]
        if doomed:
            failed = self._s3(f"merging packs of session {session_id!r}", self._adelete_keys, sorted(doomed))
            if failed:
                logger.warning("S3 %s: %d merged packs not deleted: %s", self._display, len(failed), failed[:3])
