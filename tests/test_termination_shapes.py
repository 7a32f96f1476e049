"""Termination conditions as AG2's docs and notebooks write them, read from source and restored.

Each row is a shape seen in AG2's documentation, notebooks and samples (``is_termination_msg=...``
of UserProxyAgent / AssistantAgent / GroupChatManager), written here anew. Every one must be read
into an ``expr`` spec, survive JSON, and behave exactly like the original on a message that
matches, one that does not, one with ``None`` content, one with no content and one with empty
content: the same result, or the same exception type where the original raises."""

from __future__ import annotations

import json
import linecache
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from autogen import ConversableAgent, GroupChat, GroupChatManager
from autogen.code_utils import content_str

from persistency import ResumeError
from persistency.termination import describe, from_spec, is_restorable

WORD = "SOLUTION_FOUND"


def _closure(word: str) -> Any:
    return lambda m: word in (m.get("content") or "")


def is_termination_msg(msg: dict[str, Any]) -> bool:
    """The def form of the notebooks."""
    return "TERMINATE" in (msg.get("content") or "")


# (id, condition, content of a message it matches)
SHAPES: list[tuple[str, Any, str]] = [
    ("find>=0", lambda x: x.get("content", "").find("TERMINATE") >= 0, "all done TERMINATE"),
    ("find!=-1", lambda x: x.get("content", "").find("TERMINATE") != -1, "TERMINATE now"),
    ("rstrip.find", lambda x: x.get("content", "").rstrip().find("TERMINATE") >= 0, "ok TERMINATE\n"),
    ("and-endswith", lambda x: x.get("content", "") and x.get("content", "").rstrip().endswith("TERMINATE"),
     "ok TERMINATE "),
    ("rstrip.endswith", lambda x: x.get("content", "").rstrip().endswith("TERMINATE"), "done. TERMINATE\n"),
    ("strip.endswith", lambda x: x.get("content", "").strip().endswith("TERMINATE"), "  TERMINATE  "),
    ("in-get", lambda x: "TERMINATE" in x.get("content"), "x TERMINATE y"),
    ("in-get-default", lambda msg: "DONE" in msg.get("content", ""), "DONE."),
    ("in-or-upper", lambda x: "DONE!" in (x.get("content", "") or "").upper(), "we are done!"),
    ("index-endswith", lambda x: x["content"].endswith("TERMINATE"), "ok TERMINATE"),
    ("index-upper", lambda msg: "TERMINATE" in msg["content"].upper(), "terminate please"),
    ("in-or", lambda m: "TERMINATE" in (m.get("content") or ""), "TERMINATE"),
    ("not-none-and-in", lambda msg: msg.get("content") is not None and "TERMINATE" in msg["content"], "TERMINATE"),
    ("str-in", lambda x: "TERMINATE" in str(x.get("content")), "x TERMINATE"),
    ("content_str.find", lambda x: content_str(x.get("content")).find("TERMINATE") >= 0, "TERMINATE"),
    ("equals", lambda x: x.get("content") == "TERMINATE", "TERMINATE"),
    ("str-strip-equals", lambda x: str(x["content"]).strip() == "TERMINATE", " TERMINATE\n"),
    ("or-of-two", lambda x: "TERMINATE" in x.get("content", "") or "DONE" in x.get("content", ""), "DONE"),
    ("module-constant", lambda x: WORD in x.get("content", ""), "SOLUTION_FOUND: 42"),
    ("closure", _closure("APPROVED"), "APPROVED!"),
    ("default-argument", lambda m, k="FINISHED": k in m["content"], "FINISHED"),
    ("lower.endswith", lambda x: x.get("content", "").rstrip().lower().endswith("terminate"), "Terminate"),
    ("lstrip.startswith", lambda x: x.get("content", "").lstrip().startswith("TERMINATE"), "\nTERMINATE: bye"),
    ("endswith-tuple", lambda x: x.get("content", "").rstrip().endswith(("TERMINATE", "DONE")), "all DONE"),
    ("get-and-in", lambda x: x.get("content") and "TERMINATE" in x.get("content"), "TERMINATE"),
    ("upper.startswith", lambda x: x.get("content", "").upper().startswith("APPROVED"), "approved: ship it"),
    ("not-startswith", lambda x: not (x.get("content") or "").startswith("keep"), "stop"),
    ("def-function", is_termination_msg, "TERMINATE"),
]


def outcome(fn: Any, message: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "value", fn(message)
    except Exception as exc:
        return "raises", type(exc)


@pytest.mark.parametrize(("fn", "hit"), [(f, h) for _, f, h in SHAPES], ids=[i for i, _, _ in SHAPES])
def test_shape_is_restored_and_behaves_like_the_original(fn: Any, hit: str) -> None:
    spec = json.loads(json.dumps(describe(fn)))
    assert spec["kind"] == "expr" and is_restorable(spec), spec
    restored = from_spec(spec)
    assert restored is not None
    messages = [
        {"content": hit, "role": "user"},  # matches
        {"content": "keep going, please", "role": "user"},  # does not
        {"content": None, "role": "assistant", "tool_calls": []},  # None content
        {"role": "assistant"},  # no content at all
        {"content": ""},
    ]
    assert outcome(fn, messages[0]) == ("value", outcome(fn, messages[0])[1]) and fn(messages[0])
    assert not fn(messages[1])
    for message in messages:
        assert outcome(restored, message) == outcome(fn, message), message


def test_the_table_covers_twenty_shapes_and_none_raise_where_they_should_not() -> None:
    assert len(SHAPES) >= 20
    # the restored ``x["content"]`` raises KeyError on a message without content, like the original
    restored = from_spec(describe(lambda x: x["content"].endswith("TERMINATE")))
    with pytest.raises(KeyError):
        restored({})  # type: ignore[misc]
    with pytest.raises(AttributeError):
        restored({"content": None})  # type: ignore[misc]


def test_two_lambdas_on_one_line_and_multi_line_lambdas() -> None:
    a, b = (lambda x: "ALPHA" in x["content"]), (lambda x: "BETA" in x["content"])
    assert describe(a)["expr"]["left"]["value"] == "ALPHA" and describe(b)["expr"]["left"]["value"] == "BETA"
    gc = GroupChat([], messages=[], max_round=2)
    manager = GroupChatManager(gc, llm_config=False, is_termination_msg=lambda x: (
        "TERMINATE" in (x.get("content") or "")
        or x.get("content", "").rstrip().endswith("BYE")
    ))
    spec = describe(manager._is_termination_msg)
    restored = from_spec(spec)
    assert restored is not None and restored({"content": "ok BYE "}) and not restored({"content": "no"})


def test_a_notebook_cell_is_read_through_linecache() -> None:
    # IPython compiles each cell under a file name of its own and puts the cell's text in linecache.
    cell = 'STOP = "ALL_DONE"\nagent_cond = lambda msg: STOP in (msg.get("content") or "")\n'
    name = "/tmp/ipykernel_0000/3141592653.py"
    linecache.cache[name] = (len(cell), None, cell.splitlines(True), name)
    try:
        scope: dict[str, Any] = {"__name__": "__main__"}
        exec(compile(cell, name, "exec"), scope)
        spec = describe(scope["agent_cond"])
    finally:
        del linecache.cache[name]
    assert spec["kind"] == "expr" and from_spec(spec)({"content": "ALL_DONE"})  # type: ignore[misc]


def test_a_cell_that_is_not_python_as_a_whole_is_read_from_the_lambdas_lines() -> None:
    # the raw cell has a magic line (not Python); what was compiled is the transformed text
    raw = '%matplotlib inline\ncond = (lambda msg: "OVER" in (msg.get("content") or ""))\n'
    compiled = 'get_ipython()\ncond = (lambda msg: "OVER" in (msg.get("content") or ""))\n'
    name = "/tmp/ipykernel_0000/2718281828.py"
    linecache.cache[name] = (len(raw), None, raw.splitlines(True), name)
    try:
        scope: dict[str, Any] = {"get_ipython": lambda: None}
        exec(compile(compiled, name, "exec"), scope)
        spec = describe(scope["cond"])
    finally:
        del linecache.cache[name]
    assert spec["kind"] == "expr", spec
    restored = from_spec(spec)
    assert restored is not None and restored({"content": "game OVER"}) and not restored({"content": None})


def test_a_function_in_a_main_script(tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent('''
        import json
        from persistency.termination import describe
        DONE_WORD = "FINISHED"

        def done(message):
            return message.get("content", "").rstrip().endswith(DONE_WORD)

        print(json.dumps(describe(done)))
    '''))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True, timeout=120)
    spec = json.loads(out.stdout)
    assert spec["kind"] == "expr" and spec["name"] == "done"
    restored = from_spec(spec)
    assert restored is not None and restored({"content": "x FINISHED\n"}) and not restored({"content": "x"})


def test_a_source_changed_since_import_is_not_trusted(tmp_path: Path) -> None:
    module = tmp_path / "cond_mod.py"
    module.write_text('cond = lambda m: "OLD_WORD" in m["content"]\n')
    scope: dict[str, Any] = {"__name__": "cond_mod"}
    exec(compile(module.read_text(), str(module), "exec"), scope)
    module.write_text('cond = lambda m: "NEW_WORD" in m["content"]\n')  # edited after it was loaded
    linecache.checkcache(str(module))
    assert describe(scope["cond"])["kind"] == "custom"


NOT_IN_GRAMMAR: list[Any] = [
    lambda m: "A" in m["content"] and len(m["content"]) < 5,  # len() is outside the grammar
    lambda m: m["content"].count("X") > 1,
    lambda m: m["content"][-9:] == "TERMINATE",  # slicing
    lambda m: m.get("text", "") == "TERMINATE",  # not the content
    lambda m: m.get("content") in {"A", "B"},  # a set display
    lambda m: sys.maxsize in m["content"],  # a non-string name
    print,
]


@pytest.mark.parametrize("fn", NOT_IN_GRAMMAR)
def test_anything_else_stays_custom_and_is_named(fn: Any) -> None:
    spec = describe(fn)
    assert spec["kind"] == "custom" and spec["restorable"] is False and spec["name"]
    with pytest.raises(ResumeError, match="custom code"):
        from_spec(spec)


def test_shadowed_builtin_and_changed_bindings() -> None:
    def fake_str(x: Any) -> str:
        return "TERMINATE"

    str = fake_str
    assert describe(lambda x: "TERMINATE" in str(x.get("content")))["kind"] == "custom"
    number = 5
    assert describe(lambda x: number in x["content"])["kind"] == "custom"


@pytest.mark.parametrize(
    "tree",
    [
        {"op": "call", "func": "eval", "arg": {"op": "content", "access": "get"}},
        {"op": "method", "name": "__class__", "obj": {"op": "content", "access": "get"}, "args": []},
        {"op": "compare", "left": {"op": "const", "value": 1}, "ops": ["**"], "rights": [{"op": "const", "value": 1}]},
        {"op": "and", "args": [{"op": "const", "value": {"x": 1}}, {"op": "const", "value": 1}]},
        "not a node",
    ],
)
def test_a_stored_tree_outside_the_grammar_is_refused(tree: Any) -> None:
    spec = {"kind": "expr", "expr": tree, "name": "hostile"}
    assert not is_restorable(spec)
    with pytest.raises(ResumeError, match="hostile"):
        from_spec(spec)


def test_agents_store_the_spec_their_condition_reads_to() -> None:
    agent = ConversableAgent("a", llm_config=False, is_termination_msg=lambda x: "BYE" in x.get("content", ""))
    assert describe(agent._is_termination_msg)["kind"] == "expr"
