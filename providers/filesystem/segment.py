"""A session's append-only segment: framing of entries and the scan that finds them (no I/O).

An entry is the record's own two checksummed JSON lines (`persistency.storage.framing`) followed
by one *end line* that commits it and names it::

    {"v":2,"isum":"...","info":{"schema_version":1,"checkpoint_id":"000001-0000003",...},
    "psum":"...","payload":{...}}
    {"end":"000001-0000003"}

An entry is written with one ``write`` in ``O_APPEND`` mode, so a crash can only leave a proper
prefix of the last entry (a *torn tail*): the scan ignores it, and the next writer truncates it.
Anything else is damage: every byte of an entry is checked, the record's by its checksums when it
is decoded, the end line here (it is fully determined by the record: it must name the id the
record's info line holds). An entry that does not scan as two lines and its end line marks every
record in it damaged (reading one raises `CorruptCheckpointError` naming it), and the records
around it stay readable: a line starting ``{"end":"`` is always an end line (record lines start
``{"v":`` or ``"psum"``, and JSON escapes every newline inside a string).

Where each record's transcript comes from (its base) is read from the record's own bytes, as a
hint for loading a whole chain in one read; the base's plan checks it and reads what is missing.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from typing import NamedTuple

from persistency.errors import CorruptCheckpointError
from persistency.storage.framing import info_json, split

__all__ = ["SEGMENT", "Entry", "SegmentIndex", "end_line", "entry_bytes", "scan"]

SEGMENT = "records.jsonl"
"""The segment's file name inside ``SESSION/checkpoints/`` (records of 0.1 sit beside it as ``ID.json``)."""

_END = b'{"end":"'
_END_TAIL = b'"}'
_LINE1 = b'{"v":2,"isum":"'
_LINE2 = b'"psum":"'
_EXPLICIT_BASE = b'","payload":{"format":2,"base":'
_PARENT = b'"parent_id":"'
_ID = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._@+=-]{0,127}")
_DAMAGED = "its bytes in the segment are damaged"
# One whole entry as the writer appends it: a record line, a payload line, its end line. The scan takes
# entries of this shape in one match each and hands anything else to the line-by-line scan.
_WHOLE = re.compile(rb'\{"v":2,"isum":"[^\n]*\n"psum":"[^\n]*\n\{"end":"([^"\n]*)"\}\n')


class Entry(NamedTuple):
    """Where one record sits in the segment (a tuple: a scan makes one per record)."""

    #: offset of the record's first byte
    start: int
    #: offset just past the record's second newline (the end line follows)
    stop: int
    #: the record its transcript extends, as its bytes say (a hint; None: stored whole or not known)
    base: str | None
    #: why the entry cannot be read, or None
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


def end_line(checkpoint_id: str) -> bytes:
    """The line that commits a record (with its newline)."""
    return _END + checkpoint_id.encode("ascii") + _END_TAIL + b"\n"


def entry_bytes(data: bytes, checkpoint_id: str) -> bytes:
    """The bytes appended for one record: its two lines and its end line."""
    if data.count(b"\n") != 2 or not data.endswith(b"\n"):
        raise ValueError("a record must be exactly two lines, each ending in a newline")
    return data + end_line(checkpoint_id)


def _stored_id(raw: bytes) -> str | None:
    """``raw`` as an id if it is a valid one (the rules of `persistency.ids.validate_id`), else None."""
    if _ID.fullmatch(raw) is None or b".." in raw:
        return None
    return raw.decode("ascii")


def _parse_end(line: bytes) -> str | None:
    """The checkpoint id of an end line (without its newline), or None if it is damaged."""
    if not line.endswith(_END_TAIL):
        return None
    return _stored_id(line[len(_END):-len(_END_TAIL)])


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
    end line. (A single flipped byte in a committed last entry always fails one of these checks,
    so it is reported as damage, never dropped as a tear.)
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
    return cid is not None and end_line(cid)[:-1].startswith(lines[2])


def _names(buf: bytes, line: tuple[int, int], cid: str) -> bool:
    """Cheap check that the record's info line is the one of ``cid`` (its checksum is checked on read)."""
    return buf.find(b'"checkpoint_id":"' + cid.encode("ascii") + b'"', line[0], line[1]) >= 0


def _base_hint(buf: bytes, line1: tuple[int, int], line2: tuple[int, int]) -> str | None:
    """The record's base as its bytes say: an explicit ``base`` first in the payload, else its parent."""
    at = buf.find(_EXPLICIT_BASE, line2[0], min(line2[1], line2[0] + 64))
    if at >= 0:
        start = at + len(_EXPLICIT_BASE)
        if buf.startswith(b'"', start):
            return _stored_id(buf[start + 1:buf.find(b'"', start + 1, start + 132)])
        return None
    at = buf.find(_PARENT, line1[0], line1[1])
    if at < 0:
        return None
    start = at + len(_PARENT)
    return _stored_id(buf[start:buf.find(b'"', start, start + 130)])


def _add(index: SegmentIndex, cid: str, entry: Entry) -> None:
    if cid in index.entries:
        entry = Entry(entry.start, entry.stop, None, f"checkpoint {cid!r} is stored twice in the segment")
    index.entries[cid] = entry


def _damaged(buf: bytes, offset: int, lines: list[tuple[int, int]], named: str | None, index: SegmentIndex) -> None:
    """A block that is not two lines and their end line: every record it names or holds is damaged
    (reported when read, never silently missing or silently served)."""
    ids = [] if named is None else [named]
    for s, e in lines:  # an end line glued to a record line by a lost newline still names its record
        at = buf.find(_END, s + 1, e)
        if at > 0 and (cid := _parse_end(buf[at:e].rstrip(b"\n"))) is not None:
            ids.append(cid)
    for (s1, e1), (s2, e2) in itertools.pairwise(lines):
        cid = _record_id(buf[s1:e1] + buf[s2:e2])
        if cid is not None:
            ids.append(cid)
    lo, hi = (lines[0][0], lines[-1][1]) if lines else (0, 0)
    for cid in dict.fromkeys(ids):
        index.entries[cid] = Entry(offset + lo, offset + hi, None, _DAMAGED)


def scan(buf: bytes, offset: int, index: SegmentIndex) -> None:
    """Add the entries of ``buf`` (the segment's bytes from ``offset``) to ``index``; never raises.

    A torn tail is left out (``index.end`` stops before it). Damage is indexed, not raised: an
    entry that does not scan carries a ``damage`` reason that reading it reports.
    """
    pos = _scan_whole(buf, offset, index)
    if pos < len(buf):
        _scan_lines(buf, pos, offset, index)


def _scan_whole(buf: bytes, offset: int, index: SegmentIndex) -> int:
    """Index the leading run of well-formed entries of ``buf`` (one regular-expression match each,
    the same checks as `_scan_lines`); return where that run ends."""
    pos = 0
    match = _WHOLE.match
    entries = index.entries
    while (m := match(buf, pos)) is not None:
        raw = m.group(1)
        cid = _stored_id(raw)
        stop = m.start(1) - len(_END)
        nl = buf.index(b"\n", pos)
        line1, line2 = (pos, nl + 1), (nl + 1, stop)
        if cid is None or cid in entries or buf.find(b'"checkpoint_id":"' + raw + b'"', pos, nl + 1) < 0:
            break  # damage or a duplicate: the line-by-line scan reports it
        # the base hint, inline (`_base_hint`): the usual record names no explicit base, and its parent
        explicit = buf.startswith(_EXPLICIT_BASE, nl + 1 + len(_LINE2) + 16)
        base = _base_hint(buf, line1, line2) if explicit else None
        if not explicit and (at := buf.find(_PARENT, pos, nl)) >= 0:
            at += len(_PARENT)
            base = _stored_id(buf[at:buf.find(b'"', at, at + 130)])
        entries[cid] = Entry(offset + pos, offset + stop, base)
        pos = m.end()
        index.end = offset + pos
        index.needs_newline = False
    return pos


def _scan_lines(buf: bytes, pos: int, offset: int, index: SegmentIndex) -> None:
    """The general scan, line by line from ``pos`` (an entry boundary): damage, torn tails, blank lines."""
    block = pos
    lines: list[tuple[int, int]] = []
    while (nl := buf.find(b"\n", pos)) >= 0:
        if buf.startswith(_END, pos):
            cid = _parse_end(buf[pos:nl])
            if cid is not None and len(lines) == 2 and _names(buf, lines[0], cid):
                _add(index, cid, Entry(offset + lines[0][0], offset + lines[1][1],
                                       _base_hint(buf, lines[0], lines[1])))
            else:
                _damaged(buf, offset, lines, cid, index)
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
        _damaged(buf, offset, lines, None, index)
        index.end = offset + len(buf)
        index.needs_newline = not tail.endswith(b"\n")
