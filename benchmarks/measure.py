"""One scenario end to end: run the chat on a backend, then measure what it left behind.

Loads and listings run on a *fresh* provider instance (no record cache), after one cheap warm-up
call that opens its connection, so they show what a new process resuming a session pays.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks.backends import Backend
from benchmarks.chat import RunTimes, drive_provider, run_chat
from benchmarks.stats import summarize_steps
from benchmarks.stream import transcript, transcript_json_bytes
from persistency.models import Checkpoint
from persistency.provider import PersistencyStorageProvider

__all__ = ["measure_interleaved", "measure_list_sessions", "measure_scenario", "scenario_from_times"]


class _ReadSpy:
    """Counts a record provider's whole-record reads (``_read``) on one instance."""

    def __init__(self, provider: PersistencyStorageProvider) -> None:
        self.calls = 0
        inner = getattr(provider, "_read", None)
        self.supported = callable(inner)
        if self.supported:
            def spy(*args: Any, **kwargs: Any) -> Any:
                self.calls += 1
                return inner(*args, **kwargs)  # type: ignore[misc]

            provider._read = spy  # type: ignore[attr-defined]


@contextlib.contextmanager
def _fresh(backend: Backend, url: str, options: dict[str, Any]) -> Iterator[PersistencyStorageProvider]:
    p = backend.make(url, **options)
    try:
        p.list_checkpoints("warm-up-no-such-session")  # opens connections / client sessions
        yield p
    finally:
        p.close()


def _count(backend: Backend) -> contextlib.AbstractContextManager[Any]:
    return backend.counter.counting() if backend.counter is not None else contextlib.nullcontext()


def _wire(backend: Backend) -> dict[str, Any] | None:
    return backend.counter.snapshot() if backend.counter is not None else None


def scenario_from_times(name: str, runs: list[RunTimes], baseline_total: float, steps: int,
                        paired_baselines: list[float] | None = None,
                        paired_cpu: list[float] | None = None) -> dict[str, Any]:
    """The timing part of a scenario's result, pooled over its repeated runs.

    With ``paired_baselines`` (a run without persistence taken right before each run), the
    overhead is the median of the per-pair ratios, so a machine that slows down between scenarios
    does not skew it; else it is the median total over ``baseline_total``.
    """
    saves: list[float] = []
    intervals: list[float] = []
    first_saves: list[float] = []
    last_saves: list[float] = []
    first_int: list[float] = []
    last_int: list[float] = []
    for r in runs:
        s, iv = r.saves, r.step_intervals
        saves.extend(s)
        intervals.extend(iv)
        es, ei = min(100, len(s) // 2), min(100, len(iv) // 2)  # short runs: first and last half
        first_saves += s[:es]
        last_saves += s[-es:] if es else []
        first_int += iv[:ei]
        last_int += iv[-ei:] if ei else []
    totals = [r.total for r in runs]
    return {
        "scenario": name,
        "steps": steps,
        "runs": len(runs),
        "messages": [r.messages for r in runs],
        "save": _pooled(first_saves, last_saves, len(saves)),
        "step_interval": _pooled(first_int, last_int, len(intervals)),
        "total_seconds": totals,
        "total_median": statistics.median(totals),
        "baseline_seconds": baseline_total,
        "overhead_ratio": (
            statistics.median(t / b for t, b in zip(totals, paired_baselines, strict=True))
            if paired_baselines
            else (statistics.median(totals) / baseline_total if baseline_total else None)
        ),
        "paired_baseline_seconds": paired_baselines,
        "cpu_seconds": [r.cpu for r in runs],
        "cpu_ratio": (
            statistics.median(r.cpu / b for r, b in zip(runs, paired_cpu, strict=True) if b > 0)
            if paired_cpu and all(b > 0 for b in paired_cpu)
            else None
        ),
        "save_samples_first_run": runs[0].saves,
        "step_interval_samples_first_run": runs[0].step_intervals,
    }


def _pooled(first: list[float], last: list[float], count: int) -> dict[str, Any]:
    out = summarize_steps(first + last, edge=len(first)) if first else summarize_steps([])
    out["count"] = count
    return out


def measure_scenario(
    name: str,
    backend: Backend,
    steps: int,
    *,
    baseline_total: float,
    repeats: int = 1,
    durability: str | None = None,
    driver: str = "ag2",
    load_repeats: int = 5,
    options: dict[str, Any] | None = None,
    step_delay: float = 0.0,
    storage: bool = True,
) -> dict[str, Any]:
    """Run ``repeats`` chats of ``steps`` on ``backend``; measure bytes, load and list on the first.

    ``step_delay`` slows every reply (a model's latency); ``storage=False`` skips the bytes, load
    and list measurements (for rows that only show a durability mode's cost).
    """
    options = options or {}
    runs: list[RunTimes] = []
    urls: list[str] = []
    wire_run: dict[str, Any] | None = None
    extra: dict[str, Any] = {}
    paired: list[float] = []
    paired_cpu: list[float] = []
    for i in range(repeats):
        if driver == "ag2":
            bare = run_chat(steps, step_delay=step_delay)  # the same chat without persistence, just before
            paired.append(bare.total)
            paired_cpu.append(bare.cpu)
        url = backend.fresh_url(f"{name}-{i}")
        urls.append(url)
        provider = backend.make(url, **options)
        try:
            with _count(backend) if i == 0 else contextlib.nullcontext():
                if driver == "ag2":
                    runs.append(run_chat(steps, provider, session_id="bench", durability=durability,
                                         step_delay=step_delay))
                else:
                    runs.append(drive_provider(steps, provider, session_id="bench"))
            if i == 0:
                wire_run = _wire(backend)
                extra = backend.after_run(provider)
        finally:
            provider.close()
    result = scenario_from_times(name, runs, baseline_total, steps, paired or None, paired_cpu or None)
    result.update(extra)
    result["driver"] = driver
    result["durability"] = durability
    result["step_delay"] = step_delay
    url = urls[0]
    n_saves = len(runs[0].saves)
    if wire_run is not None:
        result["wire_run"] = wire_run
        result["wire_per_save"] = wire_run["round_trips"] / n_saves if n_saves else None
    if storage:
        result.update(measure_storage(backend, url, steps, load_repeats=load_repeats, options=options))
    for u in urls:
        backend.cleanup(u)
    return result


def measure_storage(backend: Backend, url: str, steps: int, *, load_repeats: int = 5,
                    options: dict[str, Any] | None = None, session_id: str = "bench") -> dict[str, Any]:
    """Bytes stored, load-latest and list timings (fresh instances) for the session at ``url``."""
    options = options or {}
    out: dict[str, Any] = {}
    stored = backend.bytes_stored(url)
    tj = transcript_json_bytes(transcript(steps))
    out.update(bytes_stored=stored, transcript_json_bytes=tj, bytes_ratio=stored / tj if tj else None)
    if backend.allocated is not None:
        out["bytes_allocated"] = backend.allocated(url)

    loads: list[float] = []
    load_cpu: list[float] = []  # this thread's CPU time: what the load costs without waiting for a core
    loaded: Checkpoint | None = None
    for i in range(load_repeats):
        with _fresh(backend, url, options) as p:
            with _count(backend) if i == 0 else contextlib.nullcontext():
                t, c = time.perf_counter(), time.thread_time()
                loaded = p.get_latest_checkpoint(session_id)
                loads.append(time.perf_counter() - t)
                load_cpu.append(time.thread_time() - c)
            if i == 0:
                out["wire_load"] = _wire(backend)
    out["load_latest"] = {"median": statistics.median(loads), "samples": loads,
                          "cpu_median": statistics.median(load_cpu), "cpu_samples": load_cpu,
                          "checkpoint_id": loaded.checkpoint_id if loaded else None,
                          "messages": len(loaded.messages) if loaded else 0}

    lists: list[float] = []
    list_cpu: list[float] = []
    count = 0
    for i in range(max(1, load_repeats // 2 + 1)):
        with _fresh(backend, url, options) as p:
            spy = _ReadSpy(p)
            with _count(backend) if i == 0 else contextlib.nullcontext():
                t, c = time.perf_counter(), time.thread_time()
                count = len(p.list_checkpoints(session_id))
                lists.append(time.perf_counter() - t)
                list_cpu.append(time.thread_time() - c)
            if i == 0:
                out["wire_list"] = _wire(backend)
                seen = out["wire_list"]["payload_seen"] if out["wire_list"] else False
                out["list_reads_payloads"] = bool(seen or (spy.supported and spy.calls > 0))
                out["list_whole_record_reads"] = spy.calls if spy.supported else None
    out["list_checkpoints"] = {"median": statistics.median(lists), "samples": lists, "count": count,
                               "cpu_median": statistics.median(list_cpu)}
    return out


def measure_list_sessions(backend: Backend, sessions: int, *, repeats: int = 3, threads: int = 4,
                          make: Callable[[str], Checkpoint] | None = None) -> dict[str, Any]:
    """Create ``sessions`` one-checkpoint sessions through the provider API, then time ``list_sessions``."""
    from benchmarks.chat import _checkpoint

    url = backend.fresh_url("sessions")
    maker = make or (lambda sid: _checkpoint(sid, [{"content": "hi", "role": "user", "name": "alice"}], None))
    creator = backend.make(url, **backend.bulk_options)
    t = time.perf_counter()
    try:
        def create(i: int) -> None:
            creator.save_checkpoint(maker(f"s{i:06d}"))

        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(create, range(sessions)))
    finally:
        creator.close()
    setup = time.perf_counter() - t
    times: list[float] = []
    found = 0
    wire = None
    for i in range(repeats):
        with _fresh(backend, url, {}) as p, _count(backend) if i == 0 else contextlib.nullcontext():
            t = time.perf_counter()
            found = len(p.list_sessions())
            times.append(time.perf_counter() - t)
        if i == 0:
            wire = _wire(backend)
    backend.cleanup(url)
    return {"sessions": sessions, "found": found, "median": statistics.median(times), "samples": times,
            "setup_seconds": setup, "wire": wire, "url": url}


def measure_interleaved(backend: Backend, steps: int, *, window_size: int = 100) -> dict[str, Any]:
    """Flatness with the noise cancelled: saves at steps 1..100 and at steps N-99..N, taken in turns.

    One session is first grown to ``steps - window_size`` checkpoints (untimed); then a new
    session's first save and the long session's next save alternate, ``window_size`` times, so a
    burst of load on this shared machine hits both windows alike.
    """
    from benchmarks.chat import _checkpoint
    from benchmarks.stream import transcript as full

    url = backend.fresh_url("ab")
    stream = full(steps)
    provider = backend.make(url)
    try:
        parents: dict[str, str | None] = {"long": None, "short": None}
        lengths = {"long": 0, "short": 0}

        def save(sid: str) -> float:
            lengths[sid] += 1
            cp = _checkpoint(sid, stream[: lengths[sid]], parents[sid])
            t = time.perf_counter()
            provider.save_checkpoint(cp)
            elapsed = time.perf_counter() - t
            parents[sid] = cp.checkpoint_id
            return elapsed

        window_size = min(window_size, steps // 2)
        for _ in range(max(0, steps - window_size)):
            save("long")
        short: list[float] = []
        long: list[float] = []
        for _ in range(window_size):
            short.append(save("short"))
            long.append(save("long"))
    finally:
        provider.close()
        backend.cleanup(url)
    s, lg = statistics.median(short), statistics.median(long)
    return {"first": {"median": s, "n": len(short)}, "last": {"median": lg, "n": len(long)},
            "ratio": lg / s if s else None, "samples_first": short, "samples_last": long}
