"""Checksummed framing of a record's two lines, with no I/O.

A format-2 record is one JSON object on two lines, each line carrying a checksum of its bytes::

    {"v":2,"isum":"<16 hex>","info":{...},
    "psum":"<16 hex>","payload":{...}}

``isum`` covers the info JSON, so a listing that reads the first line only still detects damage;
``psum`` covers the info JSON and the payload JSON, so a payload moved onto another record fails
too. Everything else on the lines is fixed text checked byte for byte, so a change anywhere in a
record (one flipped bit) is a `CorruptCheckpointError`. The checksum is BLAKE2b (64 bits): it
detects damage, not tampering; encryption (`persistency.encryption`) authenticates against a
key. Records of format 1 (0.1) start with ``{"info":`` and carry no checksum; they are read as
they are.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

from persistency.errors import CorruptCheckpointError

__all__ = ["base_hint", "frame", "info_json", "is_legacy", "split", "split_many", "sum_hex"]

_L1 = b'{"v":2,"isum":"'
_L1_MID = b'","info":'
_L1_END = b","
_L2 = b'"psum":"'
_L2_MID = b'","payload":'
_L2_END = b"}"
_SUM_LEN = 16
_LEGACY = b'{"info":'


def sum_hex(*parts: bytes) -> bytes:
    """The 16-hex-digit checksum of ``parts`` (joined with NUL, which JSON text never holds)."""
    return hashlib.blake2b(b"\x00".join(parts), digest_size=8).hexdigest().encode("ascii")


def frame(info: bytes, payload: bytes) -> tuple[bytes, bytes]:
    """The two lines (without newlines) of a record holding ``info`` and ``payload`` JSON.

    The checksums are `sum_hex` of ``(b"info", info)`` and ``(b"record", info, payload)``, fed to the
    hash piece by piece (no joined copy of the payload)."""
    isum = hashlib.blake2b(b"info\x00", digest_size=8)
    isum.update(info)
    psum = hashlib.blake2b(b"record\x00", digest_size=8)
    psum.update(info)
    psum.update(b"\x00")
    psum.update(payload)
    line1 = b"".join((_L1, isum.hexdigest().encode("ascii"), _L1_MID, info, _L1_END))
    line2 = b"".join((_L2, psum.hexdigest().encode("ascii"), _L2_MID, payload, _L2_END))
    return line1, line2


def is_legacy(data: bytes) -> bool:
    """True for a format-1 record (written by 0.1, no checksums)."""
    return data.startswith(_LEGACY)


def _unwrap(line: bytes, parts: tuple[bytes, bytes, bytes], what: str, where: str) -> tuple[bytes, bytes]:
    """(stored checksum, JSON) of a line ``START SUM MID JSON END``, its fixed text checked byte for byte."""
    start, mid, end = parts
    body = line[len(start) + _SUM_LEN + len(mid):len(line) - len(end)]
    if not (line.startswith(start) and line.endswith(end)) or \
            line[len(start) + _SUM_LEN:len(start) + _SUM_LEN + len(mid)] != mid:
        raise CorruptCheckpointError(f"{where}: the {what} line is damaged (not a checkpoint record line)")
    return line[len(start):len(start) + _SUM_LEN], body


def info_json(line: bytes, where: str) -> bytes:
    """The info JSON of a format-2 first line, checked against its checksum."""
    stored, info = _unwrap(line, (_L1, _L1_MID, _L1_END), "info", where)
    if sum_hex(b"info", info) != stored:
        raise CorruptCheckpointError(f"{where}: the info line fails its checksum (the record is damaged)")
    return info


def split(data: bytes, where: str) -> tuple[bytes, bytes]:
    """The (info JSON, payload JSON) of format-2 record bytes, both checked against their checksums."""
    line1, nl, line2 = data.partition(b"\n")
    if line2.endswith(b"\n"):  # the final newline is optional: a backend may store the lines apart
        line2 = line2[:-1]
    if not nl or b"\n" in line2:
        raise CorruptCheckpointError(f"{where}: not a two-line checkpoint record")
    info = info_json(line1, where)
    stored, payload = _unwrap(line2, (_L2, _L2_MID, _L2_END), "payload", where)
    if sum_hex(b"record", info, payload) != stored:
        raise CorruptCheckpointError(f"{where}: the record fails its checksum (it is damaged)")
    return info, payload


_I0 = len(_L1)
_I1 = _I0 + _SUM_LEN
_I2 = _I1 + len(_L1_MID)
_P0 = len(_L2)
_P1 = _P0 + _SUM_LEN
_P2 = _P1 + len(_L2_MID)


def split_many(items: list[tuple[str, bytes]], where: Callable[[str], str]) -> tuple[list[bytes], list[bytes]]:
    """`split` of many format-2 records: their (info JSONs, payload JSONs), every checksum checked.

    The common case is checked inline (the same fixed text and the same two checksums as `split`);
    a record that fails any of it goes through `split`, which raises naming ``where(id)``.
    """
    infos: list[bytes] = []
    payloads: list[bytes] = []
    b2 = hashlib.blake2b
    for cid, data in items:
        nl = data.find(b"\n")
        end = len(data) - 1 if data.endswith(b"\n") else len(data)
        view = memoryview(data)  # the checksums hash slices of the record in place, without copies
        info, payload = view[_I2:nl - 1], view[nl + 1 + _P2:end - 1]
        ok = not (nl < _I2 or not data.startswith(_L1) or data[_I1:_I2] != _L1_MID or data[nl - 1:nl] != _L1_END
                  or data[nl + 1:nl + 1 + _P0] != _L2 or data[nl + 1 + _P1:nl + 1 + _P2] != _L2_MID
                  or data[end - 1:end] != _L2_END or end <= nl + 1 + _P2 or data.find(b"\n", nl + 1, end) >= 0)
        if ok:
            isum = b2(b"info\x00", digest_size=8)
            isum.update(info)
            psum = b2(b"record\x00", digest_size=8)
            psum.update(info)
            psum.update(b"\x00")
            psum.update(payload)
            ok = isum.hexdigest().encode() == data[_I0:_I1] and \
                psum.hexdigest().encode() == data[nl + 1 + _P0:nl + 1 + _P1]
        if ok:
            infos.append(info.tobytes())
            payloads.append(payload.tobytes())
        else:
            good_info, good_payload = split(data, where(cid))
            infos.append(good_info)
            payloads.append(good_payload)
    return infos, payloads


_EXPLICIT_BASE = b'","payload":{"format":2,"base":'
_PARENT = b'"parent_id":"'
_HINT_ID = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._@+=-]{0,127}")


def _hint_id(raw: bytes) -> str | None:
    return raw.decode("ascii") if _HINT_ID.fullmatch(raw) is not None and b".." not in raw else None


def base_hint(record: bytes) -> str | None:
    """The base a record's bytes name, read without decoding: its explicit ``base``, else its parent.

    A hint for a backend that walks a chain before handing it over (the plan checks every record);
    None for a record stored whole, or bytes that do not say.
    """
    nl = record.find(b"\n")
    if nl < 0:
        return None
    at = record.find(_EXPLICIT_BASE, nl + 1, nl + 1 + len(_L2) + _SUM_LEN + len(_EXPLICIT_BASE))
    if at >= 0:
        start = at + len(_EXPLICIT_BASE)
        end = record.find(b'"', start + 1, start + 132)
        return _hint_id(record[start + 1:end]) if record.startswith(b'"', start) and end > 0 else None
    at = record.find(_PARENT, 0, nl)
    if at < 0:
        return None
    start = at + len(_PARENT)
    end = record.find(b'"', start, start + 130)
    return _hint_id(record[start:end]) if end > 0 else None
