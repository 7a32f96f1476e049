"""Identifier rules: what a session or checkpoint id may be, and how the feature names checkpoints.

Ids reach file paths, S3 keys and Redis keys, so they are checked against an allow-list before
any provider touches storage. The feature's checkpoint ids are deterministic per (run, step): two
workers continuing the same run race for the same id, and a create-only save lets exactly one win.
"""

from __future__ import annotations

import re

from persistency.errors import InvalidIdentifierError

__all__ = [
    "MAX_ID_LENGTH",
    "checkpoint_id_for",
    "parse_checkpoint_id",
    "run_id_for",
    "validate_id",
]

MAX_ID_LENGTH = 128
# First character alphanumeric (no hidden files, no "-" read as an option); then a small,
# path- and key-safe alphabet. No "/", "\\", ":", braces (Redis hash tags), spaces or controls.
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+=-]*")
_CKPT_RE = re.compile(r"(\d{6})-(\d{7})(?:-end(\d+))?")


def validate_id(value: object, what: str = "id") -> str:
    """Return ``value`` if it is a safe identifier, else raise `InvalidIdentifierError` saying why."""
    if not isinstance(value, str):
        raise InvalidIdentifierError(f"{what} must be a string, not {type(value).__name__}")
    if not value:
        raise InvalidIdentifierError(f"{what} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidIdentifierError(f"{what} is {len(value)} characters long; the limit is {MAX_ID_LENGTH}")
    if ".." in value:
        raise InvalidIdentifierError(f"{what} {value[:40]!r} contains '..'")
    if not _ID_RE.fullmatch(value):
        bad = next((c for c in value if not _ID_RE.fullmatch("a" + c)), value[0])
        raise InvalidIdentifierError(
            f"{what} {value[:40]!r} contains {bad!r}; allowed are letters, digits and . _ @ + = - "
            "(starting with a letter or digit)"
        )
    return value


def run_id_for(run_seq: int) -> str:
    """The feature's run id for the ``run_seq``-th run of a session (``run-000001``)."""
    return f"run-{run_seq:06d}"


def checkpoint_id_for(run_seq: int, step: int, end_seq: int = 0) -> str:
    """The feature's checkpoint id: ``RRRRRR-SSSSSSS`` for a step, ``...-endN`` for a run end.

    Ids sort in creation order: runs are numbered upwards, steps grow within a run, and a run
    end sorts after the step it closes and before the next step.
    """
    base = f"{run_seq:06d}-{step:07d}"
    return f"{base}-end{end_seq}" if end_seq else base


def parse_checkpoint_id(checkpoint_id: str) -> tuple[int, int, int] | None:
    """Split a feature checkpoint id into (run_seq, step, end_seq); None for a foreign id."""
    m = _CKPT_RE.fullmatch(checkpoint_id)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
