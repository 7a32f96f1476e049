"""How a record sits in Redis: the info line in one hash, the payload (with a small header) in another.

A payload value is ``NONCE BASE ENC SUM\\n`` then the record's payload line, zlib-compressed when
that is smaller (ENC ``z``) or plain (``j``). NONCE is the writer's token (a retried save knows
itself by it), BASE the base pointer the load script follows without parsing JSON, SUM a checksum
of the header and of the stored body bytes, so that a change to any byte stored is detected (the
record's own checksums cover the decoded lines, but not the padding bits at the end of a deflate
stream, which zlib ignores). Values of 0.1 have no SUM and are read as they are.
"""

from __future__ import annotations

import hashlib
import zlib
from typing import Any

from persistency.errors import CorruptCheckpointError
from persistency.storage.codec import sum_hex

__all__ = ["base_of", "pack_payload", "rows", "signature", "text", "unpack_payload", "unpack_reply"]

_COMPRESS_MIN = 256


def text(value: bytes | str) -> str:
    """A reply item as text (ids are ASCII; anything else is shown, not trusted)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def signature(info_line: bytes, payload_value: bytes) -> str:
    """What the save script compares against the stored parent (``redis.sha1hex`` of its two values)."""
    return hashlib.sha1(info_line + b"\n" + payload_value).hexdigest()  # noqa: S324 - identity, not security


def pack_payload(nonce: str, base: str | None, body: bytes, compress: bool) -> bytes:
    """The stored payload value: the header, then ``body`` (compressed when that is smaller)."""
    encoding = b"j"
    if compress and len(body) > _COMPRESS_MIN:
        packed = zlib.compress(body, 1)
        if len(packed) < len(body):
            body, encoding = packed, b"z"
    head = f"{nonce} {base or '-'} ".encode() + encoding
    return head + b" " + sum_hex(b"redis-value", head, body) + b"\n" + body


def unpack_payload(value: bytes, where: str) -> bytes:
    """The payload line of a stored payload value (`pack_payload` undone, every byte checked)."""
    try:
        return _unpack(value)
    except _Damaged as exc:
        raise CorruptCheckpointError(f"{where}: {exc}") from exc.__cause__


class _Damaged(Exception):
    """Internal: why a payload value does not unpack (the caller names where it lives)."""


def _unpack(value: bytes) -> bytes:
    header, sep, body = value.partition(b"\n")
    parts = header.split(b" ")
    if not sep or len(parts) not in (3, 4):
        raise _Damaged("the payload's header is damaged")
    if len(parts) == 4 and sum_hex(b"redis-value", b" ".join(parts[:3]), body) != parts[3]:
        raise _Damaged("the stored payload fails its checksum")
    if parts[2] == b"z":
        try:
            return zlib.decompress(body)
        except zlib.error as exc:
            raise _Damaged(f"the compressed payload is damaged ({exc})") from exc
    if parts[2] != b"j":
        raise _Damaged(f"unknown payload encoding {parts[2]!r}")
    return body


def base_of(value: bytes) -> str | None:
    """The base pointer in a payload value's header (None for a transcript stored whole)."""
    parts = value.partition(b"\n")[0].split(b" ")
    return None if len(parts) < 2 or parts[1] == b"-" else text(parts[1])


def rows(reply: Any, where: Any, signed: int | None = None) -> tuple[dict[str, bytes], dict[str, str]]:
    """Record bytes by id, and the signatures of the first ``signed`` (None: all), from a load/fetch
    reply ``{ids, infos, payloads}``.

    ``where(id)`` names a record for messages. A record with one of its two values missing is
    damage (partial eviction, a crash of a non-atomic tool), never skipped. A signature is what a
    save of a child compares its parent against: a chain's head needs one, its bases do not.
    """
    out: dict[str, bytes] = {}
    sigs: dict[str, str] = {}
    if not reply:
        return out, sigs
    ids, infos, payloads = reply
    for i, (raw_id, info, payload) in enumerate(zip(ids, infos, payloads, strict=True)):
        cid = text(raw_id)
        if info is None and payload is None:
            continue
        if info is None or payload is None:
            part = "info" if info is None else "payload"
            raise CorruptCheckpointError(f"{where(cid)}: the record's {part} is missing (evicted or damaged)")
        try:
            out[cid] = info + b"\n" + _unpack(payload)
        except _Damaged as exc:  # where a record lives is formatted only for a message
            raise CorruptCheckpointError(f"{where(cid)}: {exc}") from exc.__cause__
        if signed is None or i < signed:
            sigs[cid] = signature(info, payload)
    return out, sigs


def unpack_reply(reply: Any, where: str) -> list[list[Any]]:
    """The ``[ids, infos, payloads]`` of a packed load reply (``packed``, ids, lengths, infos, payloads)."""
    try:
        _, ids_text, lens_text, infos, payloads = reply
        ids = ids_text.split(b" ")
        lens = [int(n) for n in lens_text.split(b" ")]
        if len(lens) != 2 * len(ids):
            raise ValueError("lengths do not match the ids")
        out_i: list[bytes | None] = []
        out_p: list[bytes | None] = []
        i = p = 0
        for k in range(0, len(lens), 2):
            n, m = lens[k], lens[k + 1]
            out_i.append(None if n < 0 else infos[i:i + n])
            out_p.append(None if m < 0 else payloads[p:p + m])
            i += max(n, 0)
            p += max(m, 0)
        if i != len(infos) or p != len(payloads):
            raise ValueError("lengths do not add up")
    except (TypeError, ValueError) as exc:
        raise CorruptCheckpointError(f"{where}: the server's reply to a load is malformed ({exc})") from exc
    return [list(ids), out_i, out_p]
