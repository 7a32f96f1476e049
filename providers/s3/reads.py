"""Reading a session from S3: one listing, then its packs and unpacked records fetched concurrently.

A public call (load, list) works on a `View` of the session: listed once, and the first read
fills it with every unpacked record and pack at once, so a chain walk never costs a GET per
step. A record this process wrote or read is recalled by its ETag, never served stale when the
listing shows another object under its key. Listing reads the indexes and, for unpacked records,
the info line alone (a ranged GET).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from persistency.errors import CheckpointNotFoundError, CorruptCheckpointError, PersistencyError
from persistency.ids import validate_id
from persistency.storage import LRUCache

from .formats import INDEX_SUFFIX, PACK_SUFFIX, Listing, PackCache, View, decode_index, decode_pack, uncarried
from .transport import S3Transport

__all__ = ["NAME_SEP", "PACKS", "RECORDS", "S3Reads"]

RECORDS = "checkpoints/"
PACKS = "packs/"
RECORD_SUFFIX = ".json"
NAME_SEP = "~"  # a pack is named FIRST~LAST; "~" is never part of an id
_INFO_RANGE = 512  # bytes read for a record's info line; read on if the line is longer
_VIEW: contextvars.ContextVar[View | None] = contextvars.ContextVar("persistency_s3_view", default=None)


class S3Reads(S3Transport):
    """Listings, packs, views and reads (state set up by `S3StorageProvider.__init__`)."""

    _root: str
    _recent: LRUCache
    _packs: PackCache
    #: (session, id) -> (ETag, records its object carries), so a second load needs no GET of them
    _carry_seen: LRUCache

    # -- keys ---------------------------------------------------------------------------------------------
    def _session_root(self, session_id: str) -> str:
        return f"{self._root}{session_id}/"

    def _record_key(self, session_id: str, checkpoint_id: str) -> str:
        return f"{self._root}{session_id}/{RECORDS}{checkpoint_id}{RECORD_SUFFIX}"

    def _pack_key(self, session_id: str, name: str, suffix: str) -> str:
        return f"{self._root}{session_id}/{PACKS}{name}{suffix}"

    def _where(self, session_id: str, checkpoint_id: str) -> str:
        return f"s3://{self._bucket}/{self._record_key(session_id, checkpoint_id)}"

    # -- listings, packs and indexes -------------------------------------------------------------------
    def _list_session(self, session_id: str, only_packs: bool = False) -> Listing:
        root = self._session_root(session_id)
        prefix = root + PACKS if only_packs else root
        objects, _ = self._s3(f"listing session {session_id!r}", self._alist, prefix)
        out = Listing()
        for obj in objects:
            rel = obj["Key"][len(root):]
            if rel.startswith(RECORDS) and rel.endswith(RECORD_SUFFIX):
                cid = rel[len(RECORDS):-len(RECORD_SUFFIX)]
                if cid and "/" not in cid:
                    out.records[cid] = int(obj.get("Size", 0))
                    out.etags[cid] = str(obj.get("ETag", ""))
            elif rel.startswith(PACKS):
                name = rel[len(PACKS):]
                if name.endswith(PACK_SUFFIX):
                    out.packs[name[:-len(PACK_SUFFIX)]] = str(obj.get("ETag", ""))
                elif name.endswith(INDEX_SUFFIX):
                    out.indexes[name[:-len(INDEX_SUFFIX)]] = str(obj.get("ETag", ""))
        return out

    def _uncached(self, session_id: str, names: dict[str, str], suffix: str) -> list[str]:
        """Keys of the named packs (or indexes) not in memory yet."""
        keys = [(self._pack_key(session_id, name, suffix), etag) for name, etag in names.items()]
        return [key for key, etag in keys if self._packs.get(key, etag) is None]

    def _load_packed(self, session_id: str, names: dict[str, str], suffix: str,
                     fetched: dict[str, bytes | None] | None = None) -> dict[str, bytes]:
        """Every entry of the named packs (or indexes): from memory, from ``fetched``, else fetched at once."""
        decode = decode_pack if suffix == PACK_SUFFIX else decode_index
        out: dict[str, bytes] = {}
        todo: list[tuple[str, str]] = []
        got: list[tuple[str, str, bytes | None]] = []
        for name, etag in sorted(names.items()):
            key = self._pack_key(session_id, name, suffix)
            cached = self._packs.get(key, etag)
            if cached is not None:
                out.update(cached)
            elif fetched is not None and key in fetched:
                got.append((key, etag, fetched[key]))
            else:
                todo.append((key, etag))
        if todo:
            blobs = self._s3(f"reading packs of session {session_id!r}", self._aget_many, [k for k, _ in todo])
            got.extend((key, etag, blob) for (key, etag), blob in zip(todo, blobs, strict=True))
        for key, etag, blob in got:
            if blob is None:
                continue  # deleted since the listing (the session is being deleted)
            entries = decode(blob, f"s3://{self._bucket}/{key}")
            self._packs.put(key, etag, entries)
            out.update(entries)
        return out

    @staticmethod
    def _covering(names: dict[str, str], ids: list[str]) -> dict[str, str]:
        """The packs whose id range (ids grow along a chain) can hold one of ``ids``."""
        out = {}
        for name, etag in names.items():
            first, _, last = name.partition(NAME_SEP)
            if any(first <= cid <= (last or first) for cid in ids):
                out[name] = etag
        return out

    def _indexed_infos(self, session_id: str, listing: Listing, ids: list[str]) -> dict[str, bytes]:
        """Info lines of packed ``ids`` from the indexes that can hold them (all of them as a fallback)."""
        names = {n: e for n, e in listing.indexes.items() if n in listing.packs}
        found = self._load_packed(session_id, self._covering(names, ids), INDEX_SUFFIX)
        if any(cid not in found for cid in ids):
            found.update(self._load_packed(session_id, names, INDEX_SUFFIX))
        return found

    def _find_packed(self, session_id: str, checkpoint_id: str) -> bytes:
        """The record of an id whose object has been emptied: it lives in a pack, found by the indexes."""
        listing = self._list_session(session_id, only_packs=True)
        names = {n: e for n, e in listing.indexes.items() if n in listing.packs}
        for group in (self._covering(names, [checkpoint_id]), names):
            for name, etag in sorted(group.items(), reverse=True):
                if checkpoint_id in self._load_packed(session_id, {name: etag}, INDEX_SUFFIX):
                    pack = self._load_packed(session_id, {name: listing.packs[name]}, PACK_SUFFIX)
                    if checkpoint_id in pack:
                        return pack[checkpoint_id]
        raise CorruptCheckpointError(
            f"{self._where(session_id, checkpoint_id)}: the record is empty and no pack holds it"
        )

    # -- the per-call view -------------------------------------------------------------------------------
    def _view(self, session_id: str) -> View | None:
        view = _VIEW.get()
        return view if view is not None and view.session_id == session_id else None

    @contextlib.contextmanager
    def _viewing(self, session_id: str) -> Iterator[View]:
        """One public call's view of a session: listed once, fetched once (a context variable, so it
        follows the call into worker threads and across awaits)."""
        current = self._view(session_id)
        if current is not None:
            yield current
            return
        token = _VIEW.set(View(session_id))
        try:
            yield _VIEW.get()  # type: ignore[misc]
        finally:
            _VIEW.reset(token)

    def _listing(self, view: View) -> Listing:
        if view.listing is None:
            view.listing = self._list_session(view.session_id)
        return view.listing

    def _fill(self, view: View) -> None:
        """Fetch, concurrently, every pack and every unpacked record of the session not yet in memory."""
        view.filled = True
        sid = view.session_id
        listing = self._listing(view)
        wanted = [cid for cid, size in listing.records.items()
                  if size > 0 and cid not in view.records]
        recent = {cid: self._recalled(sid, cid, listing.etags.get(cid)) for cid in wanted}
        view.records.update({cid: data for cid, data in recent.items() if data is not None})
        fetch = [cid for cid, data in recent.items() if data is None]
        packed = [cid for cid, size in listing.records.items() if size == 0]
        # only the packs that hold an emptied record: a stray or junk pack nothing needs is not read
        packs = self._covering({n: e for n, e in listing.packs.items() if n in listing.indexes}, packed)
        emptied = False
        # one concurrent round: the unpacked records and the packs not in memory
        keys = [self._record_key(sid, cid) for cid in fetch] + self._uncached(sid, packs, PACK_SUFFIX)
        fetched: dict[str, bytes | None] = {}
        if keys:
            fetched = dict(zip(keys, self._s3(f"reading session {sid!r}", self._aget_many, keys), strict=True))
        if fetch:
            blobs = [fetched[self._record_key(sid, cid)] for cid in fetch]
            for cid, blob in zip(fetch, blobs, strict=True):
                if blob:
                    view.records[cid] = self._own(view, cid, listing.etags.get(cid, ""), blob)
                elif blob is not None:
                    emptied = True  # packed since the listing
        if emptied or any(k.endswith(PACK_SUFFIX) and v is None for k, v in fetched.items()):
            fresh = self._list_session(sid, only_packs=True)  # packed or merged since the listing
            packs = {n: e for n, e in fresh.packs.items() if n in fresh.indexes}  # (all: what was emptied is unknown)
        for cid, data in self._load_packed(sid, packs, PACK_SUFFIX, fetched).items():
            view.records.setdefault(cid, data)

    def _own(self, view: View | None, checkpoint_id: str, etag: str, blob: bytes) -> bytes:
        """The record of a record object just fetched (remembered by its ETag); what it carries goes to
        ``view`` (records are immutable: a carried copy is the record itself)."""
        sid = view.session_id if view is not None else ""
        record, carried = uncarried(blob, f"s3://{self._bucket}/{self._record_key(sid, checkpoint_id)}")
        if view is not None:
            for cid, data in carried.items():
                view.records.setdefault(cid, data)
            self._remember(sid, checkpoint_id, etag, record)
            if carried:
                self._carry_seen.put((sid, checkpoint_id), (etag, carried))
        return record

    def _fetch_chain(self, view: View, head: str) -> bool:
        """One concurrent round for a chain: the head's object (with what it carries) and the packs that
        hold emptied records, but not the other unpacked records. False if the listing went stale."""
        sid = view.session_id
        listing = self._listing(view)
        packed = [cid for cid, size in listing.records.items() if size == 0]
        packs = self._covering({n: e for n, e in listing.packs.items() if n in listing.indexes}, packed)
        keys = self._uncached(sid, packs, PACK_SUFFIX)
        whole = listing.records.get(head, 0) > 0
        if whole and head not in view.records:
            recalled = self._recalled(sid, head, listing.etags.get(head))
            if recalled is not None:
                view.records[head] = recalled
                seen: tuple[str, dict[str, bytes]] | None = self._carry_seen.get((sid, head))
                if seen is not None and seen[0] == listing.etags.get(head):
                    for cid, data in seen[1].items():
                        view.records.setdefault(cid, data)
            else:
                keys.insert(0, self._record_key(sid, head))
        fetched: dict[str, bytes | None] = {}
        if keys:
            fetched = dict(zip(keys, self._s3(f"reading session {sid!r}", self._aget_many, keys), strict=True))
        head_key = self._record_key(sid, head)
        if head_key in fetched:
            blob = fetched.pop(head_key)
            if not blob:
                return False  # packed or deleted since the listing
            view.records[head] = self._own(view, head, listing.etags.get(head, ""), blob)
        if any(v is None for v in fetched.values()):
            return False  # a pack merged away since the listing
        for cid, data in self._load_packed(sid, packs, PACK_SUFFIX, fetched).items():
            view.records.setdefault(cid, data)
        return True

    def _remember(self, session_id: str, checkpoint_id: str, etag: str, data: bytes) -> None:
        self._recent.put((session_id, checkpoint_id), (etag, data))

    def _recalled(self, session_id: str, checkpoint_id: str, etag: str | None = None) -> bytes | None:
        """A record this process wrote or read, if its ETag still matches a listing (when one is given).

        The check keeps a session deleted and written again by another process from being served stale.
        """
        hit: tuple[str, bytes] | None = self._recent.get((session_id, checkpoint_id))
        if hit is None or (etag is not None and hit[0] != etag):
            return None
        return hit[1]

    # -- reading records and info lines --------------------------------------------------------------
    def _read(self, session_id: str, checkpoint_id: str) -> bytes:
        """A record's bytes: from the call's view, else memory (only what no listing contradicts), else S3."""
        view = self._view(session_id)
        trust_memory = True
        if view is not None:
            if checkpoint_id not in view.records and not view.filled:
                self._fill(view)
            data = view.records.get(checkpoint_id)
            if data is not None:
                return data
            # not in this call's listing: deleted by another writer, or written since; S3 decides
            trust_memory = view.listing is None or checkpoint_id in view.listing.records
        cached = self._recalled(session_id, checkpoint_id) if trust_memory else None
        if cached is None and trust_memory:
            cached = self._packs.find(self._session_root(session_id) + PACKS, PACK_SUFFIX, checkpoint_id)
        if cached is not None:
            return cached
        key = self._record_key(session_id, checkpoint_id)
        blob = self._s3(f"reading checkpoint {checkpoint_id!r} of session {session_id!r}", self._aget, key)
        if blob is None:
            raise CheckpointNotFoundError(
                f"no checkpoint {checkpoint_id!r} in session {session_id!r} (s3://{self._bucket}/{key})"
            )
        if not blob:
            return self._find_packed(session_id, checkpoint_id)
        return uncarried(blob, f"s3://{self._bucket}/{key}")[0]

    def _read_info_line(self, session_id: str, checkpoint_id: str) -> bytes:
        view = self._view(session_id)
        if view is None:
            with self._viewing(session_id) as view:
                return self._info_line(view, checkpoint_id)
        return self._info_line(view, checkpoint_id)

    def _info_line(self, view: View, checkpoint_id: str) -> bytes:
        """The info line of one record; fetches a window of its elders with it, since listing walks back."""
        if checkpoint_id in view.infos:
            return view.infos[checkpoint_id]
        sid = view.session_id
        listing = self._listing(view)
        ids = sorted(listing.records)
        if checkpoint_id in listing.records:
            end = ids.index(checkpoint_id) + 1
            window = [c for c in ids[max(0, end - view.info_window):end] if c not in view.infos]
            view.info_window *= 2
        else:
            window = [checkpoint_id]  # written after the listing
        known = {c: view.records.get(c) or self._recalled(sid, c, listing.etags.get(c)) for c in window}
        for cid, data in known.items():
            if data:
                view.infos[cid] = data.split(b"\n", 1)[0]
        unpacked = [c for c in window if c not in view.infos and listing.records.get(c, 1) > 0]
        packed = [c for c in window if c not in view.infos and listing.records.get(c, 1) == 0]
        if unpacked:
            keys = [self._record_key(sid, c) for c in unpacked]
            heads = self._s3(f"listing session {sid!r}", self._aget_many, keys, _INFO_RANGE)
            for cid, head in zip(unpacked, heads, strict=True):
                if head is None:
                    continue
                if head and b"\n" not in head and len(head) >= _INFO_RANGE:  # a long info line: read on
                    head = self._s3(f"listing session {sid!r}", self._aget, self._record_key(sid, cid))
                if head:
                    view.infos[cid] = head.split(b"\n", 1)[0]
                else:
                    packed.append(cid)  # packed since the listing
        if packed:
            for cid, line in self._indexed_infos(sid, listing, packed).items():
                view.infos.setdefault(cid, line)
            if any(c not in view.infos for c in packed):  # packed since the listing
                fresh = self._list_session(sid, only_packs=True)
                for cid, line in self._indexed_infos(sid, fresh, packed).items():
                    view.infos.setdefault(cid, line)
        if checkpoint_id not in view.infos:
            if checkpoint_id not in listing.records:
                raise CheckpointNotFoundError(f"no checkpoint {checkpoint_id!r} in session {sid!r}")
            raise CorruptCheckpointError(
                f"{self._where(sid, checkpoint_id)}: the record is empty and no pack index holds it"
            )
        return view.infos[checkpoint_id]

    def _list_ids(self, session_id: str) -> list[str]:
        view = self._view(session_id)
        listing = self._listing(view) if view is not None else self._list_session(session_id)
        return sorted(listing.records)

    def _list_session_ids(self) -> list[str]:
        _, prefixes = self._s3("listing sessions", self._alist, self._root, "/")
        out = []
        for prefix in prefixes:
            name = prefix[len(self._root):].rstrip("/")
            try:
                out.append(validate_id(name))
            except PersistencyError:
                continue  # not one of ours
        return sorted(out)
