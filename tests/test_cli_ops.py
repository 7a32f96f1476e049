"""The command line's operator features, driven as a person would (typer's runner, a subprocess):
--version, completion, delete, prune's confirmation, bad input, timeouts, Ctrl-C, progress."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from persistency.providers.filesystem import FilesystemStorageProvider
from typer.testing import CliRunner

from persistency import __version__, provider_from_url
from persistency.cli import app
from persistency.cli._walk import SAVE_BATCH
from persistency.provider import PersistencyStorageProvider
from persistency.storage import NewRecord
from persistency.testing import make_chain, make_checkpoint
from tests.test_cli import Result, assert_one_line_error, run


@pytest.fixture
def store(tmp_path: Path) -> str:
    return str(tmp_path / "store")


@pytest.fixture
def provider(store: str) -> PersistencyStorageProvider:
    return provider_from_url(store)


def run_input(*args: str, answer: str) -> Result:
    """Invoke the CLI with ``answer`` typed on stdin (a person answering the question)."""
    r = CliRunner().invoke(app, list(args), input=answer,
                           env={"COLUMNS": "200", "PERSISTENCY_URL": "", "PERSISTENCY_ENCRYPTION_KEY": ""})
    return Result(r.exit_code, r.stdout, r.stderr)


# -- version and completion -------------------------------------------------------------------------
def test_version_names_the_library_ag2_and_python() -> None:
    r = run("--version")
    assert r.exit_code == 0
    assert r.stdout.startswith(f"ag2-persistency {__version__} ")
    assert "autogen" in r.stdout or "ag2" in r.stdout.split("(", 1)[1]


def test_version_of_the_installed_console_script() -> None:
    out = subprocess.run([str(Path(sys.executable).parent / "persistency"), "--version"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and __version__ in out.stdout


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_shell_completion_script(shell: str) -> None:
    r = CliRunner().invoke(app, ["--show-completion", shell], prog_name="persistency")
    assert r.exit_code == 0
    assert "_PERSISTENCY_COMPLETE" in r.stdout


def test_completion_completes_command_names() -> None:
    script = str(Path(sys.executable).parent / "persistency")
    env = {"_PERSISTENCY_COMPLETE": "complete_bash", "COMP_WORDS": "persistency de", "COMP_CWORD": "1",
           "PATH": str(Path(sys.executable).parent)}
    out = subprocess.run([script], capture_output=True, text=True, env=env, timeout=60)
    assert out.stdout.split() == ["delete"]


# -- delete -------------------------------------------------------------------------------------------
def test_delete_asks_and_no_keeps_the_session(store: str, provider: PersistencyStorageProvider) -> None:
    make_chain(provider, "conv-1", 3)
    r = run_input("delete", "conv-1", "-u", store, answer="n\n")
    assert r.exit_code == 1 and "nothing was changed" in r.stderr
    assert provider.list_sessions() == ["conv-1"]
    no_input = run("delete", "conv-1", "-u", store)  # a script without --yes: nothing happens
    assert no_input.exit_code == 1 and provider.list_sessions() == ["conv-1"]


def test_delete_with_yes_or_a_yes_answer(store: str, provider: PersistencyStorageProvider) -> None:
    make_chain(provider, "conv-1", 3)
    make_chain(provider, "conv-2", 2)
    make_chain(provider, "conv-2.pruning", 1)  # a staging copy of an interrupted prune goes too
    r = run_input("delete", "conv-1", "-u", store, answer="y\n")
    assert r.exit_code == 0 and "3 checkpoint(s)" in r.stderr
    r = run("delete", "conv-2", "--yes", "-u", store, "--json")
    assert r.exit_code == 0 and r.json()["also_deleted"] == ["conv-2.pruning"]
    assert provider_from_url(store).list_sessions() == []


def test_delete_of_an_unknown_session_is_one_line(store: str, provider: PersistencyStorageProvider) -> None:
    make_chain(provider, "conv-1", 1)
    assert_one_line_error(run("delete", "nope", "--yes", "-u", store), "no session 'nope'")


# -- prune never deletes without being asked -----------------------------------------------------------
def test_prune_older_than_zero_asks_first(store: str, provider: PersistencyStorageProvider) -> None:
    make_chain(provider, "conv-1", 3)
    make_chain(provider, "conv-2", 2)
    r = run("prune", "--older-than", "0s", "-u", store)
    assert r.exit_code == 1 and "nothing was changed" in r.stderr and "delete 2 session(s)" in r.stderr
    r = run_input("prune", "--older-than", "0s", "-u", store, answer="no\n")
    assert r.exit_code == 1
    assert provider.list_sessions() == ["conv-1", "conv-2"]
    r = run_input("prune", "--older-than", "0s", "-u", store, answer="y\n")
    assert r.exit_code == 0, r.stderr
    assert provider_from_url(store).list_sessions() == []


def test_prune_dry_run_never_asks(store: str, provider: PersistencyStorageProvider) -> None:
    make_chain(provider, "conv-1", 3)
    r = run("prune", "--older-than", "0s", "--dry-run", "-u", store, "--json")
    assert r.exit_code == 0 and "Go ahead" not in r.stderr
    assert r.json()["sessions"][0]["action"] == "delete"
    assert provider.list_sessions() == ["conv-1"]


def test_prune_that_drops_nothing_does_not_ask(store: str, provider: PersistencyStorageProvider) -> None:
    make_chain(provider, "conv-1", 3)
    r = run("prune", "--keep-last-runs", "1", "-u", store)  # one run: nothing to drop
    assert r.exit_code == 0 and "Go ahead" not in r.stderr
    assert provider.list_sessions() == ["conv-1"]


@pytest.mark.parametrize("age", ["99999999999d", "99999999999999999999999w", "36501d"])
def test_prune_absurd_age_is_one_line(store: str, provider: PersistencyStorageProvider, age: str) -> None:
    make_chain(provider, "conv-1", 1)
    assert_one_line_error(run("prune", "--older-than", age, "-u", store), "--older-than", code=2)
    assert provider.list_sessions() == ["conv-1"]


# -- bad input ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cmd", [["sessions"], ["verify"], ["show", "x"], ["prune", "--keep-last-runs", "1"]])
def test_a_file_is_not_a_store(cmd: list[str]) -> None:
    assert_one_line_error(run(*cmd, "--url", "/etc/passwd"), "/etc/passwd is a file, not a store", code=2)


@pytest.mark.parametrize("cmd", [["sessions"], ["verify"], ["delete", "x", "--yes"], ["show", "x"]])
def test_unknown_scheme_is_bad_usage(cmd: list[str]) -> None:
    r = run(*cmd, "--url", "nosuch://:hunter2@h/x")
    assert_one_line_error(r, "unknown storage URL scheme 'nosuch'", code=2)
    assert "hunter2" not in r.stderr


def test_show_and_export_a_deeply_nested_message_that_verify_calls_healthy(
    store: str, provider: PersistencyStorageProvider
) -> None:
    deep: object = "leaf"
    for _ in range(500):
        deep = {"k": deep}
    provider.save_checkpoint(make_checkpoint("deep", 1, messages=[{"role": "user", "name": "u", "content": "hi",
                                                                   "payload": deep}]))
    assert run("verify", "-u", store).exit_code == 0
    for cmd in (["show", "deep", "latest"], ["show", "deep", "latest", "--json"], ["export", "deep"]):
        r = run(*cmd, "-u", store)
        assert r.exit_code == 0, (cmd, r.stderr)
    exported = run("export", "deep", "-u", store).json()
    inner = exported["messages"][0]["payload"]
    for _ in range(500):
        inner = inner["k"]
    assert inner == "leaf"


# -- a server that accepts and never answers -----------------------------------------------------------
@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback TCP server that accepts connections and never sends a byte."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.settimeout(0.2)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        sock.close()


@pytest.mark.timeout(60)
def test_redis_that_never_answers_fails_in_one_line_naming_the_url_and_the_option(silent_server: int) -> None:
    url = f"redis://:hunter2@127.0.0.1:{silent_server}/0"
    r = run("--timeout", "0.5", "sessions", "--url", url)
    assert_one_line_error(r, f"redis://:****@127.0.0.1:{silent_server}/0", "did not answer within 0.5 s",
                          "--timeout SECONDS")
    assert "hunter2" not in r.stderr + r.stdout


#: dummy credentials and no profile or instance metadata: the S3 client talks to the loopback only
_S3_ENV: dict[str, str | None] = {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent/aws-config", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-creds",
    "AWS_PROFILE": None, "AWS_ENDPOINT_URL": None, "AWS_ENDPOINT_URL_S3": None,
}


@pytest.mark.timeout(60)
def test_s3_endpoint_that_never_answers_fails_in_one_line(silent_server: int) -> None:
    url = f"s3://bucket/chats?endpoint_url=http://127.0.0.1:{silent_server}&region=us-east-1"
    r = run("--timeout", "0.5", "sessions", "--url", url, env=_S3_ENV)
    assert_one_line_error(r, f"127.0.0.1:{silent_server}", "did not answer within 0.5 s", "--timeout SECONDS")


@pytest.mark.timeout(60)
def test_timeout_from_the_environment(silent_server: int) -> None:
    r = run("verify", "--url", f"redis://127.0.0.1:{silent_server}/0", env={"PERSISTENCY_TIMEOUT": "0.3"})
    assert_one_line_error(r, "did not answer within 0.3 s")


# -- progress, Ctrl-C --------------------------------------------------------------------------------------
def test_copy_and_verify_show_rate_and_eta_on_a_terminal(provider: PersistencyStorageProvider, store: str) -> None:
    make_chain(provider, "conv-1", 50)
    dst = f"memory://cp-{uuid.uuid4().hex}"
    tty = {"FORCE_COLOR": "1", "TERM": "xterm"}
    r = run("copy", store, dst, env=tty)
    assert r.exit_code == 0 and "/s" in r.stderr and "eta" in r.stderr and "50/50" in r.stderr
    r = run("verify", "-u", dst, env=tty)
    assert r.exit_code == 0 and "/s" in r.stderr and "eta" in r.stderr
    quiet = run("copy", store, dst, "--json", env=tty)  # --json: stdout is JSON, stderr stays empty
    assert quiet.exit_code == 0 and quiet.stderr == "" and quiet.json()["sessions"][0]["skipped"] == 50
    assert run("verify", "-u", dst).stderr == ""  # not a terminal: no progress


def test_copy_interrupted_by_ctrl_c_says_how_to_finish_and_a_rerun_does(
    provider: PersistencyStorageProvider, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = SAVE_BATCH * 2 + 30
    made = make_chain(provider, "conv-1", n)
    dst = f"memory://cp-{uuid.uuid4().hex}"
    original = FilesystemStorageProvider.write_records  # what copy stores each batch with
    batches = {"n": 0}

    def ctrl_c_in_the_third_batch(self: FilesystemStorageProvider, records: Sequence[NewRecord]) -> None:
        batches["n"] += 1
        if batches["n"] > 2:
            raise KeyboardInterrupt
        original(self, records)

    monkeypatch.setattr(FilesystemStorageProvider, "write_records", ctrl_c_in_the_third_batch)
    r = run("copy", store, dst)
    assert r.exit_code == 130
    lines = r.stderr.strip().splitlines()
    done = 2 * SAVE_BATCH
    assert len(lines) == 1 and "run the same command again to finish" in lines[0], r.stderr
    assert f"{done:,} of {n:,}" in lines[0], lines[0]
    monkeypatch.setattr(FilesystemStorageProvider, "write_records", original)
    again = run("copy", store, dst, "--json")
    assert again.exit_code == 0 and again.json()["sessions"][0] == {
        "session_id": "conv-1", "copied": n - done, "skipped": done, "failed": []}
    copied = provider_from_url(dst)
    assert copied.get_checkpoint("conv-1", made[-1].checkpoint_id) == made[-1]


def test_verify_interrupted_by_ctrl_c_names_where_to_go_on(
    provider: PersistencyStorageProvider, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for sid in ("a", "b", "c"):
        make_chain(provider, sid, 3)
    original = FilesystemStorageProvider.read_records  # what the walk reads records with
    seen: list[str] = []

    def ctrl_c_in_b(self: FilesystemStorageProvider, sid: str, ids: Sequence[str]) -> dict[str, bytes]:
        if sid == "b":
            raise KeyboardInterrupt
        seen.append(sid)
        return original(self, sid, ids)

    monkeypatch.setattr(FilesystemStorageProvider, "read_records", ctrl_c_in_b)
    r = run("verify", "-u", store)
    assert r.exit_code == 130
    assert seen == ["a"]  # one batch read per session
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "persistency verify --from-session b" in lines[0]
    monkeypatch.setattr(FilesystemStorageProvider, "read_records", original)
    rest = run("verify", "--from-session", "b", "-u", store, "--json")
    assert rest.exit_code == 0 and rest.json()["sessions"] == 2 and rest.json()["checkpoints"] == 6
