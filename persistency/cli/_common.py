"""What every command shares: the ``--url``/``--json`` options, opening a provider, resolving ids,
summarising runs, and printing for people (rich) or for scripts (JSON).

Kept apart from the commands so that each command module reads as what it does, not how it prints.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from persistency.cli._connect import open_provider
from persistency.errors import CheckpointNotFoundError
from persistency.ids import validate_id
from persistency.models import COMPLETE_END_REASONS, Checkpoint, CheckpointInfo
from persistency.provider import PersistencyStorageProvider
from persistency.redaction import redact_url
from persistency.registry import DEFAULT_URL, ENV_VAR

__all__ = [
    "JsonOption",
    "RunSummary",
    "UrlOption",
    "YesOption",
    "checkpoint_ids",
    "checkpoint_json",
    "confirm",
    "display_url",
    "emit_json",
    "err_console",
    "fmt_time",
    "interrupted",
    "open_provider",
    "out_console",
    "progress_bar",
    "redact_for_display",
    "require_session",
    "resolve_checkpoint",
    "summarize_runs",
    "usage_error",
]

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        "-u",
        metavar="URL",
        show_default=False,
        help=f"Storage URL: a folder, file://, memory://, s3://bucket/prefix, redis://host:port/db. "
        f"Default: ${ENV_VAR}, else {DEFAULT_URL}.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation before deleting.")]


def out_console() -> Console:
    """A console on stdout, created per command so it sees the current stream and width."""
    return Console(highlight=False, soft_wrap=False)


def err_console() -> Console:
    """A console on stderr, for progress bars, warnings and errors."""
    return Console(stderr=True, highlight=False)


def usage_error(message: str) -> NoReturn:
    """Bad usage found after parsing: one line on stderr, exit status 2."""
    err_console().print(Text("error: ", style="bold red") + Text(message), soft_wrap=True)
    raise typer.Exit(2)


def confirm(question: str, *, yes: bool) -> None:
    """Ask ``question`` on stderr unless ``yes``; anything but yes (or no input at all) changes nothing
    and exits with status 1."""
    if yes:
        return
    try:
        ok = typer.confirm(question, default=False, err=True)
    except typer.Abort:  # no input at all (a script, CI): end the prompt's line
        err_console().print()
        ok = False
    if not ok:
        err_console().print(Text("error: ", style="bold red")
                            + Text("not confirmed: nothing was changed (add --yes to go ahead without asking)"),
                            soft_wrap=True)
        raise typer.Exit(1)


def interrupted(note: str) -> NoReturn:
    """Ctrl-C: one line saying where the command stopped and how to go on; exit status 130."""
    err_console().print(Text("interrupted: ", style="bold yellow") + Text(note), soft_wrap=True)
    raise typer.Exit(130)


def emit_json(value: Any) -> None:
    """Print ``value`` as indented JSON on stdout (plain text: no colours, no wrapping)."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")


def display_url(url: str | None) -> str:
    """The URL a command will use, as shown to people (passwords masked)."""
    return redact_url(url if url is not None else (os.environ.get(ENV_VAR) or DEFAULT_URL))


def fmt_time(value: datetime | None) -> str:
    """A UTC timestamp for tables: ``2026-01-01 12:00:05``."""
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def require_session(provider: PersistencyStorageProvider, session_id: str, url: str | None) -> list[CheckpointInfo]:
    """The session's checkpoint infos, or `CheckpointNotFoundError` naming the session and the store."""
    validate_id(session_id, "session id")
    infos = provider.list_checkpoints(session_id)
    if not infos:
        raise CheckpointNotFoundError(
            f"no session {session_id!r} in {display_url(url)} (list them with: persistency sessions)"
        )
    return infos


def resolve_checkpoint(
    provider: PersistencyStorageProvider,
    session_id: str,
    checkpoint_id: str | None,
    infos: list[CheckpointInfo],
) -> Checkpoint:
    """Load ``checkpoint_id`` of the session (None or ``latest``: the newest one), materialized."""
    ids = {i.checkpoint_id for i in infos}
    if checkpoint_id is None or (checkpoint_id == "latest" and "latest" not in ids):
        checkpoint_id = infos[-1].checkpoint_id
    validate_id(checkpoint_id, "checkpoint id")
    if checkpoint_id not in ids:
        raise CheckpointNotFoundError(
            f"no checkpoint {checkpoint_id!r} in session {session_id!r} "
            f"(list them with: persistency show {session_id})"
        )
    return provider.get_checkpoint(session_id, checkpoint_id)


# -- runs -----------------------------------------------------------------------------------------
@dataclass
class RunSummary:
    """One run of a session as its checkpoints tell it: extent, outcome and where it came from."""

    run_id: str
    checkpoints: list[CheckpointInfo] = field(default_factory=list)
    #: the checkpoint (in another run) this run's first checkpoint follows, if any
    origin_id: str | None = None
    origin_run: str | None = None
    #: True when the origin is the last checkpoint of its run (a continuation, not a branch)
    origin_is_end: bool = False

    @property
    def first(self) -> CheckpointInfo:
        """The run's oldest checkpoint."""
        return self.checkpoints[0]

    @property
    def last(self) -> CheckpointInfo:
        """The run's newest checkpoint."""
        return self.checkpoints[-1]

    @property
    def end(self) -> CheckpointInfo | None:
        """The run_end checkpoint that closed the run, if it has one."""
        ends = [c for c in self.checkpoints if c.is_run_end]
        return ends[-1] if ends else None

    @property
    def last_activity(self) -> datetime:
        """When the run last wrote a checkpoint."""
        return max(c.created_at for c in self.checkpoints)

    @property
    def status(self) -> str:
        """``finished``, ``failed``, ``superseded`` or ``unfinished`` (no run end: resumable)."""
        end = self.end
        if end is None:
            return "unfinished"
        if end.end_reason in COMPLETE_END_REASONS:
            return "finished"
        return "superseded" if end.end_reason == "superseded" else "failed"

    @property
    def origin(self) -> str:
        """Where the run started from, for people: ``after run-…``, ``branch of run-… at …`` or ``new``."""
        if self.origin_id is None:
            return "new"
        if self.origin_run is None:
            return f"from {self.origin_id} (missing)"
        if self.origin_is_end:
            return f"after {self.origin_run}"
        return f"branch of {self.origin_run} at {self.origin_id}"

    def as_json(self) -> dict[str, Any]:
        """The summary as plain JSON values."""
        end = self.end
        return {
            "run_id": self.run_id,
            "status": self.status,
            "end_reason": end.end_reason if end else None,
            "error": end.error if end else None,
            "first_checkpoint": self.first.checkpoint_id,
            "last_checkpoint": self.last.checkpoint_id,
            "first_step": self.first.step,
            "last_step": self.last.step,
            "checkpoints": len(self.checkpoints),
            "started_at": self.first.created_at.isoformat(),
            "last_activity": self.last_activity.isoformat(),
            "origin_checkpoint": self.origin_id,
            "origin_run": self.origin_run,
            "branch": self.origin_id is not None and not self.origin_is_end,
        }


def summarize_runs(infos: list[CheckpointInfo]) -> list[RunSummary]:
    """Group a session's checkpoints (oldest first) into runs, in creation order, with their origins."""
    runs: dict[str, RunSummary] = {}
    for info in infos:
        runs.setdefault(info.run_id, RunSummary(info.run_id)).checkpoints.append(info)
    by_id = {i.checkpoint_id: i for i in infos}
    for run in runs.values():
        parent = run.first.parent_id
        if parent is None or (parent in by_id and by_id[parent].run_id == run.run_id):
            continue
        run.origin_id = parent
        if parent in by_id:
            origin = runs[by_id[parent].run_id]
            run.origin_run = origin.run_id
            run.origin_is_end = origin.last.checkpoint_id == parent
    return list(runs.values())


# -- dumps ----------------------------------------------------------------------------------------
_PAYLOAD_FIELDS = ("messages", "agent_states", "manager_state", "metadata")


def checkpoint_json(cp: Checkpoint) -> dict[str, Any]:
    """The checkpoint as plain JSON values, its payloads as stored.

    The payloads came from JSON, so they are passed through as they are: a deeply nested message
    that `verify` reads fine must not fail here on a serializer's depth limit.
    """
    out = cp.model_dump(mode="json", exclude=set(_PAYLOAD_FIELDS))
    for name in _PAYLOAD_FIELDS:
        out[name] = getattr(cp, name)
    return {name: out[name] for name in type(cp).model_fields if name in out}


# -- secrets --------------------------------------------------------------------------------------
def redact_for_display(data: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint dump with its states and metadata passed through the feature's `redact` again.

    The feature never stores secrets; this second guard keeps a store written by other code from
    leaking a key onto a screen or into a pasted log. The transcript is shown as stored.
    """
    from persistency.redaction import redact, redact_text

    out = dict(data)
    for name in ("agent_states", "manager_state", "metadata"):
        out[name] = redact(data.get(name) or {})
    if isinstance(data.get("error"), str):
        out["error"] = redact_text(data["error"])
    return out


# -- progress and listing ---------------------------------------------------------------------------
class _RateColumn(ProgressColumn):
    """Checkpoints per second, from rich's moving estimate."""

    def render(self, task: Task) -> Text:
        """The rate, or nothing before the first estimate."""
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f}/s", style="progress.data.speed")


def progress_bar(*, disable: bool = False) -> Progress:
    """A rich progress bar on stderr with rate and ETA (stdout stays clean for ``--json``); silent when
    not a terminal."""
    console = err_console()
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=disable or not console.is_terminal,
    )


def checkpoint_ids(provider: PersistencyStorageProvider, session_id: str) -> list[str]:
    """Every checkpoint id of the session, sorted, without decoding records where the provider allows."""
    return provider.list_checkpoint_ids(validate_id(session_id, "session id"))
