"""What the S3 provider stores besides records, and what it remembers of it (no I/O).

- A *pack* holds a chain segment's records whole; an *index* the same records' info lines.
  Format 2 (this version) frames a zlib body with a checksum of its own, so a changed byte
  anywhere in the object is detected (gzip's header is not covered by its CRC); packs of 0.1
  (gzip) are still read.
- A record object may *carry* the records of its chain since the last pack (`carried`): its own
  two lines, then a pack of them, so loading the latest checkpoint is one GET for what is not
  packed yet.
- `Listing`, `PackCache` and `View`: what one listing found, decoded packs by ETag, and what
  one public call has fetched of a session.
"""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from persistency.errors import CorruptCheckpointError
from persistency.storage.codec import sum_hex

__all__ = ["INDEX_SUFFIX", "PACK_SUFFIX", "Listing", "PackCache", "View", "carried", "decode_index", "decode_pack",
           "encode_index", "encode_pack", "uncarried"]

PACK_SUFFIX = ".pack.gz"
INDEX_SUFFIX = ".index.gz"
_PACK_FORMAT = "persistency-pack/1"
_INDEX_FORMAT = "persistency-index/1"
_FRAME = b"persistency-pack/2 "


def _frame(raw: bytes, level: int = 6) -> bytes:
    body = zlib.compress(raw, level)
    return _FRAME + sum_hex(b"s3-pack", body) + b"\n" + body


def _unframe(data: bytes, where: str) -> bytes:
    """The raw bytes of a pack or index object: format 2 checked against its checksum, 0.1's gunzipped."""
    if data.startswith(_FRAME):
        head, sep, body = data.partition(b"\n")
        if not sep or head[len(_FRAME):] != sum_hex(b"s3-pack", body):
            raise CorruptCheckpointError(f"{where}: the object fails its checksum (it is damaged)")
        try:
            return zlib.decompress(body)
        except zlib.error as exc:
            raise CorruptCheckpointError(f"{where}: not a valid zlib stream ({exc})") from exc
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise CorruptCheckpointError(f"{where}: not a valid pack ({exc})") from exc


def _split(data: bytes, where: str) -> tuple[dict[str, Any], bytes]:
    """A pack or index object's JSON header and body; `CorruptCheckpointError` if damaged."""
    head, sep, body = _unframe(data, where).partition(b"\n")
    try:
        header = json.loads(head) if sep else None
    except ValueError as exc:
        raise CorruptCheckpointError(f"{where}: header is not JSON ({exc})") from exc
    ids = header.get("ids") if isinstance(header, dict) else None
    if not isinstance(header, dict) or not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise CorruptCheckpointError(f"{where}: header has no list of checkpoint ids")
    return header, body


def encode_pack(ids: list[str], records: list[bytes], level: int = 6) -> bytes:
    """A pack object holding ``records`` (whole) of ``ids`` (``level``: zlib's)."""
    header = json.dumps({"format": _PACK_FORMAT, "ids": ids, "sizes": [len(r) for r in records]})
    return _frame(header.encode() + b"\n" + b"".join(records), level)


def encode_index(ids: list[str], infos: list[bytes]) -> bytes:
    """An index object holding the info lines of ``ids``."""
    header = json.dumps({"format": _INDEX_FORMAT, "ids": ids})
    return _frame(header.encode() + b"\n" + b"\n".join(infos))


def decode_pack(data: bytes, where: str) -> dict[str, bytes]:
    """The records of a pack object, by id."""
    header, body = _split(data, where)
    ids, sizes = header["ids"], header.get("sizes")
    if (header.get("format") != _PACK_FORMAT or not isinstance(sizes, list) or len(sizes) != len(ids)
            or not all(isinstance(s, int) and s > 0 for s in sizes) or sum(sizes) != len(body)):
        raise CorruptCheckpointError(f"{where}: pack header does not match its body")
    out: dict[str, bytes] = {}
    pos = 0
    for cid, size in zip(ids, sizes, strict=True):
        out[cid] = body[pos:pos + size]
        pos += size
    return out


def carried(record: bytes, ids: list[str], records: list[bytes]) -> bytes:
    """A record object: ``record`` (two lines), then, if any, a pack of the chain records it carries."""
    return record + encode_pack(ids, records, 1) if ids else record  # written at every save: zlib's fastest


def uncarried(data: bytes, where: str) -> tuple[bytes, dict[str, bytes]]:
    """A record object's own record and the records it carries (none for a plain record or one of 0.1)."""
    end = data.find(b"\n", data.find(b"\n") + 1) + 1
    if end <= 0 or end == len(data):
        return data, {}
    if not data.startswith(_FRAME, end):
        raise CorruptCheckpointError(f"{where}: bytes after the record that are not a pack (the object is damaged)")
    return data[:end], decode_pack(data[end:], where)


def decode_index(data: bytes, where: str) -> dict[str, bytes]:
    """The info lines of an index object, by id."""
    header, body = _split(data, where)
    lines = body.split(b"\n") if body else []
    if header.get("format") != _INDEX_FORMAT or len(lines) != len(header["ids"]):
        raise CorruptCheckpointError(f"{where}: index header does not match its body")
    return dict(zip(header["ids"], lines, strict=True))


@dataclass
class Listing:
    """One listing of a session: record ids (with sizes; 0 = packed) and packs (name -> ETag)."""

    records: dict[str, int] = field(default_factory=dict)
    etags: dict[str, str] = field(default_factory=dict)
    packs: dict[str, str] = field(default_factory=dict)
    indexes: dict[str, str] = field(default_factory=dict)


class PackCache:
    """Decoded packs and indexes by (key, ETag), bounded in bytes: they never change once written."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._data: OrderedDict[tuple[str, str], dict[str, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _size(entries: dict[str, bytes]) -> int:
        return sum(len(v) for v in entries.values())

    def get(self, key: str, etag: str) -> dict[str, bytes] | None:
        with self._lock:
            entries = self._data.get((key, etag))
            if entries is not None:
                self._data.move_to_end((key, etag))
            return entries

    def put(self, key: str, etag: str, entries: dict[str, bytes]) -> None:
        with self._lock:
            old = self._data.pop((key, etag), None)
            if old is not None:
                self._bytes -= self._size(old)
            self._data[(key, etag)] = entries
            self._bytes += self._size(entries)
            while self._bytes > self._max_bytes and len(self._data) > 1:
                _, evicted = self._data.popitem(last=False)
                self._bytes -= self._size(evicted)

    def find(self, prefix: str, suffix: str, checkpoint_id: str) -> bytes | None:
        """The entry for ``checkpoint_id`` in any cached object under ``prefix`` ending in ``suffix``."""
        with self._lock:
            for (key, _), entries in reversed(self._data.items()):
                if key.startswith(prefix) and key.endswith(suffix) and checkpoint_id in entries:
                    return entries[checkpoint_id]
        return None

    def drop(self, prefix: str) -> None:
        """Forget every object under ``prefix`` (a deleted session)."""
        with self._lock:
            for k in [k for k in self._data if k[0].startswith(prefix)]:
                self._bytes -= self._size(self._data.pop(k))


class View:
    """What one public call has fetched of one session, so a chain walk never costs a GET per step."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.listing: Listing | None = None
        self.records: dict[str, bytes] = {}
        self.infos: dict[str, bytes] = {}
        self.filled = False
        self.info_window = 16
