"""``continue``: rebuild a chat from a stored checkpoint alone and run more rounds as a new run."""

from __future__ import annotations

from typing import Annotated

import typer

from persistency.cli._common import JsonOption, UrlOption, open_provider, require_session, resolve_checkpoint
from persistency.errors import PersistencyError

__all__ = ["continue_"]


def continue_(
    session: Annotated[str, typer.Argument(metavar="SESSION", help="The session id.", show_default=False)],
    checkpoint: Annotated[str | None, typer.Argument(metavar="[CHECKPOINT]", show_default=False,
                                                     help="Continue from this checkpoint (default: latest).")] = None,
    rounds: Annotated[int, typer.Option("--rounds", "-r", min=1, help="How many more rounds to run.")] = 10,
    message: Annotated[str | None, typer.Option("--message", "-m", help="Next turn to append.")] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Rebuild the chat from a checkpoint and run N more rounds, saved as a new run of the session."""
    with open_provider(url) as provider:
        infos = require_session(provider, session, url)
        resolve_checkpoint(provider, session, checkpoint, infos)
        raise PersistencyError("continue is not available yet")
