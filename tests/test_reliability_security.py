"""Nothing on the load path can execute code: no pickle, no eval, no import by a name found in stored data.

Two proofs:

- statically: every module of ``persistency/`` and ``providers/`` is parsed and searched for
  deserialisers that run code (pickle, marshal, shelve, dill, jsonpickle, yaml), for
  ``eval``/``exec``/``compile``/``__import__``, and for imports by name; the only imports by name
  are an allow-listed few whose names come from constants or from installed entry points, never
  from stored bytes;
- dynamically: a stored session whose every name-bearing field names a planted module (agent class,
  model client class, termination condition, speaker selection, ``__reduce__``/``py/object``
  markers in messages and metadata) is loaded, listed, rebuilt and resumed, and the planted module
  (which records its own import) is never imported.
"""

from __future__ import annotations

import ast
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from persistency import Persistency, PersistencyError, PersistencyStorageProvider, provider_from_url
from persistency.models import Checkpoint
from tests.helpers_ag2 import build_chat

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([*ROOT.joinpath("persistency").rglob("*.py"), *ROOT.joinpath("providers").rglob("*.py")])

UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "jsonpickle", "yaml",
                  "ruamel", "joblib", "code", "codeop", "runpy"}
UNSAFE_CALLS = {"eval", "exec", "compile", "__import__", "execfile"}
#: (module, enclosing function) of every import by name, and why each is safe.
ALLOWED_IMPORTS_BY_NAME = {
    ("persistency/__init__.py", "__getattr__"): "constant table _LAZY of this package's own modules",
    ("providers/__init__.py", "__getattr__"): "constant table _LAZY of this package's own modules",
    ("persistency/registry.py", "_load"): "a provider class named by the built-in table or an installed entry point",
}


def _functions(tree: ast.AST) -> dict[ast.AST, str]:
    """Every node mapped to the name of the function that encloses it ('<module>' at top level)."""
    owner: dict[ast.AST, str] = {}

    def visit(node: ast.AST, name: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else name
            owner[child] = inner
            visit(child, inner)

    visit(tree, "<module>")
    return owner


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def scan(source: str, rel: str) -> tuple[list[str], set[tuple[str, str]]]:
    """Unsafe imports and calls in ``source``; and the (module, function) of every import by name."""
    findings: list[str] = []
    imports_by_name: set[tuple[str, str]] = set()
    tree = ast.parse(source, filename=rel)
    owner = _functions(tree)
    for node in ast.walk(tree):
        where = f"{rel}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            findings += [f"{where}: import {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            findings.append(f"{where}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            head, tail = name.split(".")[0], name.split(".")[-1]
            if name in UNSAFE_CALLS or (tail in {"loads", "load"} and head in UNSAFE_MODULES):
                findings.append(f"{where}: {name}()")
            if tail in ("import_module", "__import__", "load_module", "exec_module") or (
                tail == "load" and head in ("ep", "entry_point", "entry")
            ):
                imports_by_name.add((rel, owner.get(node, "<module>")))
    return findings, imports_by_name


def test_the_scan_finds_what_it_looks_for() -> None:
    bad = ("import pickle\nfrom yaml import load\n"
           "def f(b, n):\n    pickle.loads(b); eval(b)\n    importlib.import_module(n)\n")
    findings, by_name = scan(bad, "bad.py")
    assert len(findings) == 4 and by_name == {("bad.py", "f")}


def test_the_library_has_no_code_executing_deserialiser_and_no_import_by_stored_name() -> None:
    assert len(SOURCES) > 20
    findings: list[str] = []
    imports_by_name: set[tuple[str, str]] = set()
    for path in SOURCES:
        f, i = scan(path.read_text(), path.relative_to(ROOT).as_posix())
        findings += f
        imports_by_name |= i
    assert findings == []
    assert imports_by_name <= set(ALLOWED_IMPORTS_BY_NAME), imports_by_name - set(ALLOWED_IMPORTS_BY_NAME)
    assert ("persistency/registry.py", "_load") in imports_by_name  # the scan sees the ones that exist


# -- a stored session that names a planted module everywhere ------------------------------------------------
PLANTED = f"planted_payload_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def planted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module on sys.path that writes a marker file when (if ever) it is imported."""
    marker = tmp_path / "imported.txt"
    pkg = tmp_path / "site"
    pkg.mkdir()
    (pkg / f"{PLANTED}.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('imported')\n"
        "class Evil:\n    def __reduce__(self):\n        return (print, ('pwned',))\n"
        "def evil(*a, **k):\n    Path(" + repr(str(marker)) + ").write_text('called')\n"
    )
    monkeypatch.syspath_prepend(str(pkg))
    return marker


def test_the_registry_never_imports_a_module_named_by_a_url(planted: Path) -> None:
    """A URL's scheme selects from a table and installed entry points; a scheme naming a module is refused."""
    for url in (f"{PLANTED}://x", f"{PLANTED}.Evil://x", f"s3+{PLANTED}://x"):
        with pytest.raises(PersistencyError):
            provider_from_url(url)
    assert PLANTED not in sys.modules and not planted.exists()


def _name(kind: str) -> str:
    return f"{PLANTED}.{kind}"


def _tampered(cp: Checkpoint, session: str) -> Checkpoint:
    """``cp`` with every name-bearing field pointing at the planted module, as a new session's first checkpoint."""
    data = cp.model_dump(mode="json")
    for state in data["agent_states"].values():
        state["class"] = _name("Evil")
        state["termination"] = {"kind": "custom", "name": "evil", "module": PLANTED, "restorable": True}
        state["llm_config"] = {"config_list": [{"model": "m", "model_client_cls": _name("Evil"), "api_type": PLANTED}]}
        state["code_execution_config"] = {"executor": {"__object__": _name("Evil")}, "work_dir": "/tmp/x"}
    gc = data["manager_state"].get("groupchat")
    if isinstance(gc, dict):
        gc["speaker_selection_method"] = {"custom": "evil", "module": PLANTED, "restorable": True}
    data["metadata"] = {"py/object": _name("Evil"), "!!python/object/apply:os.system": ["true"],
                        "__reduce__": [_name("evil"), []]}
    data["messages"] = [
        *data["messages"],
        {"role": "user", "name": "user", "content": {"py/reduce": [{"py/function": _name("evil")}], "__class__": "x"}},
    ]
    data["messages"][0]["function_call"] = {"name": _name("evil"), "arguments": "{}"}
    data.update(session_id=session, parent_id=None, step=len(data["messages"]), checkpoint_id="000001-0000010",
                kind="step", end_reason=None)
    return Checkpoint.model_validate(data)


def test_a_stored_record_naming_a_planted_module_is_only_ever_data(
    provider: PersistencyStorageProvider, planted: Path
) -> None:
    from persistency import continue_chat, rebuild_chat

    chat = build_chat(max_round=4)
    Persistency(provider, "honest").attach(chat.manager)
    chat.user.initiate_chat(chat.manager, message="hello", silent=True)
    honest = provider.get_checkpoint("honest", provider.list_checkpoints("honest")[-2].checkpoint_id)
    provider.save_checkpoint(_tampered(honest, "tampered"))

    loaded = provider_from_url_again(provider).get_latest_checkpoint("tampered")
    assert loaded is not None
    assert loaded.metadata["py/object"] == _name("Evil")  # plain data, as stored
    assert isinstance(loaded.messages[-1]["content"], dict)
    assert all(isinstance(s["class"], str) for s in loaded.agent_states.values())
    provider.list_checkpoints("tampered")
    provider.list_sessions()

    outcomes: list[str] = []
    for attempt in (
        lambda: rebuild_chat(loaded, strict=False),
        lambda: rebuild_chat(loaded),
        lambda: continue_chat(provider, "tampered", strict=False),
    ):
        try:
            attempt()
            outcomes.append("ok")
        except PersistencyError as exc:  # refused by name: the caller must pass the class, not the store
            outcomes.append(type(exc).__name__)
    resumed = build_chat(max_round=20)
    Persistency(provider, "tampered").attach(resumed.manager)
    try:
        resumed.user.initiate_chat(resumed.manager, message="hello", silent=True)
    except PersistencyError as exc:
        outcomes.append(type(exc).__name__)
    assert "ResumeError" in outcomes, outcomes
    assert PLANTED not in sys.modules, outcomes
    assert not planted.exists(), planted.read_text()


def provider_from_url_again(provider: PersistencyStorageProvider) -> PersistencyStorageProvider:
    """A second provider on the same store when it has a URL (a reader in another process), else the same one."""
    url: Any = getattr(provider, "url", None)
    if isinstance(url, str) and not url.startswith("memory://"):
        try:
            return provider_from_url(url)
        except PersistencyError:
            return provider
    return provider
