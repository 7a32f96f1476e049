"""The ratios of issue #15's targets table, each measured side by side (in turns) in this process.

- save ÷ bare append: a filesystem save, and right after it a bare ``write`` + ``fdatasync`` of
  as many bytes to an append-only file in the same folder, in turns;
- fs load ÷ snapshot load: ``get_latest_checkpoint`` on a fresh provider, and
  ``Checkpoint.model_validate_json`` of one file holding the whole checkpoint, in turns; the
  one-file *parse* (``json.loads``, thread CPU) is what the Redis client CPU is divided by;
- copy 2N ÷ N: ``copy_checkpoints`` (the CLI's copy) of a session of N and of 2N steps;
- the others come from the main scenarios (A/B flat, bytes, S3 requests, Redis load CPU).

Medians of interleaved samples; a shared machine makes the absolute times noisy, not the ratios.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from persistency.models import Checkpoint

__all__ = ["TARGETS_15", "collect", "copy_scaling", "load_vs_snapshot", "render_ratios", "resume_vs_ag2",
           "save_vs_append"]

#: (key, figure, target as text, bound, higher is worse)
TARGETS_15 = (
    ("save_vs_append", "filesystem save ÷ bare append + fdatasync of the same bytes", "<= 1.5x", 1.5),
    ("ab_flat", "saves 901-1,000 ÷ 1-100, taken in turns", "<= 1.15x", 1.15),
    ("load_vs_snapshot", "filesystem load latest ÷ one-file snapshot load", "<= 1.5x", 1.5),
    ("redis_cpu_vs_parse", "Redis load latest client CPU ÷ one-file snapshot parse", "<= 2x", 2.0),
    ("s3_requests", "S3 requests for one load at 1,000 steps", "<= 5", 5.0),
    ("resume_vs_ag2", "resume to the first new step ÷ AG2 resume() of the same messages", "<= 1.2x", 1.2),
    ("bytes_ratio", "bytes stored ÷ transcript JSON", "<= 2x", 2.0),
    ("copy_scaling", "copy of 2N steps ÷ of N steps", "<= 2.2x", 2.2),
)


def _grow(url: str, steps: int, session_id: str = "bench", fsync: bool = False) -> Checkpoint:
    from persistency.providers.filesystem import FilesystemStorageProvider

    from benchmarks.chat import _checkpoint
    from benchmarks.stream import transcript

    stream = transcript(steps)
    p = FilesystemStorageProvider(url, fsync=fsync)
    parent = None
    cp = None
    for i in range(1, steps + 1):
        cp = _checkpoint(session_id, stream[:i], parent)
        p.save_checkpoint(cp)
        parent = cp.checkpoint_id
    assert cp is not None
    return cp


def save_vs_append(workdir: Path, samples: int = 200) -> dict[str, Any]:
    """Median filesystem save ÷ median bare append+fdatasync of the same byte count, taken in turns."""
    from persistency.providers.filesystem import FilesystemStorageProvider

    from benchmarks.chat import _checkpoint
    from benchmarks.stream import transcript

    root = workdir / "ratio-save"
    stream = transcript(samples + 1)
    p = FilesystemStorageProvider(root)
    first = _checkpoint("s", stream[:1], None)
    p.save_checkpoint(first)  # the session's folders and segment exist: steady state from here
    segment = root / "s" / "checkpoints" / "records.jsonl"
    fd = os.open(root / "s" / "bare.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    saves, bares, parent = [], [], first.checkpoint_id
    try:
        for i in range(2, samples + 2):
            cp = _checkpoint("s", stream[:i], parent)
            before = segment.stat().st_size
            t = time.perf_counter()
            p.save_checkpoint(cp)
            saves.append(time.perf_counter() - t)
            data = b"x" * (segment.stat().st_size - before)
            t = time.perf_counter()
            os.write(fd, data)
            os.fdatasync(fd)
            bares.append(time.perf_counter() - t)
            parent = cp.checkpoint_id
    finally:
        os.close(fd)
    s, b = statistics.median(saves), statistics.median(bares)
    return {"save_median": s, "bare_median": b, "ratio": s / b, "n": len(saves)}


def load_vs_snapshot(workdir: Path, steps: int, repeats: int = 9) -> dict[str, Any]:
    """Fresh-instance filesystem load of the latest checkpoint ÷ one-file snapshot load, in turns."""
    from persistency.providers.filesystem import FilesystemStorageProvider

    url = str(workdir / "ratio-load")
    last = _grow(url, steps)
    snap = workdir / "ratio-load-snapshot.json"
    snap.write_bytes(last.model_dump_json().encode("utf-8"))
    ours, ours_cpu, theirs, parse_cpu = [], [], [], []
    for _ in range(repeats):
        p = FilesystemStorageProvider(url)
        t, c = time.perf_counter(), time.thread_time()
        got = p.get_latest_checkpoint("bench")
        ours.append(time.perf_counter() - t)
        ours_cpu.append(time.thread_time() - c)
        assert got is not None and got.step == steps
        t = time.perf_counter()
        Checkpoint.model_validate_json(snap.read_bytes())
        theirs.append(time.perf_counter() - t)
        c = time.thread_time()
        json.loads(snap.read_bytes())
        parse_cpu.append(time.thread_time() - c)
    o, s = statistics.median(ours), statistics.median(theirs)
    return {"load_median": o, "load_cpu_median": statistics.median(ours_cpu), "snapshot_median": s,
            "snapshot_parse_cpu_median": statistics.median(parse_cpu), "ratio": o / s}


def copy_scaling(workdir: Path, steps: int, repeats: int = 5) -> dict[str, Any]:
    """Wall time of the CLI's copy of a session of ``steps`` and of ``2 * steps`` checkpoints: medians
    of ``repeats`` copies of each, taken in turns, each into a fresh folder; the ratio of the medians."""
    from persistency.providers.filesystem import FilesystemStorageProvider

    from persistency.cli._copy import copy_checkpoints

    sizes = (steps, 2 * steps)
    for n in sizes:
        _grow(str(workdir / f"ratio-copy-src-{n}"), n)
    samples: dict[int, list[float]] = {n: [] for n in sizes}
    for i in range(repeats):
        for n in sizes:
            s = FilesystemStorageProvider(str(workdir / f"ratio-copy-src-{n}"))
            d = FilesystemStorageProvider(str(workdir / f"ratio-copy-dst-{n}-{i}"), fsync=False)
            t = time.perf_counter()
            res = copy_checkpoints(s, d, "bench", s.list_checkpoints("bench"))
            samples[n].append(time.perf_counter() - t)
            if res.failed:
                raise RuntimeError(f"copy failed: {res.failed[:1]}")
    out: dict[str, Any] = {str(n): statistics.median(samples[n]) for n in sizes}
    out["samples"] = {str(n): samples[n] for n in sizes}
    out["ratio"] = out[str(2 * steps)] / out[str(steps)]
    return out


class _Stop(Exception):
    """Raised at the first new step to end a timed resume there."""


def _until_first_new_step(start: Any, replayed: int = 0) -> float:
    """Seconds from now until ``start()`` makes the chat's second new append (its message, then a
    reply), after the ``replayed`` appends of AG2's ``resume()``, which appends the old messages."""
    from autogen import GroupChat

    original = GroupChat.append
    seen: list[float] = []

    def append(self: Any, message: Any, speaker: Any) -> Any:
        out = original(self, message, speaker)
        seen.append(time.perf_counter())
        if len(seen) >= replayed + 2:
            raise _Stop
        return out

    GroupChat.append = append  # type: ignore[method-assign]
    t = time.perf_counter()
    try:
        start()
    except _Stop:
        pass
    except Exception as exc:  # the feature may wrap the stop in its own error
        if len(seen) < replayed + 2:
            raise RuntimeError(f"the resume failed before its first new step: {exc}") from exc
    finally:
        GroupChat.append = original  # type: ignore[method-assign]
    if len(seen) < replayed + 2:
        raise RuntimeError("the resumed chat made no new step")
    return seen[replayed + 1] - t


def resume_vs_ag2(workdir: Path, steps: int, repeats: int = 5) -> dict[str, Any]:
    """Fresh provider + Persistency resume to the first new step ÷ AG2's json.load + resume() of the
    same messages to its first new step, in turns (the store is copied afresh for each sample)."""
    import shutil

    from autogen.io.base import IOStream
    from persistency.providers.filesystem import FilesystemStorageProvider

    from benchmarks.chat import _build, _NullStream, run_chat
    from benchmarks.stream import make_text, speaker_of
    from persistency import Ownership, Persistency

    seed = workdir / "ratio-resume-seed"
    run_chat(steps, FilesystemStorageProvider(seed), session_id="resume")
    last = FilesystemStorageProvider(seed).get_latest_checkpoint("resume")
    assert last is not None
    messages_file = workdir / "ratio-resume-messages.json"
    messages_file.write_text(json.dumps(last.messages))
    ours, theirs = [], []
    with IOStream.set_default(_NullStream()):  # type: ignore[arg-type]
        for i in range(repeats):
            store = workdir / f"ratio-resume-{i}"
            shutil.copytree(seed, store)

            def ag2() -> None:
                _, _, manager = _build(steps + 10)
                speaker, message = manager.resume(json.loads(messages_file.read_bytes()), silent=True)
                speaker.initiate_chat(manager, message=message, clear_history=False, silent=True)

            def persisted(store: Path = store) -> None:
                agents, _, manager = _build(steps + 10)
                # the same opening message again at once would be taken for a redelivered request
                # (ownership's dedupe shows the finished run): this is a new turn, as AG2's side is
                owner = Ownership(dedupe_window=0)
                Persistency(FilesystemStorageProvider(store), session_id="resume", ownership=owner).attach(manager)
                agents[0].initiate_chat(manager, message=make_text(0, speaker_of(0)), silent=True)

            # resume() appends all messages but the last: the first new step comes after those
            theirs.append(_until_first_new_step(ag2, replayed=len(last.messages) - 1))
            ours.append(_until_first_new_step(persisted))
    o, a = statistics.median(ours), statistics.median(theirs)
    return {"ours_median": o, "ag2_median": a, "ratio": o / a, "n": repeats}


def _row(rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next((r for r in rows if r.get("scenario") == name and not r.get("error")), {})


def collect(result: dict[str, Any], measured: dict[str, Any]) -> dict[str, Any]:
    """Every ratio of the targets table from this run: value, target, verdict (None: not measured)."""
    rows = result.get("rows", [])
    values: dict[str, float | None] = {k: None for k, *_ in TARGETS_15}
    values["save_vs_append"] = measured.get("save_vs_append", {}).get("ratio")
    values["ab_flat"] = result.get("interleaved", {}).get("filesystem", {}).get("ratio")
    values["load_vs_snapshot"] = measured.get("load_vs_snapshot", {}).get("ratio")
    parse = measured.get("load_vs_snapshot", {}).get("snapshot_parse_cpu_median")
    redis_cpu = _row(rows, "redis").get("load_latest", {}).get("cpu_median")
    if parse and redis_cpu is not None:
        values["redis_cpu_vs_parse"] = redis_cpu / parse
    s3 = _row(rows, "s3").get("wire_load")
    if s3:
        values["s3_requests"] = float(s3["round_trips"])
    values["resume_vs_ag2"] = measured.get("resume_vs_ag2", {}).get("ratio")
    values["bytes_ratio"] = _row(rows, "filesystem (sync)").get("bytes_ratio") or _row(rows, "filesystem").get(
        "bytes_ratio")
    values["copy_scaling"] = measured.get("copy_scaling", {}).get("ratio")
    return {k: {"figure": fig, "target": text, "value": values[k],
                "ok": None if values[k] is None else values[k] <= bound}
            for k, fig, text, bound in TARGETS_15}


def render_ratios(ratios: dict[str, Any]) -> Any:
    """The targets table of issue #15 as a rich table: figure, measured, target, verdict."""
    from rich.table import Table

    table = Table(title="storage at the physical limit (#15): each ratio side by side in this run",
                  header_style="bold")
    for col in ("figure", "measured", "target", ""):
        table.add_column(col)
    for item in ratios.values():
        v = item["value"]
        shown = "not measured" if v is None else (f"{v:.0f}" if "requests" in item["figure"] else f"{v:.2f}x")
        verdict = "" if item["ok"] is None else ("✓" if item["ok"] else "✗")
        table.add_row(item["figure"], shown, item["target"], verdict)
    return table
