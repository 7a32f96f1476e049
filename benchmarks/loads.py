"""Load latest ÷ one-file snapshot, side by side in one process, on memory, filesystem and Redis.

``python -m benchmarks.loads [--steps N] [--rounds N] [--no-gc]``: grows a session of the
benchmark's messages on each provider, then in each round loads the latest checkpoint on a fresh
instance of every provider, once with the storage layer's one-pass decode and once decoding
record by record (for the comparison), and parses one file holding the checkpoint
(``json.loads`` and ``Checkpoint.model_validate_json``). Prints the medians of this thread's CPU
time and the ratios. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.chat import _checkpoint
from benchmarks.servers import redis_server
from benchmarks.stream import transcript
from persistency.models import Checkpoint
from persistency.registry import provider_from_url
from persistency.storage import plans
from persistency.storage.decode import decode_record
from persistency.storage.records import Record


def _record_by_record(items: Sequence[tuple[str, bytes]], where: Callable[[str], str],
                      cipher: Any = None) -> list[Record]:
    return [decode_record(data, where(cid), cipher) for cid, data in items]


def _cpu(fn: Callable[[], Any], no_gc: bool) -> float:
    if no_gc:
        gc.disable()
    try:
        start = time.thread_time()
        fn()
        return time.thread_time() - start
    finally:
        gc.enable()


def _loader(provider: Any, out: list[Any]) -> Callable[[], None]:
    return lambda: out.append(provider.get_latest_checkpoint("bench"))


def main() -> None:
    """Run the measurement and print it."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--no-gc", action="store_true", help="garbage collector off during each timed call")
    args = ap.parse_args()
    stream = transcript(args.steps)
    batch = getattr(plans, "decode_records")  # noqa: B009 - swapped below, for the comparison
    with tempfile.TemporaryDirectory(prefix="persistency-loads-") as tmp, redis_server() as redis_url:
        urls = {"memory": f"memory://loads-{os.getpid()}", "filesystem": str(Path(tmp) / "fs"),
                "redis": redis_url + "?key_prefix=loads"}
        last = None
        for name, url in urls.items():
            p = provider_from_url(url, **({"fsync": False} if name == "filesystem" else {}))
            parent = None
            for i in range(1, args.steps + 1):
                last = _checkpoint("bench", stream[:i], parent)
                p.save_checkpoint(last)
                parent = last.checkpoint_id
            p.close()
        assert last is not None
        snap = Path(tmp) / "snapshot.json"
        snap.write_bytes(last.model_dump_json().encode())
        res: dict[str, list[float]] = {}
        parse: list[float] = []
        validate: list[float] = []
        for _ in range(args.rounds):
            for decoder, label in ((batch, ""), (_record_by_record, " (record by record)")):
                for name, url in urls.items():
                    setattr(plans, "decode_records", decoder)  # noqa: B010
                    p = provider_from_url(url)
                    p.list_sessions()  # connect outside the measurement
                    got: list[Any] = []
                    res.setdefault(name + label, []).append(_cpu(_loader(p, got), args.no_gc))
                    assert got[0] is not None and got[0].messages == last.messages
                    p.close()
                    parse.append(_cpu(lambda: json.loads(snap.read_bytes()), args.no_gc))
                    validate.append(_cpu(lambda: Checkpoint.model_validate_json(snap.read_bytes()), args.no_gc))
        setattr(plans, "decode_records", batch)  # noqa: B010
    med = statistics.median
    pm, vm = med(parse), med(validate)
    print(f"{args.steps} steps, {args.rounds} rounds, load average {os.getloadavg()[0]:.1f}"
          f"{', gc off in timed calls' if args.no_gc else ''}")
    print(f"one-file snapshot: json.loads {pm * 1e3:.2f} ms CPU, model_validate_json {vm * 1e3:.2f} ms CPU")
    for name, values in res.items():
        v = med(values)
        print(f"{name:32s} load latest {v * 1e3:6.2f} ms CPU  ÷ parse {v / pm:5.2f}x  ÷ validate {v / vm:5.2f}x")


if __name__ == "__main__":
    main()
