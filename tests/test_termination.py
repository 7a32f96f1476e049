"""Termination conditions: AG2's default, the helpers and earlier specs are restorable; the rest is
recorded as custom and never guessed (the shapes read from source: test_termination_shapes)."""

from __future__ import annotations

import json
import types
from typing import Any

import pytest
from autogen import ConversableAgent

from persistency import ResumeError
from persistency.termination import any_of, contains, describe, endswith, equals, from_spec, is_restorable

MSGS: list[dict[str, Any]] = [
    {"content": "x SOLUTION_FOUND y"},
    {"content": "SOLUTION_FOUND"},
    {"content": "SOLUTION_FOUND  \n"},
    {"content": "nothing"},
    {"content": ""},
    {"content": "solution_found"},
]


def behaves_like(restored: Any, original: Any) -> bool:
    return all(bool(restored(m)) == bool(original(m)) for m in MSGS)


def test_ag2_default_is_recognised() -> None:
    agent = ConversableAgent("a", llm_config=False)
    assert describe(agent._is_termination_msg) == {"kind": "default"}
    assert from_spec({"kind": "default"}) is None  # AG2 installs its own default again


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "contains", "text": "SOLUTION_FOUND", "strip": False},
        {"kind": "endswith", "text": "SOLUTION_FOUND", "strip": True},
        {"kind": "equals", "text": "SOLUTION_FOUND", "strip": True},
    ],
)
def test_specs_of_earlier_versions_still_restore(spec: dict[str, Any]) -> None:
    # checkpoints written before conditions were read from source hold these kinds
    assert is_restorable(spec)
    restored = from_spec(spec)
    reference = {
        "contains": lambda m: "SOLUTION_FOUND" in (m.get("content") or ""),
        "endswith": lambda m: (m.get("content") or "").rstrip().endswith("SOLUTION_FOUND"),
        "equals": lambda m: (m.get("content") or "").strip() == "SOLUTION_FOUND",
    }[spec["kind"]]
    assert behaves_like(restored, reference)


def test_def_functions_are_read_too() -> None:
    def done(message: dict[str, Any]) -> bool:
        return "DONE" in (message.get("content") or "")

    spec = describe(done)
    assert spec["kind"] == "expr" and spec["name"].endswith("done")
    assert behaves_like(from_spec(json.loads(json.dumps(spec))), done)


@pytest.mark.parametrize("fn", [lambda m: "A" in m["content"] and len(m["content"]) < 5, print])
def test_anything_else_is_custom_and_not_restorable(fn: Any) -> None:
    spec = describe(fn)
    assert spec["kind"] == "custom" and spec["restorable"] is False and "name" in spec
    assert "source" not in spec
    with pytest.raises(ResumeError, match="custom code"):
        from_spec(spec)


def test_shadowed_globals_are_not_trusted() -> None:
    def fake_str(x: Any) -> Any:
        return "DONE"

    shape = lambda m: "DONE" in str(m.get("content"))  # noqa: E731
    assert describe(shape)["kind"] == "expr"
    # the same code, run in a module where ``str`` is the user's own function
    fn = types.FunctionType(shape.__code__, {"str": fake_str})
    assert describe(fn)["kind"] == "custom"


def test_helpers_round_trip() -> None:
    cond = any_of(contains("SOLUTION_FOUND"), endswith("TERMINATE"), equals("bye", strip=True))
    spec = json.loads(json.dumps(describe(cond)))
    restored = from_spec(spec)
    assert restored == cond
    assert restored({"content": "ok TERMINATE "}) and restored({"content": " bye "})
    assert not restored({"content": None}) and not restored({"content": "nope"})
    with pytest.raises(ValueError):
        contains("")
