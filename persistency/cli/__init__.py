"""The ``persistency`` command line: sessions, show, export, continue, copy, prune, verify.

Installed as a console script by the ``cli`` extra (``pip install 'ag2-persistency[cli]'``); built
on typer and rich. Run ``persistency --help`` for the commands.
"""

from __future__ import annotations

from persistency.cli._app import app, main

__all__ = ["app", "main"]
