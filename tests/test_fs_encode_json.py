"""The record JSON is the standard library's, byte for byte, whether orjson writes it or not."""

from __future__ import annotations

import dataclasses
import enum
import uuid
from datetime import datetime, timezone
from typing import Any

import pytest

from persistency.errors import SerializationError
from persistency.storage import encode as enc
from persistency.storage.jsontext import dumps as std_dumps
from persistency.testing import make_checkpoint


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Tag(str, enum.Enum):
    A = "a"


class Text(str):
    pass


@dataclasses.dataclass
class Point:
    x: int


_DEEP: Any = "leaf"
for _ in range(150):
    _DEEP = {"k": [_DEEP]}

VALUES: list[Any] = [
    "".join(chr(c) for c in range(0, 0x250)), "emoji \U0001f600 \u2028\u2029 \x7f", "lone \ud83d half", "",
    0, -1, 2**63 - 1, -(2**63), 2**63, 2**64, 10**40, True, False, None,
    0.0, -0.0, 0.1, 1 / 3, 1e-4, 9.99e-5, 1e-5, 3.155e-05, 1.9e-08, 5e-324, 1e16, 1.5e300, 123456789.125,
    float("nan"), float("inf"), -float("inf"),
    [1, "a", None, [], {}], ("a", 1), {"a": {"b": [1, 2.5, {"c": None}]}}, {1: "int key"}, {None: 1},
    Text("sub"), {"k": Text("v")}, Colour.RED, Level.HIGH, Tag.A, uuid.UUID(int=1),
    datetime(2026, 1, 1, tzinfo=timezone.utc), Point(1), {1, 2}, b"bytes", _DEEP,
]


def _outcome(fn: Any, value: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(value)
    except (SerializationError, TypeError, ValueError) as exc:
        return "refused", type(exc)


@pytest.mark.parametrize("value", VALUES, ids=[f"v{i}" for i in range(len(VALUES))])
def test_fast_dumps_gives_the_standard_bytes_or_the_same_refusal(value: Any) -> None:
    assert _outcome(enc.dumps, value) == _outcome(std_dumps, value)
    assert _outcome(enc.dumps, [value]) == _outcome(std_dumps, [value])
    assert _outcome(enc.dumps, {"x": value}) == _outcome(std_dumps, {"x": value})


def test_records_are_byte_identical_with_and_without_orjson(monkeypatch: pytest.MonkeyPatch) -> None:
    assert enc._orjson_dumps is not None, "the fast extra (orjson) is installed in the test environment"
    states = {"alice": {"name": "alice", "temperature": 0.7, "tiny": 1e-6, "n": 10**20, "t": ("x", 1)}}
    cps, parent, msgs = [], None, []
    for step in range(1, 6):
        msgs.append({"content": f"step {step} \u00e9 \ud83d", "role": "assistant", "name": "bob", "score": step / 7})
        cps.append(make_checkpoint("s", step, parent_id=parent, messages=list(msgs),
                                   agent_states={**states, "step": {"v": step}}, metadata={"m": [step, 0.5]}))
        parent = cps[-1].checkpoint_id

    def chain() -> list[bytes]:
        out, lineage = [], None
        for cp in cps:
            record = enc.encode(cp, lineage)
            out.append(record.data)
            lineage = record.lineage
        return out

    fast = chain()
    monkeypatch.setattr(enc, "_orjson_dumps", None)
    assert chain() == fast


def test_what_cannot_be_stored_is_still_named() -> None:
    cp = make_checkpoint("s", 1, messages=[{"content": "ok", "role": "user"},
                                           {"content": float("nan"), "role": "assistant", "name": "bob"}])
    with pytest.raises(SerializationError, match="step 2 from 'bob'"):
        enc.encode(cp, None)
    cp = make_checkpoint("s", 1, agent_states={"a": {"when": Colour.RED}})
    with pytest.raises(SerializationError, match="state or metadata"):
        enc.encode(cp, None)
