"""The ``persistency`` command line: sessions, show, export, continue, copy, prune, verify.

Installed as a console script with the package (typer and rich are core dependencies).
Run ``persistency --help`` for the commands.
"""

from __future__ import annotations

from persistency.cli._app import app, main

__all__ = ["app", "main"]
