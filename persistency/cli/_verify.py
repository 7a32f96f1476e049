"""``verify``: read every checkpoint back, the way a resume would, and report the ones that fail.

A checkpoint is damaged when its record does not decode, names another session or id, needs a base
or keyframe that is missing, or names a parent the session does not hold.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from persistency.cli._common import (
    JsonOption,
    UrlOption,
    checkpoint_ids,
    emit_json,
    interrupted,
    open_provider,
    out_console,
    progress_bar,
    require_session,
)
from persistency.cli._walk import iter_checkpoints
from persistency.errors import PersistencyError
from persistency.provider import PersistencyStorageProvider

__all__ = ["verify", "verify_session"]


def verify_session(provider: PersistencyStorageProvider, session_id: str,
                   advance: Any = None) -> tuple[int, list[dict[str, Any]]]:
    """Load every checkpoint of the session; returns (how many were read, the damaged ones)."""
    damaged: list[dict[str, Any]] = []
    try:
        ids = checkpoint_ids(provider, session_id)
    except PersistencyError as exc:
        return 0, [{"session_id": session_id, "checkpoint_id": None, "error": type(exc).__name__,
                    "message": str(exc)}]
    known = set(ids)
    for cid, loaded in iter_checkpoints(provider, session_id, ids):
        problem: PersistencyError | str | None = loaded if isinstance(loaded, PersistencyError) else None
        if not isinstance(loaded, PersistencyError) and loaded.parent_id is not None and loaded.parent_id not in known:
            problem = f"its parent {loaded.parent_id!r} is not in the session"
        if problem is not None:
            damaged.append({
                "session_id": session_id, "checkpoint_id": cid,
                "error": type(problem).__name__ if isinstance(problem, Exception) else "MissingParent",
                "message": str(problem),
            })
        if advance is not None:
            advance()
    try:
        provider.list_checkpoints(session_id)
    except PersistencyError as exc:
        if not damaged:
            damaged.append({"session_id": session_id, "checkpoint_id": None, "error": type(exc).__name__,
                            "message": f"listing fails: {exc}"})
    return len(ids), damaged


def _count(provider: PersistencyStorageProvider, session_id: str) -> int | None:
    """How many checkpoints the session has, for the progress bar (None when its listing fails)."""
    try:
        return len(checkpoint_ids(provider, session_id))
    except PersistencyError:
        return None


def verify(
    session: Annotated[str | None, typer.Argument(metavar="SESSION", help="Only this session.",
                                                  show_default=False)] = None,
    from_session: Annotated[str | None, typer.Option(
        "--from-session", metavar="ID", show_default=False,
        help="Start at this session (in sorted order), to go on after an interrupted verify.")] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Read every checkpoint of every session (or one) and report damaged or unreadable ones.

    Exit status 1 if any checkpoint cannot be read (damaged, or a missing or wrong encryption key), so it
    can guard a backup or a deploy. Each record is read once, so the time grows with the store's size.
    """
    with open_provider(url) as provider:
        if session is not None and not checkpoint_ids(provider, session):
            require_session(provider, session, url)  # raises: no such session
        sids = [session] if session is not None else provider.list_sessions()
        if from_session is not None:
            sids = [s for s in sids if s >= from_session]
        checked = 0
        damaged: list[dict[str, Any]] = []
        with progress_bar(disable=as_json) as progress:
            current = ""
            counts = [_count(provider, sid) for sid in sids] if progress.live.is_started else []
            task = progress.add_task("verifying", total=sum(c or 0 for c in counts) or None)
            try:
                for sid in sids:
                    current = sid
                    progress.update(task, description=f"verifying {sid}")
                    n, bad = verify_session(provider, sid, lambda: progress.advance(task))
                    checked += n
                    damaged.extend(bad)
            except KeyboardInterrupt:
                progress.stop()
                found = f", {len(damaged)} damaged so far" if damaged else ""
                interrupted(f"verify stopped in session {current!r} after {checked:,} checkpoints{found}; go on "
                            f"with: persistency verify --from-session {current} (nothing was changed)")
    if as_json:
        emit_json({"sessions": len(sids), "checkpoints": checked, "damaged": damaged})
    else:
        if damaged:
            table = Table("session", "checkpoint", "problem", title="damaged or unreadable checkpoints",
                          title_justify="left")
            for d in damaged:
                table.add_row(Text(d["session_id"]), Text(d["checkpoint_id"] or "(listing)"),
                              Text(f"{d['error']}: {d['message']}"))
            out_console().print(table)
        style = "red" if damaged else "green"
        out_console().print(Text(f"checked {checked} checkpoint(s) in {len(sids)} session(s): "
                                 f"{len(damaged)} damaged or unreadable", style=style))
    if damaged:
        raise typer.Exit(1)
