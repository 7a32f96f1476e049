"""``python -m benchmarks.render RESULT.json``: print the table of a saved run again (e.g. for the docs)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.report import check_targets, render


def main(argv: list[str] | None = None) -> int:
    """Re-render a run's JSON as its table (targets re-checked with the current rules)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.render", description=__doc__)
    p.add_argument("result", type=Path)
    p.add_argument("--width", type=int, default=250)
    args = p.parse_args(argv)
    from rich.console import Console

    result = json.loads(args.result.read_text())
    result["targets"] = check_targets(result["rows"], result["steps"], result.get("interleaved"))
    console = Console(width=args.width)
    console.print(render(result))
    if result.get("ratios_measured") is not None:
        from benchmarks.ratios import collect, render_ratios

        console.print(render_ratios(collect(result, result["ratios_measured"])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
