"""How a checkpoint becomes stored bytes and back, with no I/O (shared by every provider).

A checkpoint is stored as one *record*: two lines of JSON that together are one JSON object::

    {"info":{...the CheckpointInfo fields, None values left out...},
    "payload":{"format":1,"base_step":N,"messages":[...new messages...],"agent_states":...}}

- Messages are appended, never rewritten: a record keeps only ``messages[base_step:]``, and the
  rest is its base's transcript: the parent's, or ``"base"`` when it differs (``null`` for a
  transcript that did not extend its parent's and is stored whole). Storage grows with the transcript, and a
  save costs the same at step 1,000 as at step 10.
- ``agent_states``, ``manager_state`` and ``metadata`` are stored either in full (a *keyframe*)
  or as the keys that changed against the nearest keyframe, so refs never chain.
- The first line is the info alone, so listing reads one line per checkpoint and never parses a
  message payload.

JSON only: nothing on the load path can execute code.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from persistency import models as _models
from persistency.errors import CorruptCheckpointError, EncryptionError, SerializationError
from persistency.models import Checkpoint, CheckpointInfo, check_schema_version, migrate

if TYPE_CHECKING:
    from persistency.encryption import PayloadCipher

__all__ = [
    "DEDUP_FIELDS",
    "Lineage",
    "Record",
    "decode_info_line",
    "decode_record",
    "encode_record",
    "info_from_raw",
    "lineage_of",
    "materialize",
]

FORMAT = 1
DEDUP_FIELDS = ("agent_states", "manager_state", "metadata")
_INFO_FIELDS = tuple(f for f in CheckpointInfo.model_fields if f != "metadata")


@dataclass
class Lineage:
    """What the encoder must know of a parent to store only the difference (cacheable per id)."""

    checkpoint_id: str
    step: int
    last_message: dict[str, Any] | None
    #: per dedup field: (id of the record holding it in full, the full value)
    keyframes: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)


@dataclass
class Record:
    """A decoded record: the raw info and payload, refs not yet resolved."""

    where: str
    info: dict[str, Any]
    base: str | None
    base_step: int
    messages: list[dict[str, Any]]
    deltas: dict[str, dict[str, Any]]
    #: True for a cached copy without its messages (never used to build a transcript)
    stripped: bool = False

    @property
    def checkpoint_id(self) -> str:
        return str(self.info["checkpoint_id"])


# -- encoding -------------------------------------------------------------------------------------
def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _find_bad_message(messages: list[dict[str, Any]], first_index: int) -> None:
    """Raise `SerializationError` naming the first message that is not UTF-8 JSON, if any."""
    for i, msg in enumerate(messages):
        try:
            _dumps(msg).encode("utf-8")
        except (TypeError, ValueError, UnicodeEncodeError) as inner:
            who = msg.get("name") if isinstance(msg, dict) else None
            raise SerializationError(
                f"the message at step {first_index + i + 1}{f' from {who!r}' if who else ''} cannot be stored "
                f"as UTF-8 JSON: {inner}"
            ) from inner


def _dump_messages(messages: list[dict[str, Any]], first_index: int) -> str:
    try:
        return _dumps(messages)
    except (TypeError, ValueError) as exc:
        _find_bad_message(messages, first_index)
        raise SerializationError(f"messages cannot be stored as JSON: {exc}") from exc


def _delta(
    name: str, value: dict[str, Any], keyframe: tuple[str, dict[str, Any]] | None
) -> dict[str, Any]:
    """Encode ``value`` in full, or as changed keys against ``keyframe`` when that is smaller."""
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


def encode_record(
    checkpoint: Checkpoint, parent: Lineage | None, cipher: PayloadCipher | None = None
) -> tuple[bytes, Lineage]:
    """Turn ``checkpoint`` into record bytes, storing only what is new against ``parent``.

    With a ``cipher`` the payload (messages and states) is sealed; the info line stays readable.

    Returns the bytes and the `Lineage` of the checkpoint itself (cache it for its child).
    Raises `SerializationError` naming the message that is not JSON.
    """
    messages = checkpoint.messages
    base_id: str | None = None
    base_step = 0
    if parent is not None and len(messages) >= parent.step:
        # Trust-but-check that the transcript extends the parent's: O(1), not O(transcript).
        if parent.step == 0 or messages[parent.step - 1] == parent.last_message:
            base_id, base_step = parent.checkpoint_id, parent.step
    delta = messages[base_step:] if base_step else messages

    keyframes = parent.keyframes if parent is not None else {}
    values = {
        "agent_states": checkpoint.agent_states,
        "manager_state": checkpoint.manager_state,
        "metadata": checkpoint.metadata,
    }
    encoded: dict[str, dict[str, Any]] = {}
    new_keyframes: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, value in values.items():
        enc = _delta(name, value, keyframes.get(name))
        encoded[name] = enc
        new_keyframes[name] = (checkpoint.checkpoint_id, value) if "full" in enc else keyframes[name]

    # None-valued fields (parent_id, end_reason, error) are left out: they are the defaults on read.
    info: dict[str, Any] = {f: v for f in _INFO_FIELDS if (v := getattr(checkpoint, f)) is not None}
    info["created_at"] = checkpoint.created_at.isoformat()
    info["metadata"] = encoded.pop("metadata")
    try:
        info_json = _dumps(info)
        payload = (
            '{"format":%d,%s"base_step":%d,"messages":%s,"agent_states":%s,"manager_state":%s}'
            % (
                FORMAT,
                # the base is the parent unless the transcript was rewritten (then stored whole)
                "" if base_id == checkpoint.parent_id else f'"base":{_dumps(base_id)},',
                base_step,
                _dump_messages(delta, base_step),
                _dumps(encoded["agent_states"]),
                _dumps(encoded["manager_state"]),
            )
        )
        if cipher is not None:
            envelope = cipher.seal(payload.encode("utf-8"), checkpoint.session_id, checkpoint.checkpoint_id)
            payload = '{"format":%d,"sealed":%s}' % (FORMAT, _dumps(envelope))
        data = ('{"info":' + info_json + ',\n"payload":' + payload + "}\n").encode("utf-8")
    except SerializationError:
        raise
    except UnicodeEncodeError as exc:
        _find_bad_message(delta, base_step)
        raise SerializationError(
            f"checkpoint {checkpoint.checkpoint_id!r}: state or metadata is not valid UTF-8: {exc}"
        ) from exc
    except (TypeError, ValueError) as exc:
        raise SerializationError(
            f"checkpoint {checkpoint.checkpoint_id!r}: state or metadata cannot be stored as JSON: {exc}"
        ) from exc
    last = messages[-1] if messages else None
    return data, Lineage(checkpoint.checkpoint_id, len(messages), last, new_keyframes)


# -- decoding -------------------------------------------------------------------------------------
def _loads(data: bytes | str, where: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptCheckpointError(f"{where}: not valid UTF-8 JSON ({exc})") from exc


def _check_delta(value: Any, where: str, name: str) -> dict[str, Any]:
    ok = isinstance(value, dict) and (
        ("full" in value and isinstance(value["full"], dict))
        or (
            isinstance(value.get("ref"), str)
            and isinstance(value.get("set", {}), dict)
            and isinstance(value.get("unset", []), list)
        )
    )
    if not ok:
        raise CorruptCheckpointError(f"{where}: field {name!r} has the wrong shape")
    return value  # type: ignore[no-any-return]


def _check_info(info: Any, where: str) -> dict[str, Any]:
    if not isinstance(info, dict):
        raise CorruptCheckpointError(f"{where}: 'info' is not an object")
    migrated, _ = migrate(info, None, where)
    _check_delta(migrated.get("metadata"), where, "metadata")
    return migrated


def decode_info_line(line: bytes, where: str) -> dict[str, Any]:
    """Decode just the first line of a record (the info); raw, metadata not resolved."""
    text = line.rstrip(b"\r\n")
    if not text.endswith(b","):
        raise CorruptCheckpointError(f"{where}: first line is not a checkpoint info line")
    obj = _loads(text[:-1] + b"}", where)
    if not isinstance(obj, dict) or "info" not in obj:
        raise CorruptCheckpointError(f"{where}: no 'info' object")
    return _check_info(obj["info"], where)


def decode_record(data: bytes, where: str, cipher: PayloadCipher | None = None) -> Record:
    """Decode record bytes; `CorruptCheckpointError` naming ``where`` if they are damaged.

    A sealed payload needs the ``cipher`` it was written with (`EncryptionError` otherwise).
    """
    obj = _loads(data, where)
    if not isinstance(obj, dict) or not isinstance(obj.get("payload"), dict):
        raise CorruptCheckpointError(f"{where}: not a checkpoint record (no 'payload' object)")
    raw_info = obj.get("info")
    if not isinstance(raw_info, dict):
        raise CorruptCheckpointError(f"{where}: 'info' is not an object")
    check_schema_version(raw_info.get("schema_version"), where)  # a newer one fails before any work
    p = obj["payload"]
    if "sealed" in p:
        if cipher is None:
            raise EncryptionError(f"{where}: payload is encrypted; give the provider its encryption_key")
        if not isinstance(p["sealed"], dict):
            raise CorruptCheckpointError(f"{where}: 'sealed' is not an object")
        p = _loads(cipher.open(p["sealed"], str(raw_info.get("session_id")), str(raw_info.get("checkpoint_id")), where),
                   where)
        if not isinstance(p, dict):
            raise CorruptCheckpointError(f"{where}: decrypted payload is not an object")
    if raw_info.get("schema_version") != _models.SCHEMA_VERSION:
        raw_info, migrated = migrate(raw_info, p, where)
        p = migrated if migrated is not None else p
    _check_delta(raw_info.get("metadata"), where, "metadata")
    info = raw_info
    if p.get("format") != FORMAT:
        raise CorruptCheckpointError(f"{where}: unknown record format {p.get('format')!r}")
    base = p["base"] if "base" in p else info.get("parent_id")
    base_step, messages = p.get("base_step"), p.get("messages")
    if not (base is None or isinstance(base, str)) or not isinstance(base_step, int) or base_step < 0:
        raise CorruptCheckpointError(f"{where}: bad base reference")
    if type(messages) is not list or any(type(m) is not dict for m in messages):
        raise CorruptCheckpointError(f"{where}: 'messages' is not a list of objects")
    deltas = {
        "agent_states": _check_delta(p.get("agent_states"), where, "agent_states"),
        "manager_state": _check_delta(p.get("manager_state"), where, "manager_state"),
        "metadata": info["metadata"],
    }
    return Record(where, info, base, base_step, messages, deltas)


def _resolve(delta: dict[str, Any], keyframe: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """The full value of a dedup field; a deep copy, so callers never share cached state."""
    if "full" in delta:
        return copy.deepcopy(delta["full"])  # type: ignore[no-any-return]
    if keyframe is None:
        raise CorruptCheckpointError(f"{where}: refers to {delta['ref']!r}, which is missing")
    out = {k: v for k, v in keyframe.items() if k not in delta.get("unset", [])}
    out.update(delta.get("set", {}))
    return copy.deepcopy(out)


def _keyframe_value(delta: dict[str, Any], name: str, fetch_info: Callable[[str], dict[str, Any]],
                    fetch: Callable[[str], Record], where: str) -> dict[str, Any] | None:
    if "full" in delta:
        return None
    ref = delta["ref"]
    if name == "metadata":
        kf = fetch_info(ref)["metadata"]
    else:
        kf = fetch(ref).deltas[name]
    if "full" not in kf:
        raise CorruptCheckpointError(f"{where}: {name} refers to {ref!r}, which is not a keyframe")
    return kf["full"]  # type: ignore[no-any-return]


def info_from_raw(
    raw: dict[str, Any], where: str, fetch_info: Callable[[str], dict[str, Any]]
) -> CheckpointInfo:
    """Validate a raw info dict into `CheckpointInfo`, resolving its metadata ref."""
    meta = raw["metadata"]
    kf = None if "full" in meta else fetch_info(meta["ref"]).get("metadata", {}).get("full")
    data = dict(raw)
    data["metadata"] = _resolve(meta, kf, where)
    try:
        return CheckpointInfo.model_validate(data)
    except ValidationError as exc:
        raise CorruptCheckpointError(f"{where}: info has the wrong shape: {_short(exc)}") from exc


def _short(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])


def _chain(record: Record, fetch: Callable[[str], Record]) -> list[Record]:
    """The record and its bases, newest first, checked for consistent lengths."""
    if record.stripped:
        raise RuntimeError("a cached record without messages cannot build a transcript")
    chain = [record]
    seen = {record.checkpoint_id}
    cur = record
    while cur.base is not None:
        if cur.base in seen:
            raise CorruptCheckpointError(f"{cur.where}: base chain loops at {cur.base!r}")
        nxt = fetch(cur.base)
        if nxt.info.get("step") != cur.base_step:
            raise CorruptCheckpointError(
                f"{cur.where}: base {cur.base!r} has step {nxt.info.get('step')}, expected {cur.base_step}"
            )
        if nxt.stripped:
            raise RuntimeError("a cached record without messages cannot build a transcript")
        seen.add(nxt.checkpoint_id)
        chain.append(nxt)
        cur = nxt
    if cur.base_step != 0:
        raise CorruptCheckpointError(f"{cur.where}: base_step {cur.base_step} without a base")
    return chain


def materialize(record: Record, fetch: Callable[[str], Record]) -> Checkpoint:
    """Build the full `Checkpoint` of ``record``, fetching its bases and keyframes with ``fetch``."""
    chain = _chain(record, fetch)
    messages: list[dict[str, Any]] = []
    for rec in reversed(chain):
        messages.extend(rec.messages)
    return _assemble(record, messages, fetch)


def materialize_chain(chain: Iterable[Record], fetch: Callable[[str], Record]) -> Checkpoint:
    """Like `materialize` for a provider that fetched the whole chain (newest first) in one go."""
    recs = list(chain)
    by_id = {r.checkpoint_id: r for r in recs}

    def _fetch(cid: str) -> Record:
        return by_id[cid] if cid in by_id else fetch(cid)

    return materialize(recs[0], _fetch)


def _assemble(record: Record, messages: list[dict[str, Any]], fetch: Callable[[str], Record]) -> Checkpoint:
    where = record.where

    def fetch_info(cid: str) -> dict[str, Any]:
        return fetch(cid).info

    values = {
        name: _resolve(record.deltas[name], _keyframe_value(record.deltas[name], name, fetch_info, fetch, where),
                       where)
        for name in DEDUP_FIELDS
    }
    data = dict(record.info)
    data.update(values)
    data["messages"] = messages
    try:
        cp = Checkpoint.model_validate(data)
    except ValidationError as exc:
        raise CorruptCheckpointError(f"{where}: checkpoint has the wrong shape: {_short(exc)}") from exc
    if len(messages) != cp.step:
        raise CorruptCheckpointError(f"{where}: transcript has {len(messages)} messages, step says {cp.step}")
    return cp


def lineage_of(record: Record, fetch: Callable[[str], Record]) -> Lineage:
    """The `Lineage` of a stored record (for saving a child when the parent is not cached)."""
    cur = record
    while not cur.messages and cur.base is not None:
        cur = fetch(cur.base)
    last = cur.messages[-1] if cur.messages else None
    keyframes: dict[str, tuple[str, dict[str, Any]]] = {}
    for name in DEDUP_FIELDS:
        d = record.deltas[name]
        if "full" in d:
            keyframes[name] = (record.checkpoint_id, d["full"])
        else:
            kf = fetch(d["ref"]).deltas[name]
            if "full" not in kf:
                raise CorruptCheckpointError(f"{record.where}: {name} ref is not a keyframe")
            keyframes[name] = (d["ref"], kf["full"])
    return Lineage(record.checkpoint_id, int(record.info["step"]), last, keyframes)
