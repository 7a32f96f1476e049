"""``python -m benchmarks.run``: every scenario in one process, one table, raw numbers in JSON.

Scenarios, all on the same deterministic message stream (`benchmarks.stream`):

- the scripted AG2 group chat with no persistence (the baseline every overhead is a ratio of);
- the same chat with `persistency.Persistency` on each provider (filesystem in a temporary
  folder, memory://, Redis and S3 on servers started here), and on the filesystem in each
  durability mode (sync, async, exit);
- references: a full snapshot per step (the seed's and Koog's layout) through the same chat,
  and LangGraph's SQLite checkpointer with an add_messages state (``bench`` extra);
- list_sessions over 10,000 sessions per provider, created through the provider API.

Without the feature (``persistency.Persistency``) the providers are driven directly with the same
checkpoints the feature would write (``--driver provider``), and the table says so.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.backends import Backend, filesystem_backend, memory_backend, redis_backend, s3_backend, snapshot_backend
from benchmarks.chat import feature_available, run_chat
from benchmarks.counters import install_redis_counter, install_s3_counter
from benchmarks.langgraph_ref import available as langgraph_available
from benchmarks.langgraph_ref import run_langgraph
from benchmarks.measure import measure_interleaved, measure_list_sessions, measure_scenario
from benchmarks.references import extrapolate_quadratic
from benchmarks.report import check_targets, machine, render
from benchmarks.stats import summarize_steps
from benchmarks.stream import transcript

PROVIDERS = ("filesystem", "memory", "redis", "s3")
MODES = ("sync", "async", "exit", "nofsync")
REFERENCES = ("snapshot", "langgraph")


def _csv(value: str, allowed: tuple[str, ...]) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(allowed)}")
    return items


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=1000, help="messages per chat (default 1000)")
    p.add_argument("--providers", type=lambda v: _csv(v, PROVIDERS), default=list(PROVIDERS),
                   help="comma-separated: filesystem,memory,redis,s3 (default all)")
    p.add_argument("--modes", type=lambda v: _csv(v, MODES), default=list(MODES),
                   help="durability modes measured on the filesystem: sync,async,exit, and nofsync "
                        "(sync with fsync=False, to show what the disk flush costs) (default all)")
    p.add_argument("--references", type=lambda v: _csv(v, REFERENCES), default=list(REFERENCES),
                   help="reference points: snapshot,langgraph (default both)")
    p.add_argument("--repeats", type=int, default=3,
                   help="chats per scenario; step times are pooled, e2e is their median (default 3)")
    p.add_argument("--baseline-runs", type=int, default=7, help="chats without persistence (default 7)")
    p.add_argument("--load-repeats", type=int, default=5, help="fresh-instance loads per scenario (default 5)")
    p.add_argument("--sessions", type=int, default=10_000, help="sessions for list_sessions (0 skips)")
    p.add_argument("--snapshot-cap-mb", type=float, default=512.0,
                   help="stop the full-snapshot reference past this many MB and extrapolate (default 512)")
    p.add_argument("--driver", choices=("auto", "ag2", "provider"), default="auto",
                   help="ag2: the scripted group chat with Persistency; provider: the same checkpoints saved "
                        "straight into the provider; auto: ag2 when persistency.Persistency exists")
    p.add_argument("--slow-step-ms", type=float, default=5.0,
                   help="also run sync and async on the filesystem and S3 with replies that take this long, "
                        "as a model's would (0 skips; default 5)")
    p.add_argument("--ratios", type=int, default=1, help="measure the #15 ratios (save/append, load/snapshot, "
                   "copy scaling) side by side: 1 (default) or 0")
    p.add_argument("--copy-steps", type=int, default=500,
                   help="copy scaling: sessions of N and 2N steps are copied (default 500; 0 skips)")
    p.add_argument("--no-interleaved", action="store_true",
                   help="skip the interleaved first/last-100 save check per provider")
    p.add_argument("--workdir", type=Path, default=None, help="where local stores go (default: a temp folder)")
    p.add_argument("--out", type=Path, default=None,
                   help="raw numbers as JSON (default benchmarks/results/bench-<UTC time>.json)")
    return p.parse_args(argv)


def _guard(rows: list[dict[str, Any]], name: str, backend: str, fn: Callable[[], dict[str, Any]]) -> None:
    """Run one scenario; a failure becomes a row that says so instead of ending the benchmark."""
    print(f"  {name} ...", file=sys.stderr, flush=True)
    t = time.perf_counter()
    try:
        row = fn()
    except Exception as exc:  # the table must still print
        traceback.print_exc(file=sys.stderr)
        row = {"scenario": name, "error": f"{type(exc).__name__}: {exc}"[:160]}
    row["backend"] = backend
    row["wall_seconds"] = time.perf_counter() - t
    rows.append(row)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table; write the JSON. Returns the exit code."""
    args = parse_args(argv)
    steps = args.steps
    why_not = feature_available()
    driver = args.driver if args.driver != "auto" else ("ag2" if why_not is None else "provider")
    if driver == "ag2" and why_not:
        print(why_not, file=sys.stderr)
        return 2
    started = datetime.now(timezone.utc)
    out = args.out or Path(__file__).parent / "results" / f"bench-{started:%Y%m%dT%H%M%SZ}.json"
    rows: list[dict[str, Any]] = []
    result: dict[str, Any] = {"steps": steps, "driver": driver, "started": started.isoformat(),
                              "argv": sys.argv[1:] if argv is None else argv, "machine": machine(),
                              "rows": rows, "sessions": args.sessions, "list_sessions": {}, "interleaved": {}}
    if driver == "provider":
        result["driver_note"] = why_not or "chosen with --driver provider"

    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="persistency-bench-")))
        workdir.mkdir(parents=True, exist_ok=True)

        transcript(steps + 1)  # warm the message cache: replies cost nothing in any scenario
        # 1. no persistence: the AG2 chat alone (its total is what every e2e ratio divides by)
        print("baseline: the scripted chat without persistence", file=sys.stderr)
        base = [run_chat(steps) for _ in range(args.baseline_runs)]
        baseline_total = statistics.median(r.total for r in base)
        if driver == "provider":
            baseline_total = 0.0  # the provider driver has no chat to compare with
        intervals = [iv for r in base for iv in r.step_intervals]
        first = [iv for r in base for iv in r.step_intervals[:100]]
        last = [iv for r in base for iv in r.step_intervals[-100:]]
        rows.append({"scenario": "no persistence", "backend": "none", "total_seconds": [r.total for r in base],
                     "total_median": statistics.median(r.total for r in base), "overhead_ratio": 1.0,
                     "step_interval": {**summarize_steps(first + last, edge=len(first)), "count": len(intervals)},
                     "messages": [r.messages for r in base]})

        # 2. the providers
        backends: dict[str, Backend] = {}
        if "filesystem" in args.providers:
            backends["filesystem"] = filesystem_backend(workdir)
        if "memory" in args.providers:
            backends["memory"] = memory_backend()
        if "redis" in args.providers:
            try:
                base_url = stack.enter_context(_server("redis"))
                backends["redis"] = redis_backend(base_url, install_redis_counter())
            except Exception as exc:
                rows.append({"scenario": "redis", "backend": "redis", "error": f"no server: {exc}"[:160]})
        if "s3" in args.providers:
            try:
                from benchmarks.servers import BUCKET, REGION

                endpoint = stack.enter_context(_server("s3"))
                backends["s3"] = s3_backend(BUCKET, endpoint, REGION, install_s3_counter())
            except Exception as exc:
                rows.append({"scenario": "s3", "backend": "s3", "error": f"no server: {exc}"[:160]})

        common = {"baseline_total": baseline_total, "repeats": args.repeats, "driver": driver,
                  "load_repeats": args.load_repeats}
        for name, backend in backends.items():
            if name == "filesystem" and driver == "ag2":
                for mode in args.modes:
                    label = "filesystem (sync, fsync off)" if mode == "nofsync" else f"filesystem ({mode})"
                    extra: dict[str, Any] = {"durability": mode}
                    if mode == "nofsync":
                        extra = {"durability": "sync", "options": {"fsync": False}}
                    _guard(rows, label, name, functools.partial(measure_scenario, label, backend, steps,
                                                                **extra, **common))
            else:
                _guard(rows, name, name, functools.partial(measure_scenario, name, backend, steps, **common))

        # 2b. durability modes where a step takes time, as with a model: can "async" hide the save?
        if args.slow_step_ms > 0 and driver == "ag2":
            delay = args.slow_step_ms / 1000
            for name in ("filesystem", "s3"):
                if name not in backends:
                    continue
                for mode in ("sync", "async"):
                    label = f"{name} ({mode}, {args.slow_step_ms:g} ms steps)"
                    _guard(rows, label, name, functools.partial(
                        measure_scenario, label, backends[name], steps, durability=mode, step_delay=delay,
                        storage=False, **{**common, "repeats": 1}))

        # 3. references
        if "snapshot" in args.references:
            cap = int(args.snapshot_cap_mb * 1e6) if args.snapshot_cap_mb > 0 else None
            snap = snapshot_backend(workdir, cap)

            def snapshot() -> dict[str, Any]:
                row = measure_scenario("full snapshot/step (ref)", snap, steps,
                                       **{**common, "repeats": 1, "load_repeats": 3})
                if row.get("snapshot_stopped_at_step"):
                    total = extrapolate_quadratic(row["snapshot_sizes"], steps)
                    row["bytes_extrapolated"] = total
                    row["bytes_extrapolated_ratio"] = total / row["transcript_json_bytes"]
                row.pop("snapshot_sizes", None)
                return row

            _guard(rows, "full snapshot/step (ref)", "snapshot", snapshot)
        if "langgraph" in args.references:
            missing = langgraph_available()
            if missing:
                rows.append({"scenario": "LangGraph SQLite (ref)", "backend": "langgraph", "error": missing})
            else:
                _guard(rows, "LangGraph SQLite (ref)", "langgraph",
                       lambda: {**run_langgraph(steps, workdir, repeats=args.load_repeats),
                                "scenario": "LangGraph SQLite (ref)"})

        # 4. flatness again, with the noise cancelled: first-100 and last-100 saves taken in turns
        if not args.no_interleaved:
            for name, backend in backends.items():
                print(f"  interleaved first/last saves on {name} ...", file=sys.stderr, flush=True)
                try:
                    result["interleaved"][name] = measure_interleaved(backend, steps)
                except Exception as exc:
                    traceback.print_exc(file=sys.stderr)
                    result["interleaved"][name] = {"error": f"{type(exc).__name__}: {exc}"[:160]}

        # 5. list_sessions over many sessions, per provider
        if args.sessions > 0:
            for name, backend in backends.items():
                print(f"  list_sessions over {args.sessions:,} sessions on {name} ...", file=sys.stderr, flush=True)
                try:
                    result["list_sessions"][name] = measure_list_sessions(backend, args.sessions)
                except Exception as exc:
                    traceback.print_exc(file=sys.stderr)
                    result["list_sessions"][name] = {"error": f"{type(exc).__name__}: {exc}"[:160]}

        # 6. the #15 ratios measured side by side (in turns) on the filesystem
        measured: dict[str, Any] = {}
        if args.ratios and "filesystem" in args.providers:
            from benchmarks import ratios

            jobs = [("save_vs_append", lambda: ratios.save_vs_append(workdir)),
                    ("load_vs_snapshot", lambda: ratios.load_vs_snapshot(workdir, steps))]
            if driver == "ag2":
                jobs.append(("resume_vs_ag2", lambda: ratios.resume_vs_ag2(workdir, steps)))
            if args.copy_steps > 0:
                jobs.append(("copy_scaling", lambda: ratios.copy_scaling(workdir, args.copy_steps)))
            for key, job in jobs:
                print(f"  ratio {key} ...", file=sys.stderr, flush=True)
                # What the earlier scenarios left alive (servers' clients, stores, results) would make
                # every full collection of the garbage collector scan it: the copy of 2N steps, which
                # allocates twice as much, would pay that twice over (copy 2N ÷ N: 1.7x in a fresh
                # process, 2.45x beside 3 million live dicts, 2.08x with those frozen). Each ratio starts
                # with that heap collected and frozen (out of the collector's reach).
                gc.collect()
                gc.freeze()
                try:
                    measured[key] = job()
                except Exception as exc:
                    traceback.print_exc(file=sys.stderr)
                    measured[key] = {"error": f"{type(exc).__name__}: {exc}"[:160]}
        result["ratios_measured"] = measured

    result["machine_end"] = machine()
    result["targets"] = check_targets(rows, steps, result["interleaved"])
    result["finished"] = datetime.now(timezone.utc).isoformat()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str))
    from rich.console import Console

    console = Console(width=max(250, _term_width()))
    console.print(render(result))
    if result.get("ratios_measured") is not None:
        from benchmarks.ratios import collect, render_ratios

        result["ratios"] = collect(result, result["ratios_measured"])
        out.write_text(json.dumps(result, indent=1, default=str))
        console.print(render_ratios(result["ratios"]))
    console.print(f"raw numbers: {out}")
    return 0


def _term_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 0


@contextlib.contextmanager
def _server(kind: str) -> Any:
    from benchmarks import servers

    with servers.redis_server() if kind == "redis" else servers.s3_server() as url:
        yield url


if __name__ == "__main__":
    raise SystemExit(main())
