"""A load decodes its chain in one pass (issue #15 item 2): counted, never timed.

Every record's checksums are still checked (`tests/test_bitflips.py` flips every bit); what these
tests keep is the cost shape: a load of the latest checkpoint of a long session reads the chain in
one call, parses JSON a fixed number of times (not once or twice per record), validates the
`Checkpoint` once, and a record that checks but does not parse is still named.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from persistency.providers.filesystem import FilesystemStorageProvider

from persistency import provider_from_url
from persistency.encryption import PayloadCipher, generate_key
from persistency.errors import CorruptCheckpointError
from persistency.models import Checkpoint
from persistency.storage import StorageBackend, decode, plans
from persistency.storage.codec import decode_record, encode
from persistency.storage.decode import decode_records
from persistency.storage.framing import frame
from persistency.storage.records import Lineage, NewRecord
from persistency.testing import make_checkpoint

STEPS = 300


def _message(i: int) -> dict[str, Any]:
    return {"content": f"message {i}: " + "lorem ipsum dolor sit amet " * 18, "role": "assistant",
            "name": ("alice", "bob", "carol")[i % 3]}


def _grow(provider: StorageBackend, sid: str, steps: int) -> Checkpoint:
    msgs: list[dict[str, Any]] = []
    parent = None
    cp = None
    for step in range(1, steps + 1):
        msgs.append(_message(step))
        cp = make_checkpoint(sid, step, parent_id=parent, messages=list(msgs))
        provider.save_checkpoint(cp)
        parent = cp.checkpoint_id
    assert cp is not None
    return cp


class Counts:
    """Calls of the codec's JSON parse, its per-record decode, and the one `Checkpoint` validation."""

    def __init__(self) -> None:
        self.parses = 0
        self.single_decodes = 0
        self.validations = 0


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counts]:
    c = Counts()
    real_loads, real_decode = getattr(decode, "loads"), decode.decode_record
    real_validate = Checkpoint.model_validate.__func__  # type: ignore[attr-defined]

    def loads(data: bytes | str, where: str) -> Any:
        c.parses += 1
        return real_loads(data, where)

    def decode_one(*args: Any, **kwargs: Any) -> Any:
        c.single_decodes += 1
        return real_decode(*args, **kwargs)

    def validate(cls: type[Checkpoint], *args: Any, **kwargs: Any) -> Any:
        c.validations += 1
        return real_validate(cls, *args, **kwargs)

    monkeypatch.setattr(decode, "loads", loads)
    monkeypatch.setattr(decode, "decode_record", decode_one)
    monkeypatch.setattr(plans, "decode_record", decode_one)
    monkeypatch.setattr(Checkpoint, "model_validate", classmethod(validate))
    yield c


@pytest.fixture(params=["filesystem", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "filesystem":
        return str(tmp_path / "fs")
    return f"memory://load-decode-{tmp_path.name}"


def test_loading_the_latest_of_a_long_session_parses_json_a_fixed_number_of_times(
    store: str, counts: Counts, monkeypatch: pytest.MonkeyPatch
) -> None:
    last = _grow(provider_from_url(store), "long", STEPS)  # type: ignore[arg-type]
    fresh = provider_from_url(store)
    assert isinstance(fresh, StorageBackend)
    chains: list[int] = []
    real_chain = type(fresh).read_chain

    def read_chain(self: Any, sid: str, cid: str | None) -> list[tuple[str, bytes]]:
        rows = real_chain(self, sid, cid)
        chains.append(len(rows))
        return rows

    monkeypatch.setattr(type(fresh), "read_chain", read_chain)
    counts.parses = counts.single_decodes = counts.validations = 0
    got = fresh.get_latest_checkpoint("long")
    assert got is not None and got.messages == last.messages and got.step == STEPS
    assert chains == [STEPS]  # the whole chain in one call of the backend
    assert counts.parses <= 2, counts.parses  # the infos as one array, the payloads as another
    assert counts.single_decodes == 0
    assert counts.validations == 1  # the assembled checkpoint, not each record


def test_the_batch_decode_gives_what_decoding_each_record_gives() -> None:
    cipher = PayloadCipher(generate_key())
    for key in (None, cipher):
        msgs: list[dict[str, Any]] = []
        parent = None
        lineage = None
        items: list[tuple[str, bytes]] = []
        for step in range(1, 40):
            msgs.append(_message(step) if step % 7 else {"content": "\ud83d half an emoji", "role": "user"})
            cp = make_checkpoint("s", step, parent_id=parent, messages=list(msgs),
                                 agent_states={"a": {"n": step % 3}})
            if step == 20:  # an error text (sealed with the payload under a key)
                cp = cp.model_copy(update={"error": "boom"})
            rec = encode(cp, lineage, key)
            items.append((cp.checkpoint_id, rec.data))
            parent, lineage = cp.checkpoint_id, rec.lineage
        items.reverse()
        batch = decode_records(items, lambda cid: f"rec {cid}", key)
        one = [decode_record(data, f"rec {cid}", key) for cid, data in items]
        assert batch == one


def _raw_record(sid: str, cid: str, parent: str | None, step: int, payload: bytes) -> NewRecord:
    info = {"schema_version": 1, "checkpoint_id": cid, "session_id": sid, "run_id": "run-000001", "step": step,
            "kind": "step", "created_at": "2026-12-02T00:00:00+00:00", "metadata": {"full": {}}}
    if parent is not None:
        info["parent_id"] = parent
    info_json = json.dumps(info, separators=(",", ":")).encode()
    line1, line2 = frame(info_json, payload)

    return NewRecord(sid, cid, parent, parent, step, line1 + b"\n" + line2 + b"\n", line1, line2,
                     Lineage(cid, step, None, {}))


@pytest.mark.parametrize("bad", [b"not json", b'{"format":2},{"format":2}', b'{"format":2,"base_step":0'])
def test_a_record_that_checks_but_does_not_parse_is_named(tmp_path: Path, bad: bytes) -> None:
    """The checksums pass (the record was written so), the joined parse fails or miscounts: the
    record at fault is found and named, the others are not blamed."""
    p = FilesystemStorageProvider(tmp_path)
    good = b'{"format":2,"base_step":%d,"messages":[{"content":"m","role":"user"}],' \
           b'"agent_states":{"full":{}},"manager_state":{"full":{}}}'
    ids = [f"000001-{i:07d}" for i in range(1, 6)]
    for i, cid in enumerate(ids):
        payload = bad if i == 2 else good % i
        p.write_record(_raw_record("s", cid, ids[i - 1] if i else None, i + 1, payload))
    fresh = FilesystemStorageProvider(tmp_path)
    with pytest.raises(CorruptCheckpointError, match=ids[2]):
        fresh.get_latest_checkpoint("s")
    assert fresh.get_checkpoint("s", ids[1]).step == 2  # the records before it still load


def test_a_chain_of_records_decodes_with_the_standard_library_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from persistency.storage import jsontext

    last = _grow(FilesystemStorageProvider(tmp_path), "plain", 50)
    monkeypatch.setattr(jsontext, "_fast_loads", None)  # as without the ``fast`` extra
    got = FilesystemStorageProvider(tmp_path).get_latest_checkpoint("plain")
    assert got is not None and got.messages == last.messages
