"""``continue``: rebuild a chat from one stored checkpoint alone and run more rounds as a new run.

Agents, group chat and manager come from the checkpoint through the feature's `continue_chat`
(`persistency.rebuild`); redacted secrets such as the model key come from the environment
(``OPENAI_API_KEY``, ...). The new run branches from the checkpoint (``resume_from``) in the same
session, so the stored history before it is never touched. AG2 is imported only by this command.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from persistency.cli._common import (
    JsonOption,
    UrlOption,
    emit_json,
    err_console,
    open_provider,
    out_console,
    require_session,
    resolve_checkpoint,
)
from persistency.errors import PersistencyError, ResumeError
from persistency.models import CheckpointInfo

__all__ = ["continue_"]


def continue_(
    session: Annotated[str, typer.Argument(metavar="SESSION", help="The session id.", show_default=False)],
    checkpoint: Annotated[
        str | None,
        typer.Argument(metavar="CHECKPOINT", show_default=False,
                       help="Continue from this checkpoint (default: the session's latest)."),
    ] = None,
    rounds: Annotated[int, typer.Option("--rounds", "-r", min=1, metavar="N",
                                        help="Messages the new run may append (AG2's max_round).")] = 10,
    message: Annotated[
        str | None,
        typer.Option("--message", "-m", metavar="TEXT", show_default=False,
                     help="The next turn, sent by the run's initiator. Without it the checkpoint's run goes on "
                     "from where it was; a finished run needs one."),
    ] = None,
    lenient: Annotated[bool, typer.Option("--lenient", help="Use AG2's defaults for custom code that cannot be "
                                          "restored (termination, speaker selection) instead of refusing.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show AG2's own output of the chat on stderr.")]
    = False,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Rebuild the chat from a checkpoint alone and run N more rounds, saved as a new run of the session.

    The model key and other redacted secrets come from the environment (OPENAI_API_KEY, ...).
    Chats configured with the offline ScriptedModelClient need no key.
    """
    with open_provider(url) as provider:
        infos = require_session(provider, session, url)
        cp = resolve_checkpoint(provider, session, checkpoint, infos)
        if message is None and cp.run_complete:
            raise ResumeError(
                f"run {cp.run_id} of session {session!r} is finished ({cp.end_reason}); give --message to "
                "start the next turn"
            )
        from persistency.rebuild import RunFinishedError, continue_chat

        before = {i.checkpoint_id for i in infos}
        try:
            with _ag2_output(verbose and not as_json):
                chat = continue_chat(provider, session, checkpoint_id=cp.checkpoint_id, message=message,
                                     max_rounds=rounds, strict=not lenient)
        except RunFinishedError as exc:  # its terminal step was stored, but not its end (a kill), or a finished step
            raise ResumeError(
                f"run {exc.run_id} of session {session!r} is finished at checkpoint {exc.checkpoint_id} "
                f"({exc.reason}); give --message to start the next turn"
            ) from None
        except PersistencyError:
            raise
        except Exception as exc:  # the chat itself failed (a model error, an agent's exception)
            written = len([i for i in provider.list_checkpoints(session) if i.checkpoint_id not in before])
            raise ResumeError(
                f"the continued chat failed after {written} new checkpoint(s): {type(exc).__name__}: {exc}"
            ) from exc
        new = [i for i in provider.list_checkpoints(session) if i.checkpoint_id not in before]
        final = provider.get_checkpoint(session, new[-1].checkpoint_id).messages if new else []
    for warning in chat.warnings:
        err_console().print(Text(f"warning: {warning}", style="yellow"))
    _report(session, cp.checkpoint_id, cp.step, new, final[cp.step:], as_json)


@contextmanager
def _ag2_output(show: bool) -> Iterator[None]:
    """Send AG2's console output to stderr (``show``) or nowhere, so stdout carries only our report."""
    log = logging.getLogger("autogen")
    level = log.level
    if not show:
        log.setLevel(logging.WARNING)
    try:
        with redirect_stdout(sys.stderr if show else io.StringIO()):
            yield
    finally:
        log.setLevel(level)


def _report(session: str, origin: str, start: int, new: list[CheckpointInfo], appended: list[dict[str, Any]],
            as_json: bool) -> None:
    ends = [i for i in new if i.is_run_end]
    run_id = new[0].run_id if new else None
    summary = {
        "session_id": session,
        "from_checkpoint": origin,
        "run_id": run_id,
        "checkpoints": [i.checkpoint_id for i in new],
        "end_reason": ends[-1].end_reason if ends else None,
        "messages": appended,
    }
    if as_json:
        emit_json(summary)
        return
    console = out_console()
    table = Table("#", "speaker", "content", title=f"{run_id or 'no new run'} from {origin}", title_justify="left",
                  show_lines=True)
    for n, msg in enumerate(appended, start=start + 1):
        table.add_row(str(n), Text(str(msg.get("name") or "")), Text(str(msg.get("content") or "")))
    console.print(table)
    console.print(Text(f"saved {len(new)} checkpoint(s) to session {session} as {run_id}; "
                       f"ended: {summary['end_reason'] or 'unknown'}"))
