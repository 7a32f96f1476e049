"""Checkpoint -> record bytes, storing only what is new since the parent (no I/O).

- Messages are appended, never rewritten: a record keeps ``messages[base_step:]``; the rest is
  its base's transcript (the parent's, or stored whole when the transcript did not extend it).
- ``agent_states``, ``manager_state`` and ``metadata`` are stored in full (a *keyframe*) or as
  the keys that changed against the nearest keyframe, so references never chain.
- Under encryption the payload (messages, states, and the error text of a failed run) is
  sealed, with the info JSON as associated data: the info line stays readable for listing, and
  any change to it fails to open.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from persistency.errors import SerializationError
from persistency.models import Checkpoint, CheckpointInfo
from persistency.storage.framing import frame
from persistency.storage.jsontext import dumps
from persistency.storage.records import FORMAT, Lineage, NewRecord

if TYPE_CHECKING:
    from persistency.encryption import PayloadCipher

__all__ = ["DEDUP_FIELDS", "SEALED_ERROR", "encode"]

DEDUP_FIELDS = ("agent_states", "manager_state", "metadata")
SEALED_ERROR = "sealed_error"
"""Info key marking a record whose error text is in the sealed payload, not on the info line."""
_INFO_FIELDS = tuple(f for f in CheckpointInfo.model_fields if f != "metadata")


def _delta(value: dict[str, Any], keyframe: tuple[str, dict[str, Any]] | None) -> dict[str, Any]:
    """``value`` in full, or as the keys changed against ``keyframe`` when that is smaller."""
    if keyframe is not None:
        ref, base = keyframe
        changed = {k: v for k, v in value.items() if k not in base or base[k] != v}
        removed = [k for k in base if k not in value]
        if len(changed) + len(removed) <= max(1, len(value) // 2):
            out: dict[str, Any] = {"ref": ref}
            if changed:
                out["set"] = changed
            if removed:
                out["unset"] = removed
            return out
    return {"full": value}


def _messages_json(messages: list[dict[str, Any]], first_index: int) -> bytes:
    """The new messages as JSON; `SerializationError` naming the first one that is not JSON."""
    try:
        return dumps(messages)
    except (TypeError, ValueError) as exc:
        for i, msg in enumerate(messages):
            try:
                dumps(msg)
            except (TypeError, ValueError) as inner:
                who = msg.get("name") if isinstance(msg, dict) else None
                raise SerializationError(
                    f"the message at step {first_index + i + 1}{f' from {who!r}' if who else ''} cannot be "
                    f"stored as JSON: {inner}"
                ) from inner
        raise SerializationError(f"messages cannot be stored as JSON: {exc}") from exc


def encode(checkpoint: Checkpoint, parent: Lineage | None, cipher: PayloadCipher | None = None) -> NewRecord:
    """Turn ``checkpoint`` into a `NewRecord`, storing only what is new against ``parent``.

    Raises `SerializationError` naming the message (or field) that cannot be stored as JSON.
    """
    messages = checkpoint.messages
    base_id: str | None = None
    base_step = 0
    if parent is not None and len(messages) >= parent.step:
        # Trust-but-check that the transcript extends the parent's: O(1), not O(transcript).
        if parent.step == 0 or messages[parent.step - 1] == parent.last_message:
            base_id, base_step = parent.checkpoint_id, parent.step
    keyframes = parent.keyframes if parent is not None else {}
    encoded: dict[str, dict[str, Any]] = {}
    new_keyframes: dict[str, tuple[str, dict[str, Any]]] = {}
    for name in DEDUP_FIELDS:
        value = getattr(checkpoint, name)
        enc = _delta(value, keyframes.get(name))
        encoded[name] = enc
        new_keyframes[name] = (checkpoint.checkpoint_id, value) if "full" in enc else keyframes[name]

    # None-valued fields (parent_id, end_reason, error) are left out: they are the defaults on read.
    info: dict[str, Any] = {f: v for f in _INFO_FIELDS if (v := getattr(checkpoint, f)) is not None}
    info["created_at"] = checkpoint.created_at.isoformat()
    info["metadata"] = encoded["metadata"]
    error = info.pop("error", None) if cipher is not None else None
    if error is not None:
        info[SEALED_ERROR] = True
    new_messages = _messages_json(messages[base_step:] if base_step else messages, base_step)
    try:
        info_json = dumps(info)
        payload = b"".join((
            b'{"format":%d,' % FORMAT,
            # the base is the parent unless the transcript was rewritten (then stored whole)
            b"" if base_id == checkpoint.parent_id else b'"base":' + dumps(base_id) + b",",
            b'"base_step":%d,"messages":' % base_step,
            new_messages,
            b',"agent_states":', dumps(encoded["agent_states"]),
            b',"manager_state":', dumps(encoded["manager_state"]),
            b',"error":' + dumps(error) if error is not None else b"",
            b"}",
        ))
    except (TypeError, ValueError) as exc:  # SerializationError too (nesting too deep)
        raise SerializationError(
            f"checkpoint {checkpoint.checkpoint_id!r}: state or metadata cannot be stored as JSON: {exc}"
        ) from exc
    if cipher is not None:
        envelope = cipher.seal(payload, checkpoint.session_id, checkpoint.checkpoint_id, info_json)
        payload = b'{"format":%d,"sealed":%s}' % (FORMAT, dumps(envelope))
    line1, line2 = frame(info_json, payload)
    last = messages[-1] if messages else None
    return NewRecord(
        session_id=checkpoint.session_id, checkpoint_id=checkpoint.checkpoint_id, parent_id=checkpoint.parent_id,
        base_id=base_id, step=checkpoint.step, data=line1 + b"\n" + line2 + b"\n", info_line=line1,
        payload_line=line2, lineage=Lineage(checkpoint.checkpoint_id, len(messages), last, new_keyframes),
    )
