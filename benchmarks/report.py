"""The one table the benchmark prints (rich), the targets it checks, and the machine it ran on."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from typing import Any

__all__ = ["TARGETS", "check_targets", "machine", "render"]

TARGETS = {
    "flat": "median save of the last 100 steps <= 1.25x the first 100",
    "linear": "bytes stored <= 2x the transcript's JSON",
    "load_fs": "filesystem: load latest of a 1,000-step session < 50 ms",
    "load_redis": "Redis: load latest in <= 3 round trips",
    "load_s3": "S3: load latest in far fewer requests than steps (<= 10% of them)",
    "list": "listing a session's checkpoints reads no message payload",
}

OURS = ("filesystem", "memory", "redis", "s3")


def fsync_probe(samples: int = 50) -> float:
    """Median time (ms) to write 1 KB to a temporary file and fsync it: how busy the disk is now."""
    import statistics
    import tempfile
    import time

    times = []
    with tempfile.NamedTemporaryFile(dir=tempfile.gettempdir()) as f:
        for _ in range(samples):
            t = time.perf_counter()
            f.write(b"x" * 1024)
            f.flush()
            os.fsync(f.fileno())
            times.append(time.perf_counter() - t)
    return round(statistics.median(times) * 1e3, 3)


def machine() -> dict[str, Any]:
    """What this ran on: cores, CPU model, memory, Python, disk, and how busy it was."""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(ln.split()[1] for ln in f if ln.startswith("MemTotal")))
            mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    disk = ""
    try:
        out = subprocess.run(["df", "-hT", "."], capture_output=True, text=True, timeout=5).stdout.splitlines()
        disk = " ".join(out[-1].split()[:3]) if len(out) > 1 else ""
    except (OSError, subprocess.SubprocessError):
        pass
    total, _used, free = shutil.disk_usage(".")
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "disk": disk,
        "disk_free_gib": round(free / 2**30, 1),
        "disk_total_gib": round(total / 2**30, 1),
        "loadavg": [round(x, 2) for x in load],
        "fsync_ms": fsync_probe(),
    }


def _ms(v: float | None, digits: int = 2) -> str:
    return "—" if v is None else f"{v * 1e3:.{digits}f}"


def _win(d: dict[str, Any] | None, key: str) -> str:
    if not d or d.get("count", 0) < 2 or not d["first"]["n"]:
        return "—"
    first, last = d["first"][key], d["last"][key]
    cell = f"{_ms(first)} → {_ms(last)}"
    if key == "median" and d.get("ratio") is not None:
        cell += f" ({d['ratio']:.2f}x)"
    return cell


def _mb(n: int | None) -> str:
    return "—" if n is None else (f"{n / 1e6:.1f}" if n >= 1e5 else f"{n / 1e6:.3f}")


def _wire_cell(r: dict[str, Any]) -> str:
    parts = []
    if r.get("wire_per_save") is not None:
        parts.append(f"{r['wire_per_save']:.2f}")
    for key in ("wire_load", "wire_list"):
        w = r.get(key)
        if w is not None:
            parts.append(str(w["round_trips"]))
    return " / ".join(parts) if parts else "—"


def _ab(d: dict[str, Any] | None) -> str:
    if not d or d.get("ratio") is None:
        return "—"
    return f"{d['ratio']:.2f}x"


def check_targets(rows: list[dict[str, Any]], steps: int,
                  interleaved: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Each target per provider row: ok (True/False), the value, and the limit.

    Flatness is judged on the interleaved (A/B) saves when they were measured: the chat's own
    first/last-100 windows are minutes apart, so on a shared machine they also compare two
    different disk or CPU loads; the A/B windows are taken in turns. Both ratios are kept.
    """
    interleaved = interleaved or {}
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        name = r["scenario"]
        backend = r.get("backend")
        if backend not in OURS or r.get("error"):
            continue
        res: dict[str, Any] = {}
        if r.get("durability") in (None, "sync") and "fsync off" not in name and not r.get("step_delay"):
            ratio = r["save"].get("ratio")
            ab = (interleaved.get(backend) or {}).get("ratio")
            judged = ab if ab is not None else ratio
            if judged is not None:
                res["flat"] = {"ok": judged <= 1.25, "value": round(judged, 3), "limit": 1.25,
                               "judged_on": "interleaved" if ab is not None else "chat",
                               "chat_ratio": None if ratio is None else round(ratio, 3)}
            res["linear"] = {"ok": r["bytes_ratio"] <= 2, "value": round(r["bytes_ratio"], 3), "limit": 2}
            res["list"] = {"ok": not r.get("list_reads_payloads"), "value": r.get("list_reads_payloads")}
            load = r["load_latest"]["median"]
            if backend == "filesystem":
                res["load_fs"] = {"ok": load < 0.050, "value_ms": round(load * 1e3, 2), "limit_ms": 50}
            if backend == "redis" and r.get("wire_load"):
                rt = r["wire_load"]["round_trips"]
                res["load_redis"] = {"ok": rt <= 3, "value": rt, "limit": 3}
            if backend == "s3" and r.get("wire_load"):
                rq = r["wire_load"]["round_trips"]
                res["load_s3"] = {"ok": rq <= steps / 10, "value": rq, "limit": steps / 10}
        out[name] = res
    return out


def _verdicts(res: dict[str, Any]) -> str:
    marks = {"flat": "flat", "linear": "lin", "list": "list", "load_fs": "load", "load_redis": "load",
             "load_s3": "load"}
    return " ".join(f"{marks[k]}{'✓' if v['ok'] else '✗'}" for k, v in res.items())


def render(result: dict[str, Any]) -> Any:
    """The rich Table of one run's results."""
    from rich.table import Table

    steps = result["steps"]
    m = result["machine"]
    title = (f"ag2-persistency benchmark — {steps} steps, 3 agents, ~500-char messages, round robin "
             f"(driver: {result['driver']})")
    w = min(100, steps // 2)
    end = result.get("machine_end", {})
    end_load = end.get("loadavg", ["?"])[0]
    caption = (f"{m['nproc']} cores · {m['cpu']} · {m['memory']} · Python {m['python']} · {m['disk']} · "
               f"load average {m['loadavg'][0]} at start, {end_load} at end · 1 KB write+fsync "
               f"{m.get('fsync_ms')} ms at start, {end.get('fsync_ms', '?')} ms at end (a shared machine)\n"
               f"save/step: median (and p99) ms over the first → last {w} steps (ratio of medians). "
               "e2e: chat wall time ÷ the same chat without persistence run just before it (median of the pairs), "
               "cpu: the same for the process's CPU time "
               "(LangGraph: ÷ its graph without a checkpointer). "
               "stored: content bytes ÷ transcript JSON (/ disk blocks allocated, where much larger). "
               "load/list: fresh provider, cold cache, median ms (cpu: this thread's CPU time, i.e. without "
               "waiting for a core; Redis/S3 work runs in their servers). wire: round trips (Redis) or requests (S3) "
               "per save / for one load / for one listing. sessions: list_sessions over "
               f"{result.get('sessions', 0):,} sessions, ms (requests). A/B flat: median save at steps "
               f"{steps - w + 1}..{steps} ÷ at steps 1..{w}, the two taken in turns on one provider (noise cancels); "
               "the flat verdict uses it.")
    table = Table(title=title, caption=caption, show_lines=False, header_style="bold")
    for col, just in (("scenario", "left"), ("save ms median", "right"), ("save ms p99", "right"),
                      ("step ms median", "right"), ("e2e x (run)", "right"), ("stored MB (x json)", "right"),
                      ("load ms (cpu)", "right"), ("list ms (n)", "right"), ("wire save/load/list", "right"),
                      ("sessions ms", "right"), ("A/B flat", "right"), ("targets", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    targets = result.get("targets", {})
    sessions = result.get("list_sessions", {})
    for r in result["rows"]:
        name = r["scenario"]
        if r.get("error"):
            table.add_row(name, f"[yellow]{r['error']}[/]", *[""] * 10)
            continue
        stored = r.get("bytes_stored")
        cell_bytes = "—"
        if stored is not None:
            cell_bytes = f"{_mb(stored)} ({r['bytes_ratio']:.2f}x)" if r.get("bytes_ratio") else _mb(stored)
            if r.get("bytes_allocated") and r["bytes_allocated"] > 1.5 * stored:
                cell_bytes += f" / {_mb(r['bytes_allocated'])} disk"
            if r.get("bytes_extrapolated"):
                cell_bytes = f"~{_mb(r['bytes_extrapolated'])} ({r['bytes_extrapolated_ratio']:.0f}x)*"
        e2e = "—" if r.get("overhead_ratio") is None else f"{r['overhead_ratio']:.1f}"
        if r.get("total_median") is not None:
            e2e += f" ({r['total_median']:.2f} s)"
        if r.get("cpu_ratio") is not None:
            e2e += f" cpu {r['cpu_ratio']:.1f}"
        elif isinstance(r.get("total_seconds"), float):
            e2e += f" ({r['total_seconds']:.2f} s)"
        load = r.get("load_latest", {}).get("median")
        load_cpu = r.get("load_latest", {}).get("cpu_median")
        lst = r.get("list_checkpoints", {})
        list_cell = "—" if not lst else f"{_ms(lst['median'])} ({lst.get('count', '?')})"
        if r.get("list_reads_payloads"):
            list_cell += " payload!"
        default_row = r.get("durability") in (None, "sync") and "fsync off" not in name and not r.get("step_delay")
        s = sessions.get(r.get("backend", ""), {}) if default_row else {}
        s_cell = "—"
        if s.get("median") is not None:
            s_cell = _ms(s["median"], 1)
            if s.get("wire"):
                s_cell += f" ({s['wire']['round_trips']})"
        elif s.get("error"):
            s_cell = "err"
        table.add_row(
            name,
            _win(r.get("save"), "median"),
            _win(r.get("save"), "p99"),
            _win(r.get("step_interval"), "median"),
            e2e,
            cell_bytes,
            _ms(load) + ("" if load_cpu is None else f" ({_ms(load_cpu)})"),
            list_cell,
            _wire_cell(r),
            s_cell,
            _ab(result.get("interleaved", {}).get(r.get("backend", "")) if default_row else None),
            _verdicts(targets.get(name, {})),
        )
    return table
