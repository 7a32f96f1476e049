"""No back door for the Koog bug: a step that ended its run is never continued without a new message.

The manager's termination condition is truly custom (a regular expression), so a lenient rebuild
gets AG2's default condition, under which the terminal "DONE: 42" does not count. Continuing must
still refuse to append to the finished run, through the API (sync and async) and through
``persistency continue``: from a finished run's terminal step, and after a kill that left the
terminal step stored without its run end. A new message starts a new run instead."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from persistency import Persistency, PersistencyStorageProvider, continue_chat, provider_from_url
from persistency.rebuild import RunFinishedError, acontinue_chat, closed_reason, termination_held
from tests.helpers_ag2 import Crash, on_run_end
from tests.test_cli import assert_one_line_error, run
from tests.test_feature_rebuild import original_chat, verdict_done

TERMINAL = 6  # "DONE: 42" by checker


def finished(provider: PersistencyStorageProvider, *, killed: bool) -> None:
    """Run the custom-terminated chat to its end; ``killed``: the process dies before storing the run end."""
    student, manager = original_chat(custom_termination=True)
    if killed:
        on_run_end(provider, lambda: (_ for _ in ()).throw(Crash("killed before the run end")))
    Persistency(provider, "s").attach(manager)
    try:
        student.initiate_chat(manager, message="what is 6*7?", silent=True)
    except Crash:
        assert killed
    assert manager.groupchat.messages[-1]["content"] == "DONE: 42" and len(manager.groupchat.messages) == TERMINAL


def flagged_copy(src: PersistencyStorageProvider, dst: PersistencyStorageProvider) -> None:
    """The session as the feature stores it with the per-step flag (#10): whether the live condition held."""
    for info in src.list_checkpoints("s"):
        cp = src.get_checkpoint("s", info.checkpoint_id)
        if cp.kind == "step" and "termination_held" not in cp.manager_state:
            cp.manager_state = {**cp.manager_state, "termination_held": verdict_done(cp.messages[-1])}
        dst.save_checkpoint(cp)


def memory() -> PersistencyStorageProvider:
    return provider_from_url(f"memory://closed-{uuid.uuid4().hex}")


def go_on(provider: PersistencyStorageProvider, is_async: bool, **kwargs: Any) -> Any:
    if is_async:
        return asyncio.run(acontinue_chat(provider, "s", **kwargs))
    return continue_chat(provider, "s", **kwargs)


def count(provider: PersistencyStorageProvider) -> int:
    return len(provider.list_checkpoints("s"))


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("strict", [True, False], ids=["strict", "lenient"])
def test_a_finished_runs_terminal_step_is_closed(is_async: bool, strict: bool) -> None:
    provider = memory()
    finished(provider, killed=False)
    infos = provider.list_checkpoints("s")
    step = next(i for i in infos if i.step == TERMINAL and i.kind == "step")
    end = next(i for i in infos if i.is_run_end)
    kwargs: dict[str, Any] = {"termination": {"boss": verdict_done}} if strict else {"strict": False}
    before = count(provider)
    for checkpoint_id in (step.checkpoint_id, end.checkpoint_id, None):
        with pytest.raises(RunFinishedError, match="finished"):
            go_on(provider, is_async, checkpoint_id=checkpoint_id, max_rounds=3, **kwargs)
    assert count(provider) == before  # nothing written, no model called

    chat = go_on(provider, is_async, checkpoint_id=step.checkpoint_id, message="and 7*8?", max_rounds=3, **kwargs)
    assert chat.groupchat.messages[TERMINAL]["content"] == "and 7*8?"
    assert provider.get_latest_checkpoint("s").run_id == "run-000002"  # type: ignore[union-attr]


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_after_a_kill_before_the_run_end_lenient_does_not_append(is_async: bool) -> None:
    stored = memory()
    finished(stored, killed=True)
    latest = stored.get_latest_checkpoint("s")
    assert latest is not None and latest.kind == "step" and latest.step == TERMINAL
    provider = memory()
    flagged_copy(stored, provider)
    assert termination_held(provider.get_latest_checkpoint("s")) is True  # type: ignore[arg-type]
    before = count(provider)
    with pytest.raises(RunFinishedError, match=r"finished at checkpoint 000001-0000006 \(termination_message\)"):
        go_on(provider, is_async, strict=False, max_rounds=3)
    assert count(provider) == before
    chat = go_on(provider, is_async, strict=False, message="next question", max_rounds=2)
    assert [m["content"] for m in chat.groupchat.messages[: TERMINAL + 1]][-1] == "next question"


def test_after_a_kill_strict_with_the_condition_given_does_not_append() -> None:
    provider = memory()
    finished(provider, killed=True)
    with pytest.raises(RunFinishedError):
        continue_chat(provider, "s", termination={"boss": verdict_done}, max_rounds=3)
    # strict without the condition: the feature's per-step flag already says the step ended its run,
    # so the refusal is that (before any complaint about the custom condition)
    with pytest.raises(RunFinishedError, match="finished at checkpoint"):
        continue_chat(provider, "s", max_rounds=3)
    assert provider.get_latest_checkpoint("s").kind == "step"  # type: ignore[union-attr]


def test_the_flag_as_the_feature_writes_it() -> None:
    provider = memory()
    finished(provider, killed=True)
    latest = provider.get_latest_checkpoint("s")
    assert latest is not None
    assert termination_held(latest) is True
    with pytest.raises(RunFinishedError):
        continue_chat(provider, "s", strict=False, max_rounds=3)


def test_closed_reason_reads_the_flag_before_any_condition() -> None:
    provider = memory()
    finished(provider, killed=True)
    cp = provider.get_latest_checkpoint("s")
    assert cp is not None and cp.manager_state.get("termination_held") is True  # the feature writes the flag
    cp.manager_state = {k: v for k, v in cp.manager_state.items() if k != "termination_held"}  # as 0.1 stored it
    assert closed_reason(cp) is None  # custom code, no flag, no run end: not knowable
    assert closed_reason(cp, condition=verdict_done) == "termination_message"
    cp.manager_state = {**cp.manager_state, "termination_held": False}
    assert closed_reason(cp, condition=verdict_done) is None  # the recorded flag wins over a rebuilt condition
    cp.manager_state = {**cp.manager_state, "termination_held": True}
    assert closed_reason(cp) == "termination_message"
    earlier = provider.get_checkpoint("s", provider.list_checkpoints("s")[2].checkpoint_id)
    assert closed_reason(earlier, condition=verdict_done) is None


def test_persistency_continue_refuses_a_finished_step(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    stored = memory()
    finished(stored, killed=True)
    flagged_copy(stored, provider_from_url(store))  # a kill before the run end, flag as #10 stores it
    for mode in (["--lenient"], []):  # lenient (AG2's default condition) and strict (the custom one refused)
        assert_one_line_error(run("continue", "s", *mode, "-u", store), "finished at checkpoint 000001-0000006",
                              "--message")
    p = provider_from_url(store)
    assert len(p.list_checkpoints("s")) == TERMINAL

    done = str(tmp_path / "done")
    finished(provider_from_url(done), killed=False)  # a finished run, continued from its terminal step
    for mode in (["--lenient"], []):
        assert_one_line_error(run("continue", "s", "000001-0000006", *mode, "-u", done), "finished", "--message")
    r = run("continue", "s", "000001-0000006", "--lenient", "--message", "and 7*8?", "--rounds", "2", "-u", done,
            "--json")
    assert r.exit_code == 0, r.stderr
    out = r.json()
    assert out["run_id"] == "run-000002" and out["messages"][0]["content"] == "and 7*8?"
    assert any("boss" in line and "custom code" in line for line in r.stderr.splitlines())  # lenient says so
