"""A session's append-only segment: framing of entries and the scan that finds them (no I/O).

An entry is the record's own two checksummed JSON lines (`persistency.storage.framing`) followed
by one *end line* naming the record and its base::

    {"v":2,"isum":"...","info":{...},
    "psum":"...","payload":{...}}
    {"end":"000001-0000003"}

The end line names the record and its base: ``"base":null`` for a record stored whole, an id for
a base elsewhere in the file, and nothing when the base is the entry just before (the usual case).

An entry is written with one ``write`` in ``O_APPEND`` mode, so a crash can only leave a proper
prefix of the last entry (a *torn tail*): the scan ignores it, and the next writer truncates it.
Anything else (a flipped bit in a committed entry, the end line included) is damage: reading
the entry reports it as `CorruptCheckpointError` naming the checkpoint, and the intact records
around it stay readable (a line starting ``{"end":"`` is always an end line: record lines start
``{"v":`` or ``"psum"``, and JSON escapes every newline inside a string). The end line is fully
determined by the record, so a change to it is told apart from a tear.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field

from persistency.errors import CorruptCheckpointError, InvalidIdentifierError
from persistency.ids import validate_id
from persistency.storage.framing import info_json, split

__all__ = ["SEGMENT", "Entry", "SegmentIndex", "end_line", "entry_bytes", "scan"]

SEGMENT = "records.jsonl"
"""The segment's file name inside ``SESSION/checkpoints/`` (records of 0.1 sit beside it as ``ID.json``)."""

_END = b'{"end":"'
_BASE = b'","base":'
_LINE1 = b'{"v":2,"isum":"'
_LINE2 = b'"psum":"'
_ID_TAIL = re.compile(rb'[A-Za-z0-9._@+=-]*(?:"\}?)?')


@dataclass(frozen=True)
class Entry:
    """Where one record sits in the segment."""

    #: offset of the record's first byte
    start: int
    #: offset just past the record's second newline (the end line follows)
    stop: int
    #: the record its transcript extends, as the end line says (None: stored whole, or not known)
    base: str | None
    #: why the entry cannot be read (its bytes do not frame a record), or None
    damage: str | None = None


@dataclass
class SegmentIndex:
    """What a scan found in one segment file (identified by device and inode)."""

    dev: int
    ino: int
    #: offset just past the last entry scanned (a torn tail, if any, starts here)
    end: int = 0
    entries: dict[str, Entry] = field(default_factory=dict)
    #: a damaged tail left the file without a final newline: the next entry starts with one
    needs_newline: bool = False
    #: the id of the last entry scanned or appended (a short end line names it as the base)
    last: str | None = None


def end_line(checkpoint_id: str, base_id: str | None, last: str | None = None) -> bytes:
    """The line that commits a record (with its newline); short when the base is the entry before it."""
    cid = checkpoint_id.encode("ascii")
    if base_id is not None and base_id == last:
        return _END + cid + b'"}\n'
    base = b"null" if base_id is None else b'"' + base_id.encode("ascii") + b'"'
    return _END + cid + _BASE + base + b"}\n"


def entry_bytes(data: bytes, checkpoint_id: str, base_id: str | None, last: str | None = None) -> bytes:
    """The bytes appended for one record: its two lines and its end line."""
    if data.count(b"\n") != 2 or not data.endswith(b"\n"):
        raise ValueError("a record must be exactly two lines, each ending in a newline")
    return data + end_line(checkpoint_id, base_id, last)


_PREVIOUS = "\x00previous"
"""`_parse_end`'s base for a short end line: the entry before it in the file."""


def _stored_id(raw: bytes) -> str | None:
    try:
        return validate_id(raw.decode("ascii"), "stored checkpoint id")
    except (UnicodeDecodeError, InvalidIdentifierError):
        return None


def _parse_end(line: bytes) -> tuple[str, str | None] | None:
    """(checkpoint id, base id) of an end line (without its newline), or None if it is damaged."""
    if not line.startswith(_END) or not line.endswith(b"}"):
        return None
    body = line[len(_END):-1]
    if body.endswith(b'"') and body.count(b'"') == 1:  # {"end":"ID"}: the base is the entry before
        cid = _stored_id(body[:-1])
        return None if cid is None else (cid, _PREVIOUS)
    cid_raw, sep, rest = body.partition(_BASE)
    cid = _stored_id(cid_raw) if sep else None
    if cid is None:
        return None
    if rest == b"null":
        return cid, None
    if len(rest) < 3 or rest[:1] != b'"' or rest[-1:] != b'"':
        return None
    base = _stored_id(rest[1:-1])
    return None if base is None else (cid, base)


def _record_id(record: bytes) -> str | None:
    """The checkpoint id of two lines that frame an intact record (checksums checked), else None."""
    try:
        info, _ = split(record, "segment")
        cid = json.loads(info)["checkpoint_id"]
    except (CorruptCheckpointError, ValueError, KeyError, TypeError):
        return None
    return _stored_id(cid.encode("ascii", "replace")) if isinstance(cid, str) else None


def _prefix_compatible(data: bytes, start: bytes) -> bool:
    """True if ``data`` and ``start`` agree on their common length (a cut record line may be either)."""
    n = min(len(data), len(start))
    return data[:n] == start[:n]


def _torn(tail: bytes) -> bool:
    """True if ``tail`` (what follows the last end line) can be a proper prefix of one entry.

    No complete line: it must start like a record. One: it must be an intact info line, then the
    start of a payload line. Two: the record must check and what follows must be a prefix of its
    end line. (A single flipped byte in a committed last entry always fails
    one of these checks, so it is reported as damage, never dropped as a tear.)
    """
    lines = tail.split(b"\n")
    if len(lines) == 1:
        return _prefix_compatible(tail, _LINE1)
    if len(lines) == 2:
        try:
            info_json(lines[0], "segment")
        except CorruptCheckpointError:
            return False
        return _prefix_compatible(lines[1], _LINE2)
    if len(lines) > 3:
        return False
    cid = _record_id(lines[0] + b"\n" + lines[1] + b"\n")
    if cid is None:
        return False
    partial, start = lines[2], _END + cid.encode("ascii")
    head = start + _BASE
    if (head + b"null}").startswith(partial) or (start + b'"}').startswith(partial):
        return True
    return partial.startswith(head + b'"') and _ID_TAIL.fullmatch(partial[len(head) + 1:]) is not None


def _names(buf: bytes, line: tuple[int, int], cid: str) -> bool:
    """Cheap check that the record's info line is the one of ``cid`` (its checksum is checked on read)."""
    return buf.find(b'"checkpoint_id":"' + cid.encode("ascii") + b'"', line[0], line[1]) >= 0


def _add(index: SegmentIndex, cid: str, entry: Entry) -> None:
    if entry.base == _PREVIOUS:
        entry = Entry(entry.start, entry.stop, index.last, entry.damage)
    if cid in index.entries:
        entry = Entry(entry.start, entry.stop, None, f"checkpoint {cid!r} is stored twice in the segment")
    index.entries[cid] = entry
    index.last = cid


def _recover(buf: bytes, offset: int, lines: list[tuple[int, int]], named: str | None, index: SegmentIndex) -> None:
    """A block that is not two lines and an end line: index the intact records in it; the named one, if
    not among them, as damaged (so it is reported, never silently missing)."""
    found, named_too = set(), []
    for s, e in lines:  # an end line glued to a record line by a lost newline still names its record
        at = buf.find(_END, s + 1, e)
        if at > 0 and (parsed := _parse_end(buf[at:e].rstrip(b"\n"))) is not None:
            named_too.append(parsed[0])
    for (s1, e1), (s2, e2) in itertools.pairwise(lines):
        cid = _record_id(buf[s1:e1] + buf[s2:e2])
        if cid is not None and cid not in found:
            found.add(cid)
            _add(index, cid, Entry(offset + s1, offset + e2, None))
    lo, hi = (lines[0][0], lines[-1][1]) if lines else (0, 0)
    for cid in dict.fromkeys([*named_too, *([named] if named else [])]):
        if cid not in found:
            _add(index, cid, Entry(offset + lo, offset + hi, None, "its bytes in the segment are damaged"))


def scan(buf: bytes, offset: int, index: SegmentIndex) -> None:
    """Add the entries of ``buf`` (the segment's bytes from ``offset``) to ``index``; never raises.

    A torn tail is left out (``index.end`` stops before it). Damage is indexed, not raised: an
    entry whose bytes do not frame a record carries a ``damage`` reason that reading it reports,
    and the intact records around it stay readable.
    """
    pos = block = 0
    lines: list[tuple[int, int]] = []
    while (nl := buf.find(b"\n", pos)) >= 0:
        if buf.startswith(_END, pos):
            parsed = _parse_end(buf[pos:nl])
            if parsed is not None and len(lines) == 2 and _names(buf, lines[0], parsed[0]):
                _add(index, parsed[0], Entry(offset + lines[0][0], offset + lines[1][1], parsed[1]))
            else:
                _recover(buf, offset, lines, parsed[0] if parsed else None, index)
            lines, block = [], nl + 1
            index.end = offset + block
            index.needs_newline = False
        elif nl > pos:
            lines.append((pos, nl + 1))
        pos = nl + 1
    tail = buf[block:]
    if tail and not _torn(tail):
        if pos < len(buf):
            lines.append((pos, len(buf)))
        _recover(buf, offset, lines, None, index)
        index.end = offset + len(buf)
        index.needs_newline = not tail.endswith(b"\n")
