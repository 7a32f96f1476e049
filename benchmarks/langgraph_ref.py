"""Reference point: LangGraph's SQLite checkpointer with an ``add_messages`` state.

A one-node graph appends the same message stream, one message per super-step, so LangGraph
writes one checkpoint per step (``durability="sync"``, its default-like mode). Needs the ``bench``
extra (``langgraph``, ``langgraph-checkpoint-sqlite``); without it the row says "not installed".
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

from benchmarks.stats import summarize_steps
from benchmarks.stream import make_text, speaker_of, transcript, transcript_json_bytes

__all__ = ["available", "run_langgraph"]


def available() -> str | None:
    """None if LangGraph and its SQLite saver import, else why not."""
    try:
        import langgraph.checkpoint.sqlite
        import langgraph.graph  # noqa: F401
    except ImportError as exc:
        return f"not installed ({exc.name}); pip install -e '.[bench]'"
    return None


def _graph(steps: int, checkpointer: Any, marks: list[float]) -> Any:
    from langchain_core.messages import AIMessage
    from langgraph.graph import END, START, StateGraph
    from langgraph.graph.message import add_messages

    # Functional form: a class body here would see string annotations (``from __future__``).
    state = TypedDict("state", {"messages": Annotated[list[Any], add_messages]})  # type: ignore[misc]  # noqa: UP013

    def speak(state: dict[str, Any]) -> dict[str, Any]:
        marks.append(time.perf_counter())
        i = len(state["messages"])
        who = speaker_of(i)
        return {"messages": [AIMessage(content=make_text(i, who), name=who, id=f"m{i:07d}")]}

    def more(state: dict[str, Any]) -> str:
        return "speak" if len(state["messages"]) < steps else END

    g = StateGraph(state)
    g.add_node("speak", speak)  # type: ignore[type-var]
    g.add_edge(START, "speak")
    g.add_conditional_edges("speak", more, ["speak", END])
    return g.compile(checkpointer=checkpointer)


def _first_message() -> Any:
    from langchain_core.messages import HumanMessage

    return HumanMessage(content=make_text(0, speaker_of(0)), name=speaker_of(0), id="m0000000")


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def run_langgraph(steps: int, workdir: Path, repeats: int = 5, baseline_runs: int = 3) -> dict[str, Any]:
    """Run the stream through LangGraph with and without its SQLite saver; return raw numbers."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    config = {"configurable": {"thread_id": "bench"}, "recursion_limit": steps + 10}

    # Without a checkpointer: LangGraph's own cost per step.
    bare: list[float] = []
    for _ in range(baseline_runs):
        t = time.perf_counter()
        _graph(steps, None, []).invoke({"messages": [_first_message()]}, config)
        bare.append(time.perf_counter() - t)

    db = workdir / "langgraph.sqlite"
    conn = sqlite3.connect(db, check_same_thread=False)
    saver = SqliteSaver(conn)
    saves: list[float] = []
    pending = [0.0]
    put, put_writes = saver.put, saver.put_writes

    def timed_put(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return put(*args, **kwargs)
        finally:
            saves.append(time.perf_counter() - t + pending[0])
            pending[0] = 0.0

    def timed_put_writes(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return put_writes(*args, **kwargs)
        finally:
            pending[0] += time.perf_counter() - t

    saver.put = timed_put  # type: ignore[method-assign]
    saver.put_writes = timed_put_writes  # type: ignore[method-assign]
    marks: list[float] = []
    t = time.perf_counter()
    _graph(steps, saver, marks).invoke({"messages": [_first_message()]}, config, durability="sync")
    total = time.perf_counter() - t
    conn.commit()
    conn.close()

    cfg: Any = {"configurable": {"thread_id": "bench"}}
    loads: list[float] = []
    load_cpu: list[float] = []
    lists: list[float] = []
    n_listed = 0
    for _ in range(repeats):
        c = sqlite3.connect(db, check_same_thread=False)
        s = SqliteSaver(c)
        t, cpu = time.perf_counter(), time.thread_time()
        tup = s.get_tuple(cfg)
        loads.append(time.perf_counter() - t)
        load_cpu.append(time.thread_time() - cpu)
        assert tup is not None and len(tup.checkpoint["channel_values"]["messages"]) == steps
        c.close()
    for _ in range(max(1, repeats // 2)):
        c = sqlite3.connect(db, check_same_thread=False)
        s = SqliteSaver(c)
        t = time.perf_counter()
        n_listed = len(list(s.list(cfg)))
        lists.append(time.perf_counter() - t)
        c.close()
    stored = _size(db)
    intervals = [b - a for a, b in itertools.pairwise(marks)]
    tj = transcript_json_bytes(transcript(steps))
    return {
        "scenario": "langgraph-sqlite",
        "steps": steps,
        "save": summarize_steps(saves, edge=min(100, len(saves) // 2)),
        "step_interval": summarize_steps(intervals, edge=min(100, len(intervals) // 2)),
        "save_samples": saves,
        "total_seconds": total,
        "baseline_seconds": statistics.median(bare),
        "overhead_ratio": total / statistics.median(bare),
        "bytes_stored": stored,
        "transcript_json_bytes": tj,
        "bytes_ratio": stored / tj,
        "load_latest": {"median": statistics.median(loads), "samples": loads,
                        "cpu_median": statistics.median(load_cpu)},
        "list_checkpoints": {"median": statistics.median(lists), "samples": lists, "count": n_listed},
        "list_reads_payloads": True,  # SqliteSaver.list deserializes every checkpoint's channel values
        "notes": "LangGraph's own graph loop (not AG2); overhead is against the same graph without a checkpointer; "
        "list() deserializes every checkpoint's channel values",
        "db_path_size_checked": os.path.exists(db),
    }
