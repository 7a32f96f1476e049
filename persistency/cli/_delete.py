"""``delete``: remove one session and everything stored for it, after a confirmation."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from persistency.cli._common import (
    JsonOption,
    UrlOption,
    YesOption,
    confirm,
    display_url,
    emit_json,
    err_console,
    open_provider,
    require_session,
    summarize_runs,
)
from persistency.cli._prune import STAGING_SUFFIX

__all__ = ["delete"]


def delete(
    session: Annotated[str, typer.Argument(metavar="SESSION", help="The session to delete.", show_default=False)],
    yes: YesOption = False,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete a session: every run and checkpoint of it (and a staging copy left by an interrupted prune).

    Asks first unless --yes. There is no undo: `persistency copy` it elsewhere first to keep a backup.
    """
    with open_provider(url) as provider:
        infos = require_session(provider, session, url)
        staging = session + STAGING_SUFFIX
        extra = [staging] if staging in provider.list_sessions() else []
        runs = len(summarize_runs(infos))
        confirm(f"delete session {session!r} ({runs} run(s), {len(infos)} checkpoint(s)) from "
                f"{display_url(url)}? This cannot be undone.", yes=yes)
        for sid in [session, *extra]:
            provider.delete_session(sid)
    if as_json:
        emit_json({"deleted": session, "runs": runs, "checkpoints": len(infos), "also_deleted": extra})
    else:
        err_console().print(Text(f"deleted session {session} ({runs} run(s), {len(infos)} checkpoint(s))"))
