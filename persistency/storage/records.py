"""The record model: what a backend stores (bytes) and what the codec reads out of them.

A *record* is one checkpoint's bytes. It stores only what is new since its base (the messages
appended since the parent, the state keys that changed against the nearest keyframe), so a
save costs the same at step 1,000 as at step 10. Backends never parse records: they store the
bytes `NewRecord` hands them and give them back; the codec (`persistency.storage.codec`) does
the rest, checksums and encryption included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["FORMAT", "LEGACY_FORMAT", "Lineage", "NewRecord", "Record"]

FORMAT = 2
"""The record format this version writes: checksummed lines (see `persistency.storage.framing`)."""
LEGACY_FORMAT = 1
"""The format of 0.1: the same two JSON lines without checksums. Still read."""


@dataclass(frozen=True)
class Lineage:
    """What the encoder must know of a parent to store only the difference (cacheable per id)."""

    #: the parent's checkpoint id
    checkpoint_id: str
    #: the parent's step (messages in its transcript)
    step: int
    #: the parent's last message, to check cheaply that a child extends its transcript
    last_message: dict[str, Any] | None
    #: per deduplicated field: (id of the record holding it in full, the full value)
    keyframes: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)


@dataclass(frozen=True)
class NewRecord:
    """A record ready to store: its bytes, and the facts a backend may index without parsing them."""

    session_id: str
    checkpoint_id: str
    #: the parent checkpoint named by the checkpoint (None for the first of a session)
    parent_id: str | None
    #: the record whose transcript this one extends (None: stored whole); follow it to load a chain
    base_id: str | None
    #: the record's step (messages in its transcript)
    step: int
    #: the whole record: ``info_line + b"\\n" + payload_line + b"\\n"``
    data: bytes
    #: the first line (no newline): all that listing reads
    info_line: bytes
    #: the second line (no newline): messages and states, sealed under encryption
    payload_line: bytes
    #: what a child's save needs of this record (the base caches it)
    lineage: Lineage


@dataclass
class Record:
    """A decoded record: the raw info and payload, references not yet resolved."""

    #: where the record lives, for error messages
    where: str
    #: the info fields, raw (metadata possibly a reference to a keyframe)
    info: dict[str, Any]
    #: the record holding the transcript this one extends, or None
    base: str | None
    #: how many messages come from the base
    base_step: int
    #: the messages new in this record
    messages: list[dict[str, Any]]
    #: per deduplicated field: ``{"full": value}`` or ``{"ref": id, "set": ..., "unset": ...}``
    deltas: dict[str, dict[str, Any]]
    #: True for a cached copy without its messages (never used to build a transcript)
    stripped: bool = False

    @property
    def checkpoint_id(self) -> str:
        """The record's checkpoint id."""
        return str(self.info["checkpoint_id"])
