"""Read-only commands: ``sessions`` (what is stored), ``show`` (a session's runs and checkpoints, or
one checkpoint's transcript and states) and ``export`` (a checkpoint as JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from persistency.cli._common import (
    JsonOption,
    RunSummary,
    UrlOption,
    checkpoint_json,
    display_url,
    emit_json,
    err_console,
    fmt_time,
    open_provider,
    out_console,
    redact_for_display,
    require_session,
    resolve_checkpoint,
    summarize_runs,
)
from persistency.errors import PersistencyError
from persistency.models import Checkpoint, CheckpointInfo
from persistency.provider import PersistencyStorageProvider

__all__ = ["export", "sessions", "show"]

SessionArg = Annotated[str, typer.Argument(metavar="SESSION", help="The session id.", show_default=False)]
CheckpointArg = Annotated[
    str | None,
    typer.Argument(metavar="CHECKPOINT", help="A checkpoint id of the session, or 'latest'.", show_default=False),
]
_STATUS_STYLE = {"finished": "green", "unfinished": "yellow", "failed": "red", "superseded": "dim"}


def _status(run: RunSummary) -> Text:
    end = run.end
    label = run.status if end is None or end.end_reason is None else f"{run.status} ({end.end_reason})"
    return Text(label, style=_STATUS_STYLE.get(run.status, ""))


# -- sessions -------------------------------------------------------------------------------------
def _session_row(provider: PersistencyStorageProvider, sid: str) -> dict[str, Any]:
    try:
        infos = provider.list_checkpoints(sid)
    except PersistencyError as exc:
        return {"session_id": sid, "error": str(exc)}
    runs = summarize_runs(infos)
    latest = runs[-1] if runs else None
    return {
        "session_id": sid,
        "runs": len(runs),
        "checkpoints": len(infos),
        "steps": infos[-1].step if infos else 0,
        "last_activity": max(i.created_at for i in infos).isoformat() if infos else None,
        "latest_run": latest.run_id if latest else None,
        "latest_run_status": latest.status if latest else None,
        "latest_run_finished": latest.status == "finished" if latest else False,
        "_latest": latest,
        "_last": max(i.created_at for i in infos) if infos else None,
    }


def sessions(url: UrlOption = None, as_json: JsonOption = False) -> None:
    """List every session: runs, checkpoints, transcript length, last activity, latest run's status."""
    with open_provider(url) as provider:
        rows = [_session_row(provider, sid) for sid in provider.list_sessions()]
    if as_json:
        emit_json([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
        return
    if not rows:
        err_console().print(Text(f"no sessions in {display_url(url)}"))
        return
    table = Table("session", "runs", "checkpoints", "steps", "last activity (UTC)", "latest run", "status")
    for r in rows:
        if "error" in r:
            table.add_row(Text(r["session_id"]), "", "", "", "", "", Text(f"unreadable: {r['error']}", style="red"))
            continue
        latest: RunSummary | None = r["_latest"]
        table.add_row(
            Text(r["session_id"]), str(r["runs"]), str(r["checkpoints"]), str(r["steps"]),
            fmt_time(r["_last"]),
            r["latest_run"] or "", _status(latest) if latest else "",
        )
    out_console().print(table)


# -- show -----------------------------------------------------------------------------------------
def _speakers(provider: PersistencyStorageProvider, sid: str, runs: list[RunSummary]) -> dict[str, str]:
    """Speaker of each checkpoint's last message, reading one transcript per run (runs only append)."""
    out: dict[str, str] = {}
    for run in runs:
        try:
            messages = provider.get_checkpoint(sid, run.last.checkpoint_id).messages
        except PersistencyError as exc:
            err_console().print(Text(f"warning: speakers not shown: {exc} (check with: persistency verify {sid})",
                                     style="yellow"), soft_wrap=True)
            break
        for info in run.checkpoints:
            if 0 < info.step <= len(messages):
                out[info.checkpoint_id] = str(messages[info.step - 1].get("name") or "")
    return out


def _kind(info: CheckpointInfo) -> str:
    return f"end: {info.end_reason}" if info.is_run_end else info.kind


def _show_session(provider: PersistencyStorageProvider, sid: str, infos: list[CheckpointInfo],
                  last: int | None, as_json: bool) -> None:
    runs = summarize_runs(infos)
    speakers = _speakers(provider, sid, runs)
    shown = infos[-last:] if last else infos
    checkpoints: list[dict[str, Any]] = [
        {"checkpoint_id": i.checkpoint_id, "run_id": i.run_id, "parent_id": i.parent_id, "step": i.step,
         "kind": i.kind, "end_reason": i.end_reason, "speaker": speakers.get(i.checkpoint_id),
         "created_at": i.created_at.isoformat()}
        for i in shown
    ]
    if as_json:
        emit_json({"session_id": sid, "runs": [r.as_json() for r in runs], "checkpoints": checkpoints})
        return
    console = out_console()
    timeline = Table(title=f"session {sid}: {len(runs)} run(s)", title_justify="left")
    timeline.add_column("run", no_wrap=True)
    timeline.add_column("from", overflow="fold")
    timeline.add_column("steps", no_wrap=True)
    timeline.add_column("ckpts", justify="right")
    timeline.add_column("started (UTC)")
    timeline.add_column("last (UTC)", overflow="fold")
    timeline.add_column("outcome", min_width=10, overflow="fold")
    for r in runs:
        end = r.end
        outcome = _status(r)
        if end is not None and end.error:
            outcome.append(f": {end.error}")
        timeline.add_row(r.run_id, Text(r.origin), f"{r.first.step}-{r.last.step}", str(len(r.checkpoints)),
                         fmt_time(r.first.created_at), fmt_time(r.last_activity), outcome)
    console.print(timeline)
    title = f"checkpoints ({len(shown)} of {len(infos)})" if last else f"checkpoints ({len(infos)})"
    table = Table("checkpoint", "run", "step", "kind", "speaker", "time (UTC)", title=title, title_justify="left")
    for c, i in zip(checkpoints, shown, strict=True):
        table.add_row(Text(i.checkpoint_id), i.run_id, str(i.step), _kind(i), Text(str(c["speaker"] or "")),
                      fmt_time(i.created_at))
    console.print(table)


def _content(message: dict[str, Any]) -> Text:
    content = message.get("content")
    if isinstance(content, list):
        parts = [p.get("text", "") if isinstance(p, dict) and p.get("type") == "text" else json.dumps(p)
                 for p in content]
        text = "\n".join(str(p) for p in parts)
    else:
        text = "" if content is None else str(content)
    out = Text(text)
    for extra in ("tool_calls", "function_call", "tool_responses"):
        if message.get(extra):
            out.append(f"\n{extra}: {json.dumps(message[extra], ensure_ascii=False)}", style="cyan")
    return out


def _kv_table(title: str, values: dict[str, Any]) -> Table:
    table = Table("field", "value", title=title, title_justify="left", show_header=False)
    for k, v in values.items():
        shown = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
        table.add_row(Text(str(k), style="bold"), Text(shown))
    return table


def _show_checkpoint(cp: Checkpoint, as_json: bool) -> None:
    data = redact_for_display(checkpoint_json(cp))
    if as_json:
        emit_json(data)
        return
    console = out_console()
    header = {k: data[k] for k in ("session_id", "checkpoint_id", "run_id", "parent_id", "step", "kind",
                                   "end_reason", "error", "created_at") if data.get(k) is not None}
    if data["metadata"]:
        header["metadata"] = data["metadata"]
    console.print(_kv_table(f"checkpoint {cp.checkpoint_id}", header))
    transcript = Table("#", "speaker", "role", "content", title=f"transcript ({len(cp.messages)} messages)",
                       title_justify="left", show_lines=True)
    for n, msg in enumerate(data["messages"], start=1):
        transcript.add_row(str(n), Text(str(msg.get("name") or "")), Text(str(msg.get("role") or "")), _content(msg))
    console.print(transcript)
    for name, state in data["agent_states"].items():
        console.print(_kv_table(f"agent {name}", state if isinstance(state, dict) else {"state": state}))
    if data["manager_state"]:
        console.print(_kv_table("manager", data["manager_state"]))


def show(
    session: SessionArg,
    checkpoint: CheckpointArg = None,
    last: Annotated[int | None, typer.Option("--last", min=1, help="Only the newest N checkpoints.")] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a session's runs (origins, branches, outcomes) and checkpoints; or one checkpoint's
    transcript and agent states, secrets redacted."""
    with open_provider(url) as provider:
        infos = require_session(provider, session, url)
        if checkpoint is None:
            _show_session(provider, session, infos, last, as_json)
        else:
            _show_checkpoint(resolve_checkpoint(provider, session, checkpoint, infos), as_json)


# -- export ---------------------------------------------------------------------------------------
def export(
    session: SessionArg,
    checkpoint: CheckpointArg = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="Write to FILE instead of stdout.", dir_okay=False),
    ] = None,
    url: UrlOption = None,
) -> None:
    """Print a checkpoint (default: the session's latest) as full, materialized JSON."""
    with open_provider(url) as provider:
        infos = require_session(provider, session, url)
        cp = resolve_checkpoint(provider, session, checkpoint, infos)
    text = json.dumps(checkpoint_json(cp), indent=2, ensure_ascii=False, default=str) + "\n"
    if output is None or str(output) == "-":
        typer.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    err_console().print(Text(f"wrote {cp.checkpoint_id} of {session} to {output}"))
