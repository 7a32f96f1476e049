"""Termination conditions: AG2's default, the helpers and common lambdas are restorable; the rest is
recorded as custom and never guessed."""

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
    "fn",
    [
        lambda m: "SOLUTION_FOUND" in (m.get("content") or ""),
        lambda msg: "SOLUTION_FOUND" in msg.get("content", ""),
        lambda x: "SOLUTION_FOUND" in x["content"],
        lambda x: x.get("content", "").rstrip().endswith("SOLUTION_FOUND"),
        lambda x: (x.get("content") or "").rstrip().endswith("SOLUTION_FOUND"),
        lambda m: m.get("content") == "SOLUTION_FOUND",
        lambda m: m.get("content", "").strip() == "SOLUTION_FOUND",
    ],
)
def test_common_lambdas_are_recognised_exactly(fn: Any) -> None:
    spec = describe(fn)
    assert spec["kind"] in ("contains", "endswith", "equals") and spec["text"] == "SOLUTION_FOUND"
    assert is_restorable(spec)
    restored = from_spec(json.loads(json.dumps(spec)))
    assert behaves_like(restored, fn)


def test_def_functions_of_the_same_shape_are_recognised() -> None:
    def done(message: dict[str, Any]) -> bool:
        return "DONE" in (message.get("content") or "")

    assert describe(done) == {"kind": "contains", "text": "DONE", "strip": False}


@pytest.mark.parametrize(
    "fn",
    [
        lambda m: "A" in m["content"] and len(m["content"]) < 5,  # more logic than a substring test
        lambda m: "a" in m["content"].lower(),
        lambda m: m["content"].startswith("DONE"),
        lambda m, k="DONE": k in m["content"],  # a default argument
        print,  # a builtin
    ],
)
def test_anything_else_is_custom_and_not_restorable(fn: Any) -> None:
    spec = describe(fn)
    assert spec["kind"] == "custom" and spec["restorable"] is False and "name" in spec
    assert "source" not in spec
    with pytest.raises(ResumeError, match="custom code"):
        from_spec(spec)


def test_closures_and_shadowed_globals_are_not_guessed() -> None:
    word = "DONE"
    assert describe(lambda m: word in (m.get("content") or ""))["kind"] == "custom"

    def fake_str(x: Any) -> Any:
        return "DONE"

    # the same bytecode, run in a module where ``str`` is the user's own function
    shape = lambda m: "DONE" in str(m.get("content"))  # noqa: E731
    assert describe(shape)["kind"] == "contains"
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
