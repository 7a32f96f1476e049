"""Worker processes for the ownership tests: a scripted group chat under `Persistency` with leases on.

Each worker is a forked process with its own provider and its own model-call log (the offline
`ScriptedModelClient`'s ``call_log``: one line per model call), so a test counts what every worker
paid. A worker can be held at a step (``hold_at``: it writes ``reached`` and waits for ``go``,
inside the model call's turn, with its lease renewed meanwhile), can fail at a step (``fail_at``),
and reports one JSON line: its outcome, its model calls, the transcript its chat ended with.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

from autogen import Agent, ConversableAgent, GroupChat, GroupChatManager

from persistency import Persistency, provider_from_url
from persistency.errors import CheckpointConflictError, SessionBusyError, SessionDeletedError
from persistency.feature._ownership import Ownership
from persistency.policies import ResumePolicy
from persistency.scripted import ScriptedModelClient, scripted_config

MAX_ROUND = 9  # the opening message and eight replies
_SINK = open(os.devnull, "w")  # AG2's console keeps the stream it first saw


@dataclass
class Job:
    """What one worker does."""

    url: str
    session: str
    workdir: str
    tag: str
    message: str = "hello"
    ownership: dict[str, Any] | None = field(default_factory=lambda: {"lease_ttl": 2.0})  # None: the default
    policy: str = "latest"  # "latest" or a checkpoint id for resume_from
    hold_at: int | None = None
    fail_at: int | None = None
    kill_at: int | None = None
    start_at: float = 0.0  # wall-clock instant to start at (workers released together)
    is_async: bool = False  # a_initiate_chat: the same plans on the provider's async twins
    quiet: bool = True  # redirect stdout around the chat (not in threads: the redirect is process-wide)


def _gate(job: Job) -> Any:
    def gate(recipient: ConversableAgent, messages: list[dict[str, Any]] | None = None, sender: Agent | None = None,
             config: Any = None) -> tuple[bool, Any]:
        step = len(messages or []) + 1
        if step == job.kill_at:
            os.kill(os.getpid(), 9)
        if step == job.fail_at:
            raise RuntimeError(f"scripted failure at step {step}")
        if step == job.hold_at:
            Path(job.workdir, f"{job.tag}.reached").write_text(str(time.time()))
            limit = time.monotonic() + 120
            while not Path(job.workdir, f"{job.tag}.go").exists() and time.monotonic() < limit:
                time.sleep(0.02)
        return False, None  # the model answers (and is counted)

    return gate


def build(job: Job) -> tuple[ConversableAgent, GroupChatManager, GroupChat]:
    """``user`` opens; ``alice`` and ``bob`` answer in turn through the scripted model (calls logged)."""
    log = str(Path(job.workdir, f"{job.tag}.calls"))
    user = ConversableAgent("user", llm_config=False, human_input_mode="NEVER", code_execution_config=False)
    agents = []
    for name in ("alice", "bob"):
        cfg = scripted_config([f"{name} reply {i}" for i in range(8)], digest=True, speaker=name, call_log=log)
        agent = ConversableAgent(name, system_message=f"You are {name}.", llm_config=cfg, human_input_mode="NEVER")
        agent.register_model_client(ScriptedModelClient)
        agent.register_reply([Agent, None], _gate(job), position=0)
        agents.append(agent)
    gc = GroupChat(agents=agents, messages=[], max_round=MAX_ROUND, speaker_selection_method="round_robin")
    return user, GroupChatManager(gc, name="manager", llm_config=False), gc


def calls(workdir: str, tag: str) -> int:
    """Model calls the worker ``tag`` made."""
    path = Path(workdir, f"{tag}.calls")
    return len(path.read_text().splitlines()) if path.exists() else 0


def _setup(job: Job) -> tuple[Any, ConversableAgent, GroupChatManager, GroupChat, Persistency]:
    provider = provider_from_url(job.url)
    user, manager, gc = build(job)
    policy = ResumePolicy.resume_latest() if job.policy == "latest" else ResumePolicy.resume_from(job.policy)
    ownership: Ownership | Literal["auto"] = Ownership(**job.ownership) if job.ownership is not None else "auto"
    feature = Persistency(provider, job.session, policy=policy, ownership=ownership).attach(manager)
    return provider, user, manager, gc, feature


def _outcome(out: dict[str, Any], exc: BaseException | None, feature: Persistency) -> None:
    if exc is None:
        out["outcome"] = "ran" if feature.last_run_id is not None else "returned"
    else:
        kinds = [(SessionBusyError, "busy"), (SessionDeletedError, "deleted"), (CheckpointConflictError, "conflict"),
                 (RuntimeError, "failed")]
        kind = next((k for t, k in kinds if isinstance(exc, t)), None)
        if kind is None:
            raise exc
        out["outcome"], out["message"] = kind, str(exc)


def _finish(out: dict[str, Any], job: Job, user: ConversableAgent, manager: GroupChatManager, gc: GroupChat) -> None:
    out["transcript"] = [str(m.get("content")) for m in gc.messages]
    out["history"] = [str(m.get("content")) for m in user.chat_messages.get(manager, [])]


def run_job(job: Job) -> dict[str, Any]:
    """Run one worker in this process (or thread); its report. An async job runs `arun_job` on its own loop."""
    if job.is_async:
        return asyncio.run(arun_job(job))
    out: dict[str, Any] = {"tag": job.tag}
    provider = None
    try:
        provider, user, manager, gc, feature = _setup(job)
        while time.time() < job.start_at:
            time.sleep(0.0005)
        failure: BaseException | None = None
        try:
            with contextlib.redirect_stdout(_SINK) if job.quiet else contextlib.nullcontext():
                user.initiate_chat(manager, message=job.message, silent=True)
        except Exception as exc:
            failure = exc
        _outcome(out, failure, feature)
        _finish(out, job, user, manager, gc)
    except BaseException as exc:
        out["outcome"], out["message"] = "error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
    finally:
        if provider is not None:
            provider.close()
    out["calls"] = calls(job.workdir, job.tag)
    return out


async def arun_job(job: Job) -> dict[str, Any]:
    """`run_job` with ``a_initiate_chat`` on the running loop (so many jobs can be tasks of one loop)."""
    out: dict[str, Any] = {"tag": job.tag}
    provider = None
    try:
        provider, user, manager, gc, feature = _setup(job)
        while time.time() < job.start_at:
            await asyncio.sleep(0.0005)
        failure: BaseException | None = None
        try:
            with contextlib.redirect_stdout(_SINK) if job.quiet else contextlib.nullcontext():
                await user.a_initiate_chat(manager, message=job.message, silent=True)
        except Exception as exc:
            failure = exc
        _outcome(out, failure, feature)
        _finish(out, job, user, manager, gc)
    except BaseException as exc:
        out["outcome"], out["message"] = "error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
    finally:
        if provider is not None:
            provider.close()
    out["calls"] = calls(job.workdir, job.tag)
    return out


def _child(job: Job, fd: int) -> NoReturn:
    code = 0
    try:
        report = run_job(job)
    except BaseException as exc:  # pragma: no cover - run_job reports its own errors
        report, code = {"tag": job.tag, "outcome": "error", "message": repr(exc)}, 3
    with contextlib.suppress(OSError):
        os.write(fd, json.dumps(report).encode())
    os._exit(code)


def spawn(job: Job) -> tuple[int, int]:
    """Fork a worker; (pid, read end of its report pipe)."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(rfd)
        _child(job, wfd)
    os.close(wfd)
    return pid, rfd


def collect(workers: list[tuple[int, int]], timeout: float = 180) -> list[dict[str, Any]]:
    """Every worker's report (a worker killed by a signal reports ``killed``)."""
    reports = []
    deadline = time.monotonic() + timeout
    for pid, rfd in workers:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                status = -1
                break
            time.sleep(0.02)
        data = b""
        while chunk := os.read(rfd, 65536):
            data += chunk
        os.close(rfd)
        killed = status != -1 and os.WIFSIGNALED(status)
        reports.append({"outcome": "killed"} if killed else json.loads(data or b'{"outcome": "hung"}'))
    record(reports)
    return reports


def record(reports: list[dict[str, Any]]) -> None:
    """With ``OWNERSHIP_FIGURES=FILE``, append each worker's outcome and model calls, by test (the figures in
    docs/reliability.md are counted from such a file)."""
    target = os.environ.get("OWNERSHIP_FIGURES")
    if target:
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
        with open(target, "a", encoding="utf-8") as fh:
            for r in reports:
                fh.write(json.dumps({"test": test, "outcome": r.get("outcome"), "calls": r.get("calls")}) + "\n")


def wait_for(path: Path, timeout: float = 120) -> None:
    """Until ``path`` exists (bounded)."""
    limit = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < limit, f"{path.name} never appeared"
        time.sleep(0.02)
