"""The ``persistency`` command as a user drives it: sessions, show, export, verify, and its errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from persistency import provider_from_url
from persistency.cli import app
from persistency.provider import PersistencyStorageProvider
from persistency.redaction import REDACTED
from persistency.testing import make_chain, make_checkpoint
from tests.fs_records import RecordInSegment, record_file

SECRET = "sk-test-SECRET-1234567890"


class Result:
    """What a command printed and returned."""

    def __init__(self, exit_code: int, stdout: str, stderr: str) -> None:
        self.exit_code, self.stdout, self.stderr = exit_code, stdout, stderr

    def json(self) -> Any:
        return json.loads(self.stdout)


def run(*args: str, env: dict[str, str | None] | None = None) -> Result:
    """Invoke the CLI in-process, as typer's runner does, with a wide terminal."""
    base = {"COLUMNS": "200", "PERSISTENCY_URL": "", "PERSISTENCY_ENCRYPTION_KEY": ""}
    r = CliRunner().invoke(app, list(args), env={**base, **(env or {})})
    return Result(r.exit_code, r.stdout, r.stderr)


def assert_one_line_error(r: Result, *needles: str, code: int = 1) -> None:
    assert r.exit_code == code, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    for n in needles:
        assert n in lines[0]


@pytest.fixture
def store(tmp_path: Path) -> str:
    return str(tmp_path / "store")


@pytest.fixture
def provider(store: str) -> PersistencyStorageProvider:
    return provider_from_url(store)


def populate(p: PersistencyStorageProvider) -> dict[str, Any]:
    """conv-1: run 1 (6 steps, finished) and run 2 branching at step 3; conv-2: 2 unfinished steps."""
    run1 = make_chain(p, "conv-1", 6)
    end = make_checkpoint("conv-1", 6, parent_id=run1[-1].checkpoint_id, messages=run1[-1].messages,
                          kind="run_end", end_reason="termination_message", end_seq=1)
    p.save_checkpoint(end)
    run2 = make_chain(p, "conv-1", 3, run_seq=2, start=run1[2])
    other = make_chain(p, "conv-2", 2)
    return {"run1": run1, "end": end, "run2": run2, "other": other}


# -- help -----------------------------------------------------------------------------------------
def test_help_lists_every_command() -> None:
    r = run("--help")
    assert r.exit_code == 0
    for cmd in ("sessions", "show", "export", "continue", "copy", "prune", "verify"):
        assert cmd in r.stdout


@pytest.mark.parametrize("cmd", ["sessions", "show", "export", "continue", "prune", "verify"])
def test_each_command_has_help_with_url(cmd: str) -> None:
    r = run(cmd, "--help")
    assert r.exit_code == 0
    assert "--url" in r.stdout and "PERSISTENCY_URL" in r.stdout


# -- sessions -------------------------------------------------------------------------------------
def test_sessions_table_and_json(store: str, provider: PersistencyStorageProvider) -> None:
    populate(provider)
    r = run("sessions", "--url", store)
    assert r.exit_code == 0
    assert "conv-1" in r.stdout and "conv-2" in r.stdout and "unfinished" in r.stdout
    rows = {row["session_id"]: row for row in run("sessions", "--url", store, "--json").json()}
    assert rows["conv-1"]["runs"] == 2
    assert rows["conv-1"]["checkpoints"] == 10
    assert rows["conv-1"]["latest_run"] == "run-000002"
    assert rows["conv-1"]["latest_run_finished"] is False
    assert rows["conv-2"]["steps"] == 2


def test_sessions_reports_a_finished_latest_run(store: str, provider: PersistencyStorageProvider) -> None:
    chain = make_chain(provider, "done", 2)
    provider.save_checkpoint(make_checkpoint("done", 2, parent_id=chain[-1].checkpoint_id,
                                             messages=chain[-1].messages, kind="run_end",
                                             end_reason="max_rounds", end_seq=1))
    [row] = run("sessions", "-u", store, "--json").json()
    assert row["latest_run_finished"] is True and row["latest_run_status"] == "finished"
    assert "finished (max_rounds)" in run("sessions", "-u", store).stdout


def test_url_defaults_to_env_then_the_default_folder(
    tmp_path: Path, store: str, provider: PersistencyStorageProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    populate(provider)
    assert {r["session_id"] for r in run("sessions", "--json", env={"PERSISTENCY_URL": store}).json()} == {
        "conv-1", "conv-2"}
    monkeypatch.chdir(tmp_path)
    make_chain(provider_from_url("./.persistency"), "local", 1)
    assert [r["session_id"] for r in run("sessions", "--json").json()] == ["local"]


def test_no_sessions_is_not_an_error(store: str) -> None:
    r = run("sessions", "-u", store)
    assert r.exit_code == 0 and "no sessions" in r.stderr
    assert run("sessions", "-u", store, "--json").json() == []


# -- show -----------------------------------------------------------------------------------------
def test_show_session_timeline_branches_and_checkpoints(store: str, provider: PersistencyStorageProvider) -> None:
    populate(provider)
    data = run("show", "conv-1", "-u", store, "--json").json()
    run1, run2 = data["runs"]
    assert run1["status"] == "finished" and run1["end_reason"] == "termination_message"
    assert run1["origin_checkpoint"] is None
    assert run2["status"] == "unfinished" and run2["branch"] is True
    assert run2["origin_checkpoint"] == "000001-0000003" and run2["origin_run"] == "run-000001"
    ids = [c["checkpoint_id"] for c in data["checkpoints"]]
    assert ids == [c.checkpoint_id for c in provider.list_checkpoints("conv-1")]
    speakers = {c["checkpoint_id"]: c["speaker"] for c in data["checkpoints"]}
    assert speakers["000001-0000001"] == "alice" and speakers["000002-0000005"] == "bob"
    table = run("show", "conv-1", "-u", store)
    assert table.exit_code == 0
    for text in ("run-000001", "run-000002", "branch of run-000001 at 000001-0000003", "termination_message",
                 "000001-0000006-end1", "carol"):
        assert text in table.stdout
    last = run("show", "conv-1", "--last", "2", "-u", store, "--json").json()
    assert [c["checkpoint_id"] for c in last["checkpoints"]] == ids[-2:]


def test_show_a_run_that_follows_a_finished_one(store: str, provider: PersistencyStorageProvider) -> None:
    chain = make_chain(provider, "s", 2)
    end = make_checkpoint("s", 2, parent_id=chain[-1].checkpoint_id, messages=chain[-1].messages,
                          kind="run_end", end_reason="termination_message", end_seq=1)
    provider.save_checkpoint(end)
    make_chain(provider, "s", 2, run_seq=2, start=end)
    data = run("show", "s", "-u", store, "--json").json()
    assert data["runs"][1]["branch"] is False and data["runs"][1]["origin_run"] == "run-000001"
    assert "after run-000001" in run("show", "s", "-u", store).stdout


def test_show_checkpoint_transcript_and_states_with_secrets_redacted(
    store: str, provider: PersistencyStorageProvider
) -> None:
    states = {
        "alice": {"name": "alice", "system_message": "You are alice.",
                  "llm_config": {"config_list": [{"model": "gpt-4o", "api_key": SECRET}],
                                 "default_headers": {"Authorization": f"Bearer {SECRET}"}}},
        "bob": {"name": "bob", "llm_config": {"aws_secret_key": SECRET, "max_tokens": 512}},
    }
    msgs = [{"content": "[bold red]not markup[/] 2+2?", "role": "user", "name": "alice"},
            {"content": "It is 4. TERMINATE", "role": "assistant", "name": "bob"}]
    provider.save_checkpoint(make_checkpoint("sec", 2, messages=msgs, agent_states=states))
    r = run("show", "sec", "latest", "-u", store)
    assert r.exit_code == 0, r.stderr
    assert SECRET not in r.stdout
    assert REDACTED in r.stdout and "gpt-4o" in r.stdout and "512" in r.stdout
    assert "[bold red]not markup[/] 2+2?" in r.stdout and "It is 4. TERMINATE" in r.stdout
    assert "agent alice" in r.stdout and "manager" in r.stdout
    data = run("show", "sec", "000001-0000002", "-u", store, "--json").json()
    assert SECRET not in json.dumps(data)
    assert data["agent_states"]["alice"]["llm_config"]["config_list"][0]["api_key"] == REDACTED
    assert data["agent_states"]["bob"]["llm_config"]["max_tokens"] == 512
    assert data["messages"] == msgs


# -- export ---------------------------------------------------------------------------------------
def test_export_prints_the_materialized_checkpoint(
    store: str, provider: PersistencyStorageProvider, tmp_path: Path
) -> None:
    made = populate(provider)
    latest = provider.get_latest_checkpoint("conv-1")
    assert latest is not None
    assert run("export", "conv-1", "-u", store).json() == latest.model_dump(mode="json")
    target = made["run1"][4]
    r = run("export", "conv-1", target.checkpoint_id, "-o", str(tmp_path / "cp.json"), "-u", store)
    assert r.exit_code == 0 and r.stdout == ""
    exported = json.loads((tmp_path / "cp.json").read_text(encoding="utf-8"))
    assert exported == target.model_dump(mode="json")
    assert len(exported["messages"]) == 5


# -- verify ---------------------------------------------------------------------------------------
def _record(store: str, session: str, checkpoint_id: str) -> RecordInSegment:
    return record_file(Path(store), session, checkpoint_id)


def test_verify_clean_store_exits_zero(store: str, provider: PersistencyStorageProvider) -> None:
    populate(provider)
    r = run("verify", "-u", store)
    assert r.exit_code == 0 and "12 checkpoint(s) in 2 session(s): 0 damaged" in r.stdout
    assert run("verify", "conv-2", "-u", store, "--json").json() == {"sessions": 1, "checkpoints": 2, "damaged": []}


def test_verify_reports_damaged_and_unreadable_checkpoints(store: str, provider: PersistencyStorageProvider) -> None:
    made = populate(provider)
    _record(store, "conv-2", made["other"][1].checkpoint_id).write_bytes(b'{"info": garbage\n')
    _record(store, "conv-1", made["run1"][3].checkpoint_id).unlink()  # a base the later steps need
    r = run("verify", "-u", store, "--json")
    assert r.exit_code == 1
    bad = {(d["session_id"], d["checkpoint_id"]) for d in r.json()["damaged"]}
    assert ("conv-2", "000001-0000002") in bad
    assert ("conv-1", "000001-0000005") in bad and ("conv-1", "000001-0000006-end1") in bad
    assert ("conv-1", "000001-0000003") not in bad and ("conv-1", "000002-0000006") not in bad
    table = run("verify", "conv-2", "-u", store)
    assert table.exit_code == 1 and "000001-0000002" in table.stdout and "1 damaged" in table.stdout


# -- errors ---------------------------------------------------------------------------------------
def test_unknown_session_and_checkpoint_are_one_line_errors(store: str, provider: PersistencyStorageProvider) -> None:
    populate(provider)
    for cmd in (["show", "nope"], ["export", "nope"], ["verify", "nope"], ["continue", "nope", "--rounds", "1"]):
        assert_one_line_error(run(*cmd, "-u", store), "no session 'nope'")
    assert_one_line_error(run("show", "conv-1", "000009-0000001", "-u", store), "no checkpoint '000009-0000001'")
    assert_one_line_error(run("export", "conv-1", "000009-0000001", "-u", store), "no checkpoint")


def test_bad_ids_and_urls_are_one_line_errors(store: str) -> None:
    # what the person typed is wrong: bad usage, exit status 2
    assert_one_line_error(run("show", "../etc", "-u", store), "'..'", code=2)
    assert_one_line_error(run("sessions", "-u", "nosuch://x"), "unknown storage URL scheme 'nosuch'", code=2)
    assert_one_line_error(run("sessions", "-u", "redis://:hunter2@127.0.0.1:1/0"))
    assert "hunter2" not in run("sessions", "-u", "nosuch://:hunter2@h/x").stderr


def test_damaged_checkpoint_is_a_one_line_error_for_show(store: str, provider: PersistencyStorageProvider) -> None:
    made = populate(provider)
    _record(store, "conv-2", made["other"][1].checkpoint_id).write_bytes(b"\x00\xff not json")
    assert_one_line_error(run("show", "conv-2", "000001-0000002", "-u", store))
    assert_one_line_error(run("export", "conv-2", "-u", store))


def test_bad_usage_exits_two(store: str) -> None:
    assert run("show", "-u", store).exit_code == 2
    assert run("prune", "-u", store).exit_code == 2
    assert run("prune", "--older-than", "soon", "-u", store).exit_code == 2


# -- the installed console script -----------------------------------------------------------------
def test_console_script_runs_as_a_subprocess(store: str, provider: PersistencyStorageProvider) -> None:
    populate(provider)
    script = Path(sys.executable).parent / "persistency"
    if not script.exists():
        pytest.skip("console script not installed in this environment")
    env = {**os.environ, "PERSISTENCY_URL": store, "COLUMNS": "200"}
    env.pop("PERSISTENCY_ENCRYPTION_KEY", None)
    ok = subprocess.run([str(script), "sessions", "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert {r["session_id"] for r in json.loads(ok.stdout)} == {"conv-1", "conv-2"}
    bad = subprocess.run([str(script), "show", "missing"], capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr


def test_a_damaged_session_is_listed_as_unreadable_not_fatal(store: str, provider: PersistencyStorageProvider) -> None:
    made = populate(provider)
    _record(store, "conv-2", made["other"][0].checkpoint_id).write_bytes(b"garbage")
    r = run("sessions", "-u", store)
    assert r.exit_code == 0 and "unreadable" in r.stdout and "conv-1" in r.stdout
    rows = {row["session_id"]: row for row in run("sessions", "-u", store, "--json").json()}
    assert "error" in rows["conv-2"] and rows["conv-1"]["runs"] == 2


def test_show_without_the_encryption_key_still_lists(tmp_path: Path) -> None:
    from persistency.encryption import generate_key

    url = str(tmp_path / "enc")
    populate(provider_from_url(url, encryption_key=generate_key()))
    r = run("show", "conv-1", "-u", url)
    assert r.exit_code == 0 and "000002-0000006" in r.stdout
    assert r.stderr.count("warning: speakers not shown") == 1
    assert_one_line_error(run("show", "conv-1", "latest", "-u", url), "encrypt")
