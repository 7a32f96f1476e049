"""What a checkpoint is: the pydantic models every provider stores and returns.

A `Checkpoint` is the full, materialized state of a group chat after one step. Providers do not
store it whole each time (see `persistency._codec`): they keep what is new since the parent and
return the materialized model on load. `CheckpointInfo` is the same without payloads, for listing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from persistency.errors import UnsupportedSchemaError
from persistency.ids import validate_id

__all__ = ["SCHEMA_VERSION", "Checkpoint", "CheckpointInfo", "CheckpointKind", "EndReason", "utcnow"]

SCHEMA_VERSION = 1
"""The checkpoint schema this version writes. Older ones are migrated on read; newer ones refused."""

CheckpointKind = Literal["step", "run_end"]
EndReason = Literal["termination_message", "max_rounds", "error", "cancelled", "superseded"]
COMPLETE_END_REASONS: frozenset[str] = frozenset({"termination_message", "max_rounds"})


def utcnow() -> datetime:
    """The current time in UTC, timezone-aware (what ``created_at`` holds)."""
    return datetime.now(timezone.utc)


class CheckpointInfo(BaseModel):
    """A checkpoint without its payloads (no messages, no agent or manager state), for listing."""

    model_config = ConfigDict(frozen=False, extra="forbid")

    schema_version: int = Field(default=SCHEMA_VERSION, description="Schema the checkpoint was written with.")
    checkpoint_id: str = Field(description="Unique in its session; ids sort in creation order.")
    session_id: str = Field(description="The conversation this checkpoint belongs to.")
    run_id: str = Field(description="The run (one initiate_chat) that wrote it.")
    parent_id: str | None = Field(default=None, description="The checkpoint this one follows, if any.")
    step: int = Field(ge=0, description="Number of messages in the group chat transcript at this point.")
    kind: CheckpointKind = Field(default="step", description='"step", or "run_end" for a finished run.')
    end_reason: EndReason | None = Field(default=None, description="Why the run ended (run_end only).")
    error: str | None = Field(default=None, description="The error's text when end_reason is 'error'.")
    created_at: datetime = Field(default_factory=utcnow, description="When it was written (UTC).")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Free-form JSON from the feature.")

    @field_validator("checkpoint_id", "session_id", "run_id")
    @classmethod
    def _valid_id(cls, v: str) -> str:
        return validate_id(v)

    @field_validator("parent_id")
    @classmethod
    def _valid_parent(cls, v: str | None) -> str | None:
        return None if v is None else validate_id(v, "parent_id")

    @field_validator("created_at")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return v.replace(tzinfo=timezone.utc) if v.tzinfo is None else v.astimezone(timezone.utc)

    @property
    def is_run_end(self) -> bool:
        """True for a checkpoint that closes a run."""
        return self.kind == "run_end"

    @property
    def run_complete(self) -> bool:
        """True when this closes a run that finished normally (termination message or max rounds)."""
        return self.kind == "run_end" and self.end_reason in COMPLETE_END_REASONS


class Checkpoint(CheckpointInfo):
    """The full state of a group chat after one step, as the feature captured it."""

    messages: list[dict[str, Any]] = Field(
        default_factory=list, description="The whole transcript up to this point, as AG2 message dicts."
    )
    agent_states: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per agent name: its configuration and state (secrets redacted)."
    )
    manager_state: dict[str, Any] = Field(
        default_factory=dict, description="The GroupChatManager's state: rounds used, last speaker, ..."
    )

    def info(self) -> CheckpointInfo:
        """This checkpoint without its payloads."""
        data = {name: getattr(self, name) for name in CheckpointInfo.model_fields}
        return CheckpointInfo.model_construct(**data)


Migration = Callable[[dict[str, Any], "dict[str, Any] | None"], "tuple[dict[str, Any], dict[str, Any] | None]"]
MIGRATIONS: dict[int, Migration] = {}
"""Upgrades of a stored record from schema N to N+1: ``(info, payload or None) -> (info, payload)``.

Raw dicts in, raw dicts out (JSON only); applied on read, so old sessions load without rewriting.
"""


def migrate(info: dict[str, Any], payload: dict[str, Any] | None, where: str) -> tuple[
    dict[str, Any], dict[str, Any] | None
]:
    """Bring a raw record up to `SCHEMA_VERSION`; refuse a newer one with `UnsupportedSchemaError`."""
    version = info.get("schema_version")
    if version == SCHEMA_VERSION and type(version) is int:
        return info, payload  # the common case, on every record read
    version = check_schema_version(version, where)
    while version < SCHEMA_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise UnsupportedSchemaError(f"{where}: no migration from schema_version {version}")
        info, payload = step(dict(info), None if payload is None else dict(payload))
        version += 1
        info["schema_version"] = version
    return info, payload


def check_schema_version(version: object, where: str) -> int:
    """Return a readable schema version, or raise `UnsupportedSchemaError` for a newer one."""
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        from persistency.errors import CorruptCheckpointError

        raise CorruptCheckpointError(f"{where}: schema_version {version!r} is not a non-negative integer")
    if version > SCHEMA_VERSION:
        raise UnsupportedSchemaError(
            f"{where} was written with schema_version {version}; this version of ag2-persistency "
            f"reads up to {SCHEMA_VERSION}. Upgrade ag2-persistency to read it."
        )
    return version
