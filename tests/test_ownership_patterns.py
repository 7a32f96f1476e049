"""Ownership through the async group API: ``a_run_group_chat`` and ``a_initiate_group_chat`` of a pattern.

The attached feature owns each run the pattern's manager starts, with the same one-body plans as
``a_initiate_chat``. Eight forked workers continue a session whose first worker was killed mid-run
(holding its lease): exactly one continues it, the others wait, are shown that finished run and pay
0 model calls; the transcript is the uninterrupted one, every step once.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from persistency import Ownership, Persistency, provider_from_url
from tests.helpers_pattern import Turns, build, calls, drive
from tests.ownership_harness import record

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the workers are forked processes")

WORKERS = 8
KIND = "round_robin"


def _worker(url: str, tag: str, tmp: Path, entry: str, start_at: float, kill_at: int | None) -> dict[str, Any]:
    log = str(tmp / f"{tag}.calls")
    pattern = build(KIND, log, Turns(kill_at=kill_at) if kill_at else None)
    feature = Persistency(url, "s", ownership=Ownership(lease_ttl=2.0, wait=60.0)).attach(pattern)
    while time.time() < start_at:
        time.sleep(0.0005)
    out: dict[str, Any] = {"tag": tag}
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            drive(pattern, entry)
        out["outcome"] = "ran" if feature.last_run_id is not None else "returned"
    except Exception as exc:
        out["outcome"], out["message"] = type(exc).__name__, str(exc)[:300]
    out["calls"] = len([c for c in calls(log) if not c.startswith("human")])
    out["transcript"] = [str(m.get("content")) for m in (pattern.groupchat.messages if pattern.groupchat else [])]
    feature.close()
    return out


def _fork(*args: Any) -> tuple[int, int]:
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(rfd)
        try:
            report = _worker(*args)
        except BaseException as exc:
            report = {"outcome": "error", "message": repr(exc)}
        os.write(wfd, json.dumps(report).encode())
        os._exit(0)
    os.close(wfd)
    return pid, rfd


def _collect(children: list[tuple[int, int]]) -> list[dict[str, Any]]:
    reports = []
    for pid, rfd in children:
        _, status = os.waitpid(pid, 0)
        data = b""
        while chunk := os.read(rfd, 65536):
            data += chunk
        os.close(rfd)
        reports.append({"outcome": "killed"} if os.WIFSIGNALED(status) else json.loads(data or b"{}"))
    record(reports)
    return reports


@pytest.mark.parametrize("backend", ["filesystem", "sqlite"])
@pytest.mark.parametrize("entry", ["a_run", "a_initiate"])
def test_a_killed_pattern_run_is_continued_by_exactly_one_async_worker(tmp_path: Path, backend: str,
                                                                       entry: str) -> None:
    url = str(tmp_path / "store") if backend == "filesystem" else f"sqlite://{tmp_path}/store.db"
    [ref] = _collect([_fork(f"sqlite://{tmp_path}/ref.db", "ref", tmp_path, entry, 0.0, None)])
    assert ref["outcome"] == "ran", ref
    [first] = _collect([_fork(url, "first", tmp_path, entry, 0.0, 4)])
    assert first["outcome"] == "killed"
    start = time.time() + 1.0 + 0.2 * WORKERS
    reports = _collect([_fork(url, f"w{i}", tmp_path, entry, start, None) for i in range(WORKERS)])
    ran = [r for r in reports if r["outcome"] == "ran"]
    assert len(ran) == 1, [(r["outcome"], r.get("message")) for r in reports]
    assert all(r["outcome"] == "returned" and r["calls"] == 0 for r in reports if r is not ran[0]), reports
    assert ran[0]["transcript"] == ref["transcript"] and 0 < ran[0]["calls"] < ref["calls"]  # nothing paid twice
    with provider_from_url(url) as p:
        infos = p.list_checkpoints("s")
        latest = p.get_latest_checkpoint("s")
    assert [str(i.end_reason) for i in infos if i.kind == "run_end"] == ["cancelled", "max_rounds"]
    assert latest is not None and [str(m.get("content")) for m in latest.messages] == ref["transcript"]
