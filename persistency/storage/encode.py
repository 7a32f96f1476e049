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

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from persistency.errors import SerializationError
from persistency.models import Checkpoint, CheckpointInfo
from persistency.storage.framing import frame
from persistency.storage.jsontext import dumps as _std_dumps
from persistency.storage.records import FORMAT, Lineage, NewRecord

if TYPE_CHECKING:
    from persistency.encryption import PayloadCipher

__all__ = ["DEDUP_FIELDS", "SEALED_ERROR", "encode"]

DEDUP_FIELDS = ("agent_states", "manager_state", "metadata")
SEALED_ERROR = "sealed_error"
"""Info key marking a record whose error text is in the sealed payload, not on the info line."""
_INFO_FIELDS = tuple(f for f in CheckpointInfo.model_fields if f != "metadata")

_orjson_dumps: Callable[..., bytes] | None
try:  # the ``fast`` extra: the same bytes as the standard library for the values `_plain` accepts
    from orjson import OPT_PASSTHROUGH_DATACLASS, OPT_PASSTHROUGH_DATETIME, OPT_PASSTHROUGH_SUBCLASS
    from orjson import dumps as _orjson_dumps
    _ORJSON_OPTS = OPT_PASSTHROUGH_DATACLASS | OPT_PASSTHROUGH_DATETIME | OPT_PASSTHROUGH_SUBCLASS
except ImportError:  # pragma: no cover - depends on the environment
    _orjson_dumps = None
    _ORJSON_OPTS = 0
_MAX_INT = 2**63  # orjson refuses integers beyond 64 bits; stay well inside
_MIN_FLOAT = 1e-4  # below this orjson spells some floats apart from ``repr`` ("0.00001" for "1e-05")
_MAX_DEPTH = 64


def _plain(value: Any, depth: int = 0) -> bool:
    """True if ``value`` holds only exact str/int/bool/None/dict (str keys)/list/tuple and floats that
    ``repr`` and orjson spell alike: then orjson writes the very bytes `jsontext.dumps` would."""
    t = type(value)
    if t is dict:
        if depth >= _MAX_DEPTH:
            return False
        for k, v in value.items():
            if type(k) is not str:
                return False
            tv = type(v)
            if tv is not str and tv is not bool and v is not None and not (  # the usual values, inline
                    _plain(v, depth + 1) if tv is not int else -_MAX_INT < v < _MAX_INT):
                return False
        return True
    if t is list or t is tuple:
        if depth >= _MAX_DEPTH:
            return False
        for v in value:
            tv = type(v)
            if tv is not str and tv is not bool and v is not None and not (
                    _plain(v, depth + 1) if tv is not int else -_MAX_INT < v < _MAX_INT):
                return False
        return True
    if t is str or value is None or t is bool:
        return True
    if t is int:
        return bool(-_MAX_INT < value < _MAX_INT)
    if t is float:
        return bool(value == 0.0 or (math.isfinite(value) and abs(value) >= _MIN_FLOAT))
    return False


def dumps(value: Any) -> bytes:
    """`persistency.storage.jsontext.dumps`, byte for byte; through orjson (~20x faster) when the value
    is plain JSON data (`_plain`), else through the standard library (lone surrogates, NaN, big
    integers, other types: refused or escaped exactly as before)."""
    if _orjson_dumps is not None and _plain(value):
        try:
            return _orjson_dumps(value, option=_ORJSON_OPTS)
        except TypeError:  # a lone surrogate in a string: the standard library escapes it
            pass
    return _std_dumps(value)


def _delta(value: dict[str, Any], keyframe: tuple[str, dict[str, Any]] | None) -> dict[str, Any]:
    """``value`` in full, or as the keys changed against ``keyframe`` when that is smaller."""
    if keyframe is not None:
        ref, base = keyframe
        if value == base:  # the usual step: nothing changed (the same answer as the comparison below)
            return {"ref": ref}
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


def _fast_json(info: dict[str, Any], body: dict[str, Any]) -> tuple[bytes, bytes] | None:
    """The info and payload JSON in two orjson calls when both are plain (`_plain`: the same bytes as the
    standard library), else None."""
    if _orjson_dumps is None or not (_plain(info) and _plain(body)):
        return None
    try:
        return _orjson_dumps(info), _orjson_dumps(body)
    except TypeError:  # a lone surrogate in a string
        return None


def _std_json(cid: str, info: dict[str, Any], body: dict[str, Any], base_step: int) -> tuple[bytes, bytes]:
    """The info and payload JSON member by member, so that what cannot be stored is named."""
    new_messages = _messages_json(body["messages"], base_step)
    try:
        info_json = dumps(info)
        payload = b"".join((
            b'{"format":%d,' % FORMAT,
            b'"base":' + dumps(body["base"]) + b"," if "base" in body else b"",
            b'"base_step":%d,"messages":' % base_step,
            new_messages,
            b',"agent_states":', dumps(body["agent_states"]),
            b',"manager_state":', dumps(body["manager_state"]),
            b',"error":' + dumps(body["error"]) if "error" in body else b"",
            b"}",
        ))
    except (TypeError, ValueError) as exc:  # SerializationError too (nesting too deep)
        raise SerializationError(f"checkpoint {cid!r}: state or metadata cannot be stored as JSON: {exc}") from exc
    return info_json, payload


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
    new = messages[base_step:] if base_step else messages
    # the payload's members in their stored order; the base is named only when it is not the parent
    # (the transcript was rewritten, then stored whole)
    body: dict[str, Any] = {"format": FORMAT}
    if base_id != checkpoint.parent_id:
        body["base"] = base_id
    body["base_step"] = base_step
    body["messages"] = new
    body["agent_states"] = encoded["agent_states"]
    body["manager_state"] = encoded["manager_state"]
    if error is not None:
        body["error"] = error
    fast = _fast_json(info, body)
    info_json, payload = fast if fast is not None else _std_json(checkpoint.checkpoint_id, info, body, base_step)
    if cipher is not None:
        envelope = cipher.seal(payload, checkpoint.session_id, checkpoint.checkpoint_id, info_json)
        payload = b'{"format":%d,"sealed":%s}' % (FORMAT, dumps(envelope))
    line1, line2 = frame(info_json, payload)
    last = messages[-1] if messages else None
    return NewRecord(
        session_id=checkpoint.session_id, checkpoint_id=checkpoint.checkpoint_id, parent_id=checkpoint.parent_id,
        base_id=base_id, step=checkpoint.step, data=b"".join((line1, b"\n", line2, b"\n")), info_line=line1,
        payload_line=line2, lineage=Lineage(checkpoint.checkpoint_id, len(messages), last, new_keyframes),
    )
