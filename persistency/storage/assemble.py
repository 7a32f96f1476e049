"""Records -> the materialized `Checkpoint` or `CheckpointInfo` (no I/O).

A record names its base and its keyframes by id; these functions take a ``fetch`` callable that
returns the decoded `Record` of an id, so a backend (or the base's plan) decides how records are
read, one at a time or a chain at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import ValidationError

from persistency.errors import CorruptCheckpointError
from persistency.models import Checkpoint, CheckpointInfo
from persistency.storage.encode import DEDUP_FIELDS, SEALED_ERROR
from persistency.storage.records import Lineage, Record

__all__ = ["SEALED_ERROR_TEXT", "chain_of", "info_from_raw", "lineage_of", "materialize", "materialize_chain"]

SEALED_ERROR_TEXT = "(error text sealed with the payload: load the checkpoint with its key to read it)"


def _resolve(delta: dict[str, Any], keyframe: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """The full value of a dedup field; a deep copy, so callers never share cached state."""
    if "full" in delta:
        return _copy(delta["full"])
    if keyframe is None:
        raise CorruptCheckpointError(f"{where}: refers to {delta['ref']!r}, which is missing")
    out = {k: v for k, v in keyframe.items() if k not in delta.get("unset", [])}
    out.update(delta.get("set", {}))
    return _copy(out)


def _copy(value: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of JSON data, in C (faster than ``copy.deepcopy``, and as deep as the encoder goes)."""
    return json.loads(json.dumps(value, separators=(",", ":")))  # type: ignore[no-any-return]


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
    if data.pop(SEALED_ERROR, None) is not None:
        data["error"] = SEALED_ERROR_TEXT
    data["metadata"] = _resolve(meta, kf, where)
    try:
        return CheckpointInfo.model_validate(data)
    except ValidationError as exc:
        raise CorruptCheckpointError(f"{where}: info has the wrong shape: {_short(exc)}") from exc


def _short(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])


def chain_of(record: Record, fetch: Callable[[str], Record]) -> list[Record]:
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
    chain = chain_of(record, fetch)
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
