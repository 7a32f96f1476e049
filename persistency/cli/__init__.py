"""The ``persistency`` command line: sessions, show, export, continue, copy, prune, verify.

Installed as a console script; built on typer and rich from the ``cli`` extra
(``pip install 'ag2-persistency[cli]'``). Run ``persistency --help`` for the commands.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["app", "main"]

_EXTRA_HINT = "the persistency command needs the 'cli' extra: pip install 'ag2-persistency[cli]'"


def main() -> None:
    """Entry point of the ``persistency`` console script; a missing extra is one line, not a traceback."""
    try:
        from persistency.cli._app import main as run
    except ImportError as exc:
        if (exc.name or "").split(".")[0] in ("typer", "rich"):
            sys.stderr.write(f"error: {_EXTRA_HINT} ({exc})\n")
            raise SystemExit(1) from None
        raise
    run()


def __getattr__(name: str) -> Any:
    """``app``, the typer application, imported on first use (typer is an optional extra)."""
    if name == "app":
        from persistency.cli._app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
