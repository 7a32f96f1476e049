"""The operations a contract plan asks a backend for: one dataclass per primitive (no I/O).

A plan (`persistency.storage.plans`) is a generator that yields these and receives each reply;
`StorageBackend` drives it with its sync primitives or with their async twins, so the logic is
written once for both.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from persistency.storage.records import NewRecord

__all__ = ["Delete", "ListIds", "ListSessions", "Op", "Plan", "Read", "ReadChain", "ReadInfos", "StaleParent", "Write"]

T = TypeVar("T")


@dataclass(frozen=True)
class Write:
    """``write_record(record)``: store a new record create-only. Reply: None."""

    record: NewRecord


@dataclass(frozen=True)
class Read:
    """``read_records(session_id, ids)``. Reply: ``{id: bytes}`` of those that exist."""

    session_id: str
    ids: tuple[str, ...]


@dataclass(frozen=True)
class ReadChain:
    """``read_chain(session_id, id or None for the latest)``. Reply: ``[(id, bytes), ...]`` head first."""

    session_id: str
    checkpoint_id: str | None


@dataclass(frozen=True)
class ReadInfos:
    """``read_info_lines(session_id, ids)``. Reply: ``{id: first line}`` of those that exist."""

    session_id: str
    ids: tuple[str, ...]


@dataclass(frozen=True)
class ListIds:
    """``list_ids(session_id)``. Reply: the session's checkpoint ids, sorted."""

    session_id: str


@dataclass(frozen=True)
class ListSessions:
    """``list_session_ids()``. Reply: session ids with at least one record, sorted."""


@dataclass(frozen=True)
class Delete:
    """``delete_records(session_id)``: remove the session and advance its generation. Reply: None."""

    session_id: str


class StaleParent(Exception):
    """Raised by ``write_record`` when the stored parent is not the one the record was encoded against
    (the session was deleted and re-created by another writer): the base re-reads it and encodes again."""


Op = Write | Read | ReadChain | ReadInfos | ListIds | ListSessions | Delete
Plan = Generator[Op, Any, T]

#: op type -> (primitive name, how to turn the op into its arguments)
PRIMITIVES: dict[type[Any], tuple[str, Any]] = {
    Write: ("write_record", lambda o: (o.record,)),
    Read: ("read_records", lambda o: (o.session_id, list(o.ids))),
    ReadChain: ("read_chain", lambda o: (o.session_id, o.checkpoint_id)),
    ReadInfos: ("read_info_lines", lambda o: (o.session_id, list(o.ids))),
    ListIds: ("list_ids", lambda o: (o.session_id,)),
    ListSessions: ("list_session_ids", lambda o: ()),
    Delete: ("delete_records", lambda o: (o.session_id,)),
}
