"""Crash and race campaigns: real processes killed with SIGKILL at random instants, and workers racing.

Crash trial (`crash_trial`): a scripted group chat (the shape of ``tests.helpers_ag2``, with every
reply padded so that a save takes a measurable time) runs in a forked child process with the
`Persistency` feature on a provider. The child is killed with SIGKILL either

- ``random``: by the parent, at a uniformly random instant of the run (calibrated per provider), or
- ``in_save``: by a thread of its own, armed as a randomly chosen save starts, after a random part
  of the previous save's duration, so the kill lands inside a save (or just after it).

The child reports each save's start and end through a pipe, so every kill is classified as landing
``mid_save`` or ``between_steps``. After every kill the parent checks, with a fresh provider, that
the session loads, that every stored checkpoint loads and is a prefix of the one true transcript
(nothing damaged, nothing interleaved), then resumes with ``resume_latest`` in its own process and
checks the run ends with exactly the transcript, every agent's history and the round count of an
uninterrupted run.

Race trial (`race_trial`): a run is killed after step 3; two forked workers then start the same
session at once (both read the session before either writes, through a cross-process barrier).
Exactly one must finish the run, the other must stop with `CheckpointConflictError` before any
model call, and every stored checkpoint must be a prefix of the winner's transcript (each worker
tags its replies, so an interleaved history would show).

Run the long campaign (starts its own redis-server, 3-node Redis Cluster and moto S3 server on
loopback ports) and write its figures to JSON::

    .venv/bin/python -m tests.campaign --kills 100 --races 20 --out docs/reliability-campaign.json

A short version runs in the default test suite (``tests/test_reliability_crash.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from autogen import Agent, ConversableAgent

from persistency import CheckpointConflictError, Persistency, PersistencyStorageProvider, provider_from_url
from persistency.scripted import ScriptedModelClient, scripted_config
from tests.helpers_ag2 import Chat, build_chat, digest, histories

__all__ = [
    "SCENARIOS",
    "CampaignError",
    "CrashResult",
    "RaceResult",
    "Scenario",
    "campaign_chat",
    "check_store",
    "crash_trial",
    "race_trial",
    "reference",
]

DEFAULT_PAD = 256 * 1024


class CampaignError(AssertionError):
    """A trial whose outcome breaks a promise (a damaged checkpoint, a wrong transcript, ...)."""


@dataclass(frozen=True)
class Scenario:
    """How a campaign chat ends: after ``max_round`` messages, or with TERMINATE at ``terminate_at``."""

    max_round: int
    terminate_at: int | None
    n: int  # messages of an uninterrupted run


SCENARIOS = {
    "max_rounds": Scenario(max_round=12, terminate_at=None, n=12),
    "termination": Scenario(max_round=20, terminate_at=10, n=10),
}


# -- the chat ------------------------------------------------------------------------------------------
def padded_reply(
    terminate_at: int | None, pad: int, tag: str = "", kill_at: int | None = None, calls: list[int] | None = None
) -> Callable[..., tuple[bool, Any]]:
    """``"<name> step <n> saw <digest><tag>"`` plus ``pad`` deterministic bytes; TERMINATE at ``terminate_at``.

    ``kill_at`` SIGKILLs the process as the reply of that step is about to be produced; ``calls``
    records every step a reply was produced for (a "model call").
    """
    filler = ("0123456789abcdef" * (pad // 16 + 1))[:pad]

    def reply(
        recipient: ConversableAgent,
        messages: list[dict[str, Any]] | None = None,
        sender: Agent | None = None,
        config: Any = None,
    ) -> tuple[bool, Any]:
        history = messages or []
        step = len(history) + 1
        if kill_at is not None and step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if calls is not None:
            calls.append(step)
        if terminate_at is not None and step >= terminate_at:
            return True, "TERMINATE"
        return True, f"{recipient.name} step {step} saw {digest(history)}{tag} {filler}"

    return reply


#: Every campaign agent's and the manager's llm_config carries secrets; no stored byte may hold one.
SECRET = f"S3CR3T-campaign-{uuid.uuid4().hex[:12]}"


def secret_llm_config() -> dict[str, Any]:
    """A scripted llm_config with a secret in the api key, a default header and the base URL's password."""
    return scripted_config(
        ["unused: the padded reply answers first"],
        api_key=f"{SECRET}-key",
        base_url=f"https://user:{SECRET}-pw@example.invalid/v1",
        default_headers={"Authorization": f"Bearer {SECRET}-bearer", "X-Api-Key": f"{SECRET}-header"},
    )


def campaign_chat(
    scenario: str, *, pad: int = DEFAULT_PAD, tag: str = "", kill_at: int | None = None,
    calls: list[int] | None = None,
) -> Chat:
    """`build_chat`'s three agents in round robin, each reply padded to about ``pad`` bytes, with secrets."""
    sc = SCENARIOS[scenario]
    chat = build_chat(max_round=sc.max_round, silent=True, llm_config=secret_llm_config(),
                      manager_llm_config=secret_llm_config())
    reply = padded_reply(sc.terminate_at, pad, tag, kill_at, calls)
    for agent in [chat.user, *chat.agents]:
        agent.register_reply([Agent, None], reply, position=0)
    for agent in [*chat.agents, chat.manager]:
        agent.register_model_client(ScriptedModelClient)
    return chat


def start_chat(chat: Chat, *, is_async: bool) -> None:
    """Initiate the chat as a user would, sync or async (AG2's console output discarded)."""
    with contextlib.redirect_stdout(_SINK):
        if is_async:
            asyncio.run(chat.user.a_initiate_chat(chat.manager, message="hello", silent=True))
        else:
            chat.user.initiate_chat(chat.manager, message="hello", silent=True)


_SINK = open(os.devnull, "w")  # kept open: AG2's console logger keeps the stream it first saw

_REFERENCE: dict[tuple[str, bool, int], tuple[list[dict[str, Any]], dict[str, Any], int]] = {}


def reference(scenario: str, is_async: bool, pad: int) -> tuple[list[dict[str, Any]], dict[str, Any], int]:
    """Transcript, every agent's history and the round count of an uninterrupted run (memoised)."""
    key = (scenario, is_async, pad)
    if key not in _REFERENCE:
        provider = provider_from_url(f"memory://ref-{uuid.uuid4().hex}")
        chat = campaign_chat(scenario, pad=pad)
        Persistency(provider, "ref").attach(chat.manager)
        start_chat(chat, is_async=is_async)
        end = provider.get_latest_checkpoint("ref")
        assert end is not None and end.run_complete and len(chat.groupchat.messages) == SCENARIOS[scenario].n
        _REFERENCE[key] = (chat.transcript(), histories(chat), int(end.manager_state["rounds_used"]))
    return _REFERENCE[key]


# -- checks ------------------------------------------------------------------------------------------------
def check_store(provider: PersistencyStorageProvider, session: str, transcript: list[dict[str, Any]]) -> int:
    """Load every checkpoint of ``session``: each must be a prefix of ``transcript``. Returns how many."""
    infos = provider.list_checkpoints(session)
    ids = {i.checkpoint_id for i in infos}
    for info in infos:
        cp = provider.get_checkpoint(session, info.checkpoint_id)
        if cp.step != len(cp.messages) or cp.messages != transcript[: cp.step]:
            raise CampaignError(f"{session}/{info.checkpoint_id}: step {cp.step} is not a prefix of the transcript")
        if cp.parent_id is not None and cp.parent_id not in ids:
            raise CampaignError(f"{session}/{info.checkpoint_id}: parent {cp.parent_id} is not stored")
    latest = provider.get_latest_checkpoint(session)
    if (latest is None) != (not infos):
        raise CampaignError(f"{session}: latest is {latest} but {len(infos)} checkpoints are listed")
    return len(infos)


def stored_values(url: str) -> list[bytes]:
    """Every value stored under ``url``: files (temporary ones too), Redis keys, fields and values, S3 keys and
    objects."""
    from urllib.parse import parse_qs, urlsplit

    chunks: list[bytes] = []
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    if "://" not in url:
        for root, _, files in os.walk(url):
            chunks += [Path(root, f).read_bytes() for f in files]
    elif parts.scheme in ("redis", "rediss"):
        import redis

        base = url.split("?", 1)[0]
        probe = redis.Redis.from_url(base)
        try:
            cluster = str(probe.info("cluster").get("cluster_enabled", "0")) == "1"
        finally:
            probe.close()
        client: Any = redis.RedisCluster.from_url(base) if cluster else redis.Redis.from_url(base)
        try:
            for key in client.scan_iter(match=f"{query.get('key_prefix', 'persistency')}:*", count=1000):
                chunks.append(key)
                kind = client.type(key).decode()
                if kind == "hash":
                    for k, v in client.hgetall(key).items():
                        chunks += [k, v]
                elif kind == "zset":
                    chunks += client.zrange(key, 0, -1)
                elif kind == "string":
                    chunks.append(client.get(key) or b"")
                else:
                    chunks.append(repr(client.dump(key)).encode())
        finally:
            client.close()
    elif parts.scheme == "s3":
        import botocore.session

        c = botocore.session.get_session().create_client(
            "s3", endpoint_url=query["endpoint_url"], region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing")
        try:
            prefix = parts.path.strip("/") + "/"
            for page in c.get_paginator("list_objects_v2").paginate(Bucket=parts.netloc, Prefix=prefix):
                for obj in page.get("Contents", []):
                    chunks.append(obj["Key"].encode())
                    chunks.append(c.get_object(Bucket=parts.netloc, Key=obj["Key"])["Body"].read())
        finally:
            c.close()
    elif parts.scheme == "sqlite":  # the raw file and its WAL: free pages and torn writes are scanned too
        db = url.split("://", 1)[1].partition("?")[0]
        chunks += [Path(db + end).read_bytes() for end in ("", "-wal", "-journal") if Path(db + end).exists()]
    else:
        raise ValueError(f"cannot scan {url}")
    return chunks


def _expanded(value: bytes) -> bytes:
    """``value`` and, when it holds compressed data (a gzipped pack, a Redis zlib payload after its header
    line), its decompressed form too."""
    import gzip
    import zlib

    out = [value]
    if value.startswith(b"\x1f\x8b"):
        with contextlib.suppress(OSError, EOFError, zlib.error):
            out.append(gzip.decompress(value))
    for body in (value, value.partition(b"\n")[2]):
        with contextlib.suppress(zlib.error):
            out.append(zlib.decompress(body))
    return b"\n".join(out)


def scan_for_secrets(url: str) -> int:
    """Raise `CampaignError` if any stored value (decompressed too) holds a campaign secret; the bytes scanned."""
    scanned = 0
    for value in stored_values(url):
        data = _expanded(value)
        scanned += len(data)
        if SECRET.encode() in data:
            raise CampaignError(f"a secret was stored under {url}")
    return scanned


# -- the crash trial ---------------------------------------------------------------------------------------
@dataclass
class CrashResult:
    """What one kill did and what was checked afterwards."""

    provider: str
    mode: str  # "random" or "in_save"
    scenario: str
    is_async: bool
    durability: str
    seed: int
    killed: bool = False
    landed: str = ""  # "mid_save", "between_steps" or "before_first_save"
    saves_started: int = 0
    stored_after_kill: int = 0
    resumed_from_step: int = 0
    survived: bool = False
    error: str = ""
    secret_bytes_scanned: int = 0
    seconds: float = 0.0


def _marker(fd: int, text: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, f"{text}\n".encode())


def _instrument(provider: PersistencyStorageProvider, fd: int, arm_at: int | None, rng: random.Random) -> None:
    """Report each save's start ("S") and end ("E") on ``fd``; at the ``arm_at``-th save, arm a kill."""
    save, asave = provider.save_checkpoint, provider.asave_checkpoint
    state = {"n": 0, "longest": 0.005, "depth": 0}
    lock = threading.Lock()

    def begin(cp: Any) -> float:
        with lock:
            state["depth"] += 1
            outer = state["depth"] == 1
            if outer:
                state["n"] += 1
                _marker(fd, f"S {cp.checkpoint_id}")
                if state["n"] == arm_at:
                    delay = rng.uniform(0, 1.2 * state["longest"])
                    threading.Thread(target=_kill_after, args=(delay,), daemon=True).start()
        return time.perf_counter() if outer else -1.0

    def end(cp: Any, t0: float) -> None:
        with lock:
            state["depth"] -= 1
            if t0 >= 0:
                state["longest"] = max(state["longest"], time.perf_counter() - t0)
                _marker(fd, f"E {cp.checkpoint_id}")

    def patched(cp: Any) -> None:
        t0 = begin(cp)
        try:
            save(cp)
        finally:
            end(cp, t0)

    async def apatched(cp: Any) -> None:
        t0 = begin(cp)
        try:
            await asave(cp)
        finally:
            end(cp, t0)

    provider.save_checkpoint = patched  # type: ignore[method-assign]
    provider.asave_checkpoint = apatched  # type: ignore[method-assign]


def _kill_after(delay: float) -> None:
    time.sleep(delay)
    os.kill(os.getpid(), signal.SIGKILL)


def _crash_child(url: str, session: str, r: CrashResult, pad: int, arm_at: int | None, fd: int) -> NoReturn:
    code = 4
    try:
        rng = random.Random(r.seed)
        provider = provider_from_url(url)
        chat = campaign_chat(r.scenario, pad=pad)
        _instrument(provider, fd, arm_at, rng)
        Persistency(provider, session, durability=r.durability).attach(chat.manager)  # type: ignore[arg-type]
        _marker(fd, "R")
        start_chat(chat, is_async=r.is_async)
        if arm_at is not None:
            time.sleep(60)  # the armed kill always fires; never exit on our own then
        _marker(fd, "D")
        code = 0
    except BaseException:
        _marker(fd, "X " + traceback.format_exc().replace("\n", " | "))
    finally:
        os._exit(code)


def _read_until(fd: int, token: bytes, pid: int, timeout: float) -> bytes:
    """Read ``fd`` until a line equal to ``token`` arrives (or the child exits, or ``timeout``)."""
    import select

    data = b""
    deadline = time.monotonic() + timeout
    while (token + b"\n") not in data and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
    return data


def _drain(fd: int) -> bytes:
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    return data


def _classify(lines: list[str]) -> tuple[str, int]:
    starts = [ln for ln in lines if ln.startswith("S ")]
    ends = {ln[2:] for ln in lines if ln.startswith("E ")}
    if not starts:
        return "before_first_save", 0
    return ("mid_save" if starts[-1][2:] not in ends else "between_steps"), len(starts)


def crash_trial(
    provider_name: str, url: str, session: str, *, seed: int, pad: int = DEFAULT_PAD,
    mode: str | None = None, run_seconds: float | None = None,
) -> CrashResult:
    """One kill and every check after it. Raises `CampaignError` on a broken promise."""
    rng = random.Random(seed)
    r = CrashResult(
        provider=provider_name,
        mode=mode or rng.choice(["random", "in_save"]),
        scenario=rng.choice(list(SCENARIOS)),
        is_async=rng.random() < 0.5,
        durability=rng.choice(["sync", "sync", "async"]),
        seed=seed,
    )
    if r.mode == "random" and not run_seconds:
        r.mode = "in_save"
    started = time.monotonic()
    n_saves = SCENARIOS[r.scenario].n + 1  # every step and the run end
    arm_at = rng.randint(1, n_saves) if r.mode == "in_save" else None
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(rfd)
        _crash_child(url, session, r, pad, arm_at, wfd)
    os.close(wfd)
    try:
        head = _read_until(rfd, b"R", pid, 120)
        if r.mode == "random" and b"R\n" in head:
            time.sleep(rng.uniform(0, float(run_seconds or 0)))
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        lines = (head + _drain(rfd)).decode(errors="replace").splitlines()
    finally:
        os.close(rfd)
    crashed = [ln for ln in lines if ln.startswith("X ")]
    if crashed:
        raise CampaignError(f"the child failed before being killed: {crashed[0][:3000]}")
    r.killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    if not r.killed:  # the run ended before the kill: not a kill, the caller tries again
        r.seconds = time.monotonic() - started
        return r
    r.landed, r.saves_started = _classify(lines)
    transcript, hist, rounds = reference(r.scenario, r.is_async, pad)
    provider = provider_from_url(url)
    try:
        r.stored_after_kill = check_store(provider, session, transcript)
        r.secret_bytes_scanned = scan_for_secrets(url)  # also what a torn write left behind
        latest = provider.get_latest_checkpoint(session)
        r.resumed_from_step = latest.step if latest is not None else 0
        if latest is not None and latest.run_complete:  # killed after its run end was stored
            if latest.messages != transcript or latest.manager_state["rounds_used"] != rounds:
                raise CampaignError(f"{session}: the stored complete run differs from an uninterrupted one")
        else:
            calls: list[int] = []
            chat = campaign_chat(r.scenario, pad=pad, calls=calls)
            Persistency(provider, session).attach(chat.manager)
            start_chat(chat, is_async=r.is_async)
            end = provider.get_latest_checkpoint(session)
            if chat.transcript() != transcript:
                raise CampaignError(f"{session}: resumed transcript differs from an uninterrupted run")
            if histories(chat) != hist:
                raise CampaignError(f"{session}: resumed agent histories differ from an uninterrupted run")
            if end is None or not end.run_complete or end.manager_state["rounds_used"] != rounds:
                raise CampaignError(f"{session}: the resumed run did not end like an uninterrupted one: {end}")
            first = max(r.resumed_from_step, 1) + 1  # step 1 is the opening message, not a reply
            if calls != list(range(first, SCENARIOS[r.scenario].n + 1)):
                raise CampaignError(f"{session}: resumed from step {r.resumed_from_step} but produced {calls}")
        check_store(provider, session, transcript)
        r.secret_bytes_scanned += scan_for_secrets(url)
        r.survived = True
    finally:
        provider.close()
    r.seconds = time.monotonic() - started
    return r


def calibrate(url: str, session: str, *, pad: int = DEFAULT_PAD, runs: int = 3) -> float:
    """Seconds an uninterrupted child run takes on ``url`` (from ready to exit): the median of ``runs``."""
    times = sorted(_calibration_run(url, f"{session}-{i}", pad) for i in range(runs))
    return times[len(times) // 2]


def _calibration_run(url: str, session: str, pad: int) -> float:
    rfd, wfd = os.pipe()
    r = CrashResult(provider="", mode="", scenario="max_rounds", is_async=False, durability="sync", seed=0)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(rfd)
        _crash_child(url, session, r, pad, None, wfd)
    os.close(wfd)
    try:
        _read_until(rfd, b"R", pid, 120)
        t0 = time.monotonic()
        _, status = os.waitpid(pid, 0)
        seconds = time.monotonic() - t0
        tail = _drain(rfd).decode(errors="replace")
    finally:
        os.close(rfd)
    if status != 0:
        raise CampaignError(f"calibration run failed ({status}): {tail[-3000:]}")
    return seconds


# -- the race trial ----------------------------------------------------------------------------------------
@dataclass
class RaceResult:
    """Two workers started on one unfinished session."""

    provider: str
    is_async: bool
    outcomes: list[str] = field(default_factory=list)
    loser_calls: list[int] = field(default_factory=list)
    loser_message: str = ""
    conflict_reported: bool = False


def _race_worker(url: str, session: str, tag: str, is_async: bool, barrier: Any, fd: int) -> NoReturn:
    code = 4
    calls: list[int] = []
    out: dict[str, Any] = {"tag": tag, "calls": calls}
    try:
        provider = provider_from_url(url)
        get_latest, aget_latest = provider.get_latest_checkpoint, provider.aget_latest_checkpoint

        def synced(session_id: str) -> Any:  # both workers have read the session before either writes
            latest = get_latest(session_id)
            barrier.wait(60)
            return latest

        async def asynced(session_id: str) -> Any:
            latest = await aget_latest(session_id)
            await asyncio.to_thread(barrier.wait, 60)
            return latest

        provider.get_latest_checkpoint = synced  # type: ignore[method-assign]
        provider.aget_latest_checkpoint = asynced  # type: ignore[method-assign]
        chat = campaign_chat("max_rounds", pad=256, tag=tag, calls=calls)
        # the create-only race itself (what a provider without leases relies on): with leases, the second
        # worker is refused before it reads, as tests/test_ownership_workers.py shows
        Persistency(provider, session, ownership=None).attach(chat.manager)
        try:
            start_chat(chat, is_async=is_async)
            out["outcome"] = "done"
        except CheckpointConflictError as exc:
            out["outcome"], out["message"] = "conflict", str(exc)
        code = 0
    except BaseException as exc:
        out["outcome"], out["message"] = "error", f"{type(exc).__name__}: {exc} {traceback.format_exc()}"
    finally:
        with contextlib.suppress(OSError):
            os.write(fd, json.dumps(out).encode())
        os._exit(code)


def race_trial(provider_name: str, url: str, session: str, *, is_async: bool) -> RaceResult:
    """Kill a run after step 3, start two workers on it at once, check exactly one continues."""
    import multiprocessing

    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child that dies before step 4
        os.close(rfd)
        try:
            chat = campaign_chat("max_rounds", pad=256, kill_at=4)
            Persistency(provider_from_url(url), session).attach(chat.manager)
            start_chat(chat, is_async=False)
        finally:
            os._exit(3)
    os.close(wfd)
    os.close(rfd)
    _, status = os.waitpid(pid, 0)
    if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
        raise CampaignError(f"the first run was not killed: {status}")
    barrier = multiprocessing.get_context("fork").Barrier(2)
    workers: list[tuple[int, int]] = []
    for tag in ("[w1]", "[w2]"):
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - a worker
            os.close(rfd)
            _race_worker(url, session, tag, is_async, barrier, wfd)
        os.close(wfd)
        workers.append((pid, rfd))
    reports = []
    for pid, rfd in workers:
        os.waitpid(pid, 0)
        reports.append(json.loads(_drain(rfd) or b"{}"))
        os.close(rfd)
    r = RaceResult(provider_name, is_async, outcomes=[str(x.get("outcome")) for x in reports])
    if sorted(r.outcomes) != ["conflict", "done"]:
        raise CampaignError(f"{session}: expected one winner and one conflict, got {reports}")
    winner = next(x for x in reports if x["outcome"] == "done")
    loser = next(x for x in reports if x["outcome"] == "conflict")
    r.loser_calls, r.loser_message = loser["calls"], loser["message"]
    if r.loser_calls:
        raise CampaignError(f"{session}: the losing worker made model calls {r.loser_calls} before stopping")
    if session not in r.loser_message or "already exists" not in r.loser_message:
        raise CampaignError(f"{session}: the conflict message does not say what happened: {r.loser_message!r}")
    provider = provider_from_url(url)
    try:
        latest = provider.get_latest_checkpoint(session)
        if latest is None or not latest.run_complete or len(latest.messages) != SCENARIOS["max_rounds"].n:
            raise CampaignError(f"{session}: the winner's run is not complete: {latest}")
        final = latest.messages
        if any(winner["tag"] not in str(m.get("content")) for m in final[3:]) or any(
            loser["tag"] in str(m.get("content")) for m in final
        ):
            raise CampaignError(f"{session}: the final history interleaves the two workers")
        check_store(provider, session, final)
        if winner["calls"] != list(range(4, SCENARIOS["max_rounds"].n + 1)):
            raise CampaignError(f"{session}: the winner produced {winner['calls']}")
    finally:
        provider.close()
    r.conflict_reported = True
    return r


# -- the standalone campaign ---------------------------------------------------------------------------------
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/nonexistent/aws-config",
           "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials"}
S3_BUCKET = "persistency-campaign"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def moto_process(*, set_env: bool = True) -> Iterator[str]:
    """A moto S3 server in its own process (loopback, free port) with `S3_BUCKET`; yields the endpoint.

    ``set_env`` puts moto's dummy credentials in this process's environment (for forked children).
    """
    import botocore.session

    if set_env:
        os.environ.update(AWS_ENV)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        client = botocore.session.get_session().create_client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"], aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"])
        deadline = time.monotonic() + 60
        while True:
            try:
                client.create_bucket(Bucket=S3_BUCKET)
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        client.close()
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def campaign_servers(names: list[str], workdir: Path) -> Iterator[dict[str, Callable[[], str]]]:
    """Start what ``names`` need; yield a fresh-URL factory per provider name."""
    from tests.servers.redis_server import start_cluster, start_redis

    with contextlib.ExitStack() as stack:
        urls: dict[str, Callable[[], str]] = {}
        for name in names:
            if name == "file":
                urls[name] = lambda: str(workdir / f"store-{uuid.uuid4().hex[:8]}")
            elif name == "sqlite":
                urls[name] = lambda: f"sqlite://{workdir}/store-{uuid.uuid4().hex[:8]}.db"
            elif name == "redis":
                server = start_redis(workdir / "redis")
                stack.callback(server.stop)
                urls[name] = lambda base=server.url: f"{base}?key_prefix=c-{uuid.uuid4().hex[:8]}"
            elif name == "redis_cluster":
                nodes = start_cluster(workdir / "cluster")
                for node in nodes:
                    stack.callback(node.stop)
                urls[name] = lambda base=nodes[0].url: f"{base}?key_prefix=c-{uuid.uuid4().hex[:8]}"
            elif name == "s3":
                endpoint = stack.enter_context(moto_process())
                urls[name] = lambda e=endpoint: (
                    f"s3://{S3_BUCKET}/c-{uuid.uuid4().hex[:8]}?endpoint_url={e}&region=us-east-1&pack_every=4")
            else:
                raise SystemExit(f"unknown provider {name!r}")
        yield urls


def run_campaign(names: list[str], kills: int, races: int, seed: int, pad: int, log: Callable[[str], None]) -> dict[
        str, Any]:
    """Every provider: ``kills`` crash trials, then ``races`` race trials. Returns the figures."""
    started = time.time()
    figures: dict[str, Any] = {
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seed": seed, "pad_bytes": pad, "kills_per_provider": kills, "races_per_provider": races,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_at_start": os.getloadavg()[0]},
        "providers": {},
    }
    failures: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="persistency-campaign-") as tmp, \
            campaign_servers(names, Path(tmp)) as urls:
        for name in names:
            url = urls[name]()
            run_seconds = calibrate(url, "calibrate", pad=pad)
            rng = random.Random(f"{seed}-{name}")
            results: list[CrashResult] = []
            missed = 0
            while len(results) < kills:
                trial_seed = rng.randrange(2**32)
                try:
                    r = crash_trial(name, urls[name](), "s", seed=trial_seed, pad=pad, run_seconds=run_seconds)
                except Exception as exc:
                    failures.append({"provider": name, "kind": "crash", "seed": trial_seed,
                                     "error": f"{type(exc).__name__}: {exc}"[:3000]})
                    log(f"{name}: FAILED seed {trial_seed}: {exc}")
                    results.append(CrashResult(name, "?", "?", False, "?", trial_seed, killed=True, error=str(exc)))
                    continue
                if not r.killed:
                    missed += 1
                    continue
                results.append(r)
                if len(results) % 10 == 0:
                    log(f"{name}: {len(results)}/{kills} kills, {sum(x.survived for x in results)} survived")
            race_results: list[dict[str, Any]] = []
            for i in range(races):
                try:
                    race_results.append(asdict(race_trial(name, urls[name](), "s", is_async=bool(i % 2))))
                except Exception as exc:
                    failures.append({"provider": name, "kind": "race", "error": f"{type(exc).__name__}: {exc}"[:3000]})
                    race_results.append({"conflict_reported": False, "error": str(exc)[:3000]})
            figures["providers"][name] = {
                "calibrated_run_seconds": round(run_seconds, 3),
                "kills_tried": len(results),
                "kills_survived": sum(r.survived for r in results),
                "kills_mid_save": sum(r.landed == "mid_save" for r in results),
                "kills_between_steps": sum(r.landed == "between_steps" for r in results),
                "kills_before_first_save": sum(r.landed == "before_first_save" for r in results),
                "kills_by_mode": {m: sum(r.mode == m for r in results) for m in ("random", "in_save")},
                "kills_in_async_chats": sum(r.is_async for r in results),
                "kills_with_async_durability": sum(r.durability == "async" for r in results),
                "random_kills_that_missed_the_run": missed,
                "checkpoints_read_after_kills": sum(r.stored_after_kill for r in results),
                "secret_scans": 2 * sum(r.survived for r in results),
                "bytes_scanned_for_secrets": sum(r.secret_bytes_scanned for r in results),
                "secrets_found": sum("secret was stored" in r.error for r in results),
                "races_run": len(race_results),
                "conflicts_correctly_reported": sum(bool(x.get("conflict_reported")) for x in race_results),
                "trials": [asdict(r) for r in results],
            }
            log(f"{name}: done: {figures['providers'][name]['kills_survived']}/{len(results)} kills survived, "
                f"{figures['providers'][name]['conflicts_correctly_reported']}/{races} races")
    figures["failures"] = failures
    figures["seconds"] = round(time.time() - started, 1)
    figures["machine"]["load_at_end"] = os.getloadavg()[0]
    return figures


def dump_figures(figures: dict[str, Any]) -> str:
    """The figures as JSON: readable summary, one line per trial."""
    trials = {name: f.pop("trials") for name, f in figures["providers"].items()}
    text = json.dumps(figures, indent=1)
    for name, f in figures["providers"].items():
        f["trials"] = trials[name]
    lines = json.loads(text)
    lines["trials"] = "@@TRIALS@@"
    out = json.dumps(lines, indent=1)
    body = ",\n".join(f"  {json.dumps(t)}" for name in trials for t in trials[name])
    return out.replace('"@@TRIALS@@"', "[\n" + body + "\n ]") + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.campaign``: run the campaign, print a summary, write the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=100, help="kills per provider (default 100)")
    parser.add_argument("--races", type=int, default=20, help="races per provider (default 20)")
    parser.add_argument("--providers", default="file,redis,redis_cluster,s3")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--pad", type=int, default=DEFAULT_PAD, help="bytes of padding per reply")
    parser.add_argument("--out", default="reliability-campaign.json")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers we started on a plain kill
    import logging

    logging.getLogger("autogen.oai.client").setLevel(logging.WARNING)  # one line per agent built, otherwise
    figures = run_campaign([p for p in args.providers.split(",") if p], args.kills, args.races, args.seed, args.pad,
                           lambda s: print(s, flush=True))
    Path(args.out).write_text(dump_figures(figures))
    for name, f in figures["providers"].items():
        print(f"{name:14} kills {f['kills_survived']}/{f['kills_tried']} survived "
              f"({f['kills_mid_save']} mid-save), races {f['conflicts_correctly_reported']}/{f['races_run']}")
    print(f"failures: {len(figures['failures'])}; figures in {args.out}")
    return 1 if figures["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
