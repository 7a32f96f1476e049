"""Record bytes -> `Record`, checking every byte (no I/O).

Format 2 (this version) is checked against its checksums first (`persistency.storage.framing`);
format 1 (0.1) has none and is read as it was written. Either way a record that does not
decode is a `CorruptCheckpointError` naming where it lives; a sealed payload without its key is
an `EncryptionError`; a record of a newer schema an `UnsupportedSchemaError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from persistency import models
from persistency.errors import CorruptCheckpointError, EncryptionError
from persistency.models import check_schema_version, migrate
from persistency.storage.encode import SEALED_ERROR
from persistency.storage.framing import info_json, is_legacy, split, split_many
from persistency.storage.jsontext import loads
from persistency.storage.records import FORMAT, LEGACY_FORMAT, Record

if TYPE_CHECKING:
    from persistency.encryption import PayloadCipher

__all__ = ["check_delta", "decode_info_line", "decode_record", "decode_records"]


def check_delta(value: Any, where: str, name: str) -> dict[str, Any]:
    """A deduplicated field's stored form (``full`` or ``ref``/``set``/``unset``), checked."""
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
    check_delta(migrated.get("metadata"), where, "metadata")
    return migrated


def decode_info_line(line: bytes, where: str) -> dict[str, Any]:
    """Decode a record's first line (the info), checksum checked; raw, metadata not resolved."""
    line = line.rstrip(b"\r\n")
    if is_legacy(line):
        if not line.endswith(b","):
            raise CorruptCheckpointError(f"{where}: first line is not a checkpoint info line")
        obj = loads(line[:-1] + b"}", where)
        if not isinstance(obj, dict) or "info" not in obj:
            raise CorruptCheckpointError(f"{where}: no 'info' object")
        return _check_info(obj["info"], where)
    return _check_info(loads(info_json(line, where), where), where)


def _open(p: dict[str, Any], info: dict[str, Any], info_bytes: bytes | None, where: str,
          cipher: PayloadCipher | None) -> dict[str, Any]:
    if cipher is None:
        raise EncryptionError(f"{where}: payload is encrypted; give the provider its encryption_key")
    if not isinstance(p["sealed"], dict):
        raise CorruptCheckpointError(f"{where}: 'sealed' is not an object")
    opened = loads(cipher.open(p["sealed"], str(info.get("session_id")), str(info.get("checkpoint_id")), where,
                               info_bytes), where)
    if not isinstance(opened, dict):
        raise CorruptCheckpointError(f"{where}: decrypted payload is not an object")
    return opened


def decode_record(data: bytes, where: str, cipher: PayloadCipher | None = None) -> Record:
    """Decode record bytes (either format); `CorruptCheckpointError` naming ``where`` if damaged."""
    info_bytes: bytes | None
    if is_legacy(data):
        obj = loads(data, where)
        if not isinstance(obj, dict) or not isinstance(obj.get("payload"), dict):
            raise CorruptCheckpointError(f"{where}: not a checkpoint record (no 'payload' object)")
        raw_info, p, info_bytes, fmt = obj.get("info"), obj["payload"], None, LEGACY_FORMAT
    else:
        info_bytes, payload_bytes = split(data, where)
        raw_info, p, fmt = loads(info_bytes, where), loads(payload_bytes, where), FORMAT
        if not isinstance(p, dict):
            raise CorruptCheckpointError(f"{where}: the payload is not an object")
    if not isinstance(raw_info, dict):
        raise CorruptCheckpointError(f"{where}: 'info' is not an object")
    check_schema_version(raw_info.get("schema_version"), where)  # a newer one fails before any work
    if "sealed" in p:
        p = _open(p, raw_info, info_bytes, where, cipher)
    if raw_info.pop(SEALED_ERROR, None) is not None:
        if not isinstance(p.get("error"), str):
            raise CorruptCheckpointError(f"{where}: the sealed error text is missing")
        raw_info["error"] = p["error"]
    if raw_info.get("schema_version") != models.SCHEMA_VERSION:
        raw_info, migrated = migrate(raw_info, p, where)
        p = migrated if migrated is not None else p
    check_delta(raw_info.get("metadata"), where, "metadata")
    if p.get("format") != fmt:
        raise CorruptCheckpointError(f"{where}: unknown record format {p.get('format')!r}")
    base, base_step, messages = _base_and_messages(raw_info, p, where)
    deltas = {
        "agent_states": check_delta(p.get("agent_states"), where, "agent_states"),
        "manager_state": check_delta(p.get("manager_state"), where, "manager_state"),
        "metadata": raw_info["metadata"],
    }
    return Record(where, raw_info, base, base_step, messages, deltas)


def _fast(info: Any, p: Any) -> bool:
    """True for a record of this version that needs no migration, key or sealed error text."""
    return (type(info) is dict and type(p) is dict and info.get("schema_version") == models.SCHEMA_VERSION
            and type(info["schema_version"]) is int and SEALED_ERROR not in info and "sealed" not in p
            and p.get("format") == FORMAT)


def _joined(parts: list[bytes], n: int, where: str) -> list[Any] | None:
    """``parts`` (JSON texts) parsed in one go as one array; None if that fails or does not give ``n`` values."""
    try:
        values = loads(b"[" + b",".join(parts) + b"]", where)
    except CorruptCheckpointError:
        return None
    return values if type(values) is list and len(values) == n else None


def decode_records(items: Sequence[tuple[str, bytes]], where: Callable[[str], str],
                   cipher: PayloadCipher | None = None) -> list[Record]:
    """Decode many records at once, in order: the same `Record` values and errors as `decode_record` on each.

    Every format-2 record's two checksums are checked first (one BLAKE2b each); then all the info
    JSON texts are parsed as one array and all the payloads as another, so a chain of a thousand
    records costs about one parse of its transcript; the shapes are checked on the parsed values. A
    record that is not of the common kind (0.1 format, sealed, an older schema) and any parse that
    fails go through `decode_record` one by one, which names the record at fault.
    """
    items = list(items)
    legacy = {i for i, (_, data) in enumerate(items) if is_legacy(data)}
    framed = [item for i, item in enumerate(items) if i not in legacy] if legacy else items
    infos, payloads = split_many(framed, where)
    raw_infos = _joined(infos, len(framed), "records") if framed else []
    raw_payloads = _joined(payloads, len(framed), "records") if raw_infos is not None and framed else []
    if raw_infos is None or raw_payloads is None:  # some text does not parse: find and name it
        return [decode_record(data, where(cid), cipher) for cid, data in items]
    out: list[Record] = []
    k = 0
    for i, (cid, data) in enumerate(items):
        if i in legacy:
            out.append(decode_record(data, where(cid), cipher))
            continue
        info, p = raw_infos[k], raw_payloads[k]
        k += 1
        out.append(_record(info, p, where(cid)) if _fast(info, p) else decode_record(data, where(cid), cipher))
    return out


def _base_and_messages(info: dict[str, Any], p: dict[str, Any], where: str) -> tuple[str | None, int, list[Any]]:
    """A record's base reference and new messages, their shapes checked."""
    base = p["base"] if "base" in p else info.get("parent_id")
    base_step, messages = p.get("base_step"), p.get("messages")
    if not (base is None or isinstance(base, str)) or type(base_step) is not int or base_step < 0:
        raise CorruptCheckpointError(f"{where}: bad base reference")
    if type(messages) is not list or any(type(m) is not dict for m in messages):
        raise CorruptCheckpointError(f"{where}: 'messages' is not a list of objects")
    return base, base_step, messages


def _record(info: dict[str, Any], p: dict[str, Any], where: str) -> Record:
    """The `Record` of a parsed record of this version, its shape checked (as `decode_record` does)."""
    base, base_step, messages = _base_and_messages(info, p, where)
    deltas: dict[str, dict[str, Any]] = {}
    for name, value in (("agent_states", p.get("agent_states")), ("manager_state", p.get("manager_state")),
                        ("metadata", info.get("metadata"))):
        # a keyframe is checked inline; anything else by `check_delta`
        deltas[name] = value if type(value) is dict and type(value.get("full")) is dict else \
            check_delta(value, where, name)
    return Record(where, info, base, base_step, messages, deltas)
