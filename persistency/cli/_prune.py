"""``prune``: drop old sessions and runs, never a checkpoint that a kept one needs to load.

What is kept: every checkpoint of a kept run, plus its whole parent chain (a branch needs the run it
branched from up to the branch point). The codec's bases and keyframes always point at a checkpoint's
ancestors, so the parent chain covers them too.

How runs are dropped with a provider that can only delete whole sessions: the kept checkpoints are
copied to a staging session ``SESSION.pruning`` and read back; only then is ``SESSION`` deleted and
refilled from the staging copy, which is deleted last. Every step is create-only and idempotent: a
prune that dies at any point leaves the kept checkpoints in ``SESSION`` or in the staging session,
and the next ``prune`` finishes the job (it copies whatever ``SESSION`` lacks back from staging).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from persistency.cli._common import (
    JsonOption,
    UrlOption,
    YesOption,
    checkpoint_ids,
    checkpoint_json,
    confirm,
    display_url,
    emit_json,
    err_console,
    open_provider,
    out_console,
    progress_bar,
    require_session,
    summarize_runs,
    usage_error,
)
from persistency.cli._copy import copy_checkpoints
from persistency.cli._walk import iter_checkpoints
from persistency.errors import CorruptCheckpointError, EncryptionError, PersistencyError, UnsupportedSchemaError
from persistency.ids import MAX_ID_LENGTH
from persistency.models import CheckpointInfo, utcnow
from persistency.provider import PersistencyStorageProvider

__all__ = ["MAX_AGE", "STAGING_SUFFIX", "PrunePlan", "parse_duration", "plan_session", "prune"]

STAGING_SUFFIX = ".pruning"
Advance = Callable[[], Any] | None
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(?:\d+[smhdw])+")
MAX_AGE = timedelta(days=100 * 365)
"""The longest --older-than: a century (a larger one overflows date arithmetic and means "all" anyway)."""
_RECENT = 8  # transcripts kept while digesting, for the children that extend them


def parse_duration(text: str) -> timedelta:
    """``7d``, ``12h``, ``1d12h``, ``30m``, ``2w``, ``90s`` as a `timedelta` (at most `MAX_AGE`)."""
    value = text.strip().lower()
    if not _DURATION.fullmatch(value):
        raise typer.BadParameter(f"{text!r} is not a duration such as 7d, 12h, 1d12h, 30m, 2w or 90s")
    seconds = sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([smhdw])", value))
    if seconds > MAX_AGE.total_seconds():
        raise typer.BadParameter(f"{text!r} is longer than any store can be old (at most {MAX_AGE.days:,}d)")
    return timedelta(seconds=seconds)


@dataclass
class PrunePlan:
    """What prune does to one session."""

    session_id: str
    action: str = "keep"  # keep | delete | rewrite | skip | recover
    dropped_runs: list[str] = field(default_factory=list)
    drop_ids: list[str] = field(default_factory=list)
    keep: list[CheckpointInfo] = field(default_factory=list)
    #: kept checkpoints of dropped runs: ancestors of a kept run
    retained: list[str] = field(default_factory=list)
    #: every checkpoint id the plan was made from: the session must still hold exactly these
    seen: list[str] = field(default_factory=list)
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        """The plan as plain JSON values."""
        return {"session_id": self.session_id, "action": self.action, "dropped_runs": self.dropped_runs,
                "dropped_checkpoints": self.drop_ids, "kept_checkpoints": len(self.keep),
                "retained_for_lineage": self.retained, "note": self.note or None}


def plan_session(session_id: str, infos: list[CheckpointInfo], cutoff: datetime | None,
                 keep_last: int | None) -> PrunePlan:
    """Choose the runs to drop and the checkpoints to keep (kept runs and their parent chains).

    A run is dropped when it is older than ``cutoff`` (its last checkpoint; if given) and is not one
    of the ``keep_last`` newest runs (if given).
    """
    plan = PrunePlan(session_id, seen=[i.checkpoint_id for i in infos])
    runs = summarize_runs(infos)
    protected = {r.run_id for r in runs[-keep_last:]} if keep_last else set()
    dropped = [r for r in runs if r.run_id not in protected and (cutoff is None or r.last_activity < cutoff)]
    if not dropped:
        return plan
    dropped_ids = {r.run_id for r in dropped}
    by_id = {i.checkpoint_id: i for i in infos}
    keep: set[str] = set()
    for info in infos:
        if info.run_id in dropped_ids:
            continue
        cur: str | None = info.checkpoint_id
        while cur is not None and cur in by_id and cur not in keep:
            keep.add(cur)
            cur = by_id[cur].parent_id
    plan.dropped_runs = [r.run_id for r in dropped]
    plan.keep = [i for i in infos if i.checkpoint_id in keep]
    plan.drop_ids = [i.checkpoint_id for i in infos if i.checkpoint_id not in keep]
    plan.retained = [i.checkpoint_id for i in plan.keep if i.run_id in dropped_ids]
    if not plan.drop_ids:
        plan.action, plan.note = "keep", "every checkpoint of the old runs is needed by a kept run"
    elif not plan.keep:
        plan.action = "delete"
    elif len(session_id) + len(STAGING_SUFFIX) > MAX_ID_LENGTH:
        plan.action, plan.note = "skip", "session id too long for a staging copy; prune it by hand"
    else:
        plan.action = "rewrite"
    return plan


def _digests(p: PersistencyStorageProvider, sid: str, ids: list[str]) -> dict[str, bytes]:
    """A digest of each checkpoint as loaded, its session id aside, from one walk of ``ids`` (parents first).

    Linear, not quadratic, in the transcripts' length: a transcript that extends its parent's (the
    prefix compares equal, which costs a pointer comparison per message when the walk shares the
    parent's messages, as `iter_checkpoints` does) is digested as the parent's digest and the new
    messages; any other transcript is digested whole. Equal digests therefore mean equal transcripts.
    """
    out: dict[str, bytes] = {}
    recent: OrderedDict[str, tuple[list[dict[str, Any]], bytes]] = OrderedDict()  # parent transcripts
    for cid, loaded in iter_checkpoints(p, sid, ids):
        if isinstance(loaded, PersistencyError):
            raise loaded
        messages = loaded.messages
        parent = recent.get(loaded.parent_id) if loaded.parent_id is not None else None
        if parent is not None and len(messages) >= len(parent[0]) and messages[:len(parent[0])] == parent[0]:
            transcript = _sha(b"extends", parent[1], _json(messages[len(parent[0]):]))
        else:
            transcript = _sha(b"whole", _json(messages))
        recent[cid] = (messages, transcript)
        while len(recent) > _RECENT:
            recent.popitem(last=False)
        rest = {**checkpoint_json(loaded.model_copy(update={"messages": []})), "session_id": None}
        out[cid] = _sha(transcript, _json(rest))
    return out


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, default=str).encode()


def _sha(*parts: bytes) -> bytes:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.digest()


def _check_copy(p: PersistencyStorageProvider, sid: str, staging: str, ids: list[str]) -> None:
    """Read the staging copy back and compare it with the original, checkpoint by checkpoint."""
    original = _digests(p, sid, ids)
    try:
        copied = _digests(p, staging, ids)
    except PersistencyError as exc:
        raise PersistencyError(f"staging copy of {sid} does not read back ({exc}); nothing was deleted") from exc
    for cid in ids:
        if copied.get(cid) != original[cid]:
            raise PersistencyError(f"staging copy of {sid}/{cid} differs from the original; nothing was deleted")


def _restore(p: PersistencyStorageProvider, staging: str, sid: str, advance: Advance = None) -> None:
    """Copy into ``sid`` what it lacks from ``staging``, then delete ``staging``."""
    res = copy_checkpoints(p, p, staging, p.list_checkpoints(staging), dst_session=sid, advance=advance)
    if res.failed:
        cid, msg = res.failed[0]
        raise PersistencyError(
            f"session {sid!r} is only partly restored ({cid}: {msg}); its kept checkpoints are safe in "
            f"{staging!r}: run prune again to finish"
        )
    p.delete_session(staging)


def _unchanged(p: PersistencyStorageProvider, plan: PrunePlan) -> None:
    """Refuse to go on if the session gained or lost checkpoints since it was planned (a live chat)."""
    if checkpoint_ids(p, plan.session_id) != plan.seen:
        raise PersistencyError(f"session {plan.session_id!r} changed while pruning (a chat is writing to it); "
                               "skipped")


def _rewrite(p: PersistencyStorageProvider, plan: PrunePlan, advance: Advance = None) -> None:
    sid = plan.session_id
    staging = sid + STAGING_SUFFIX
    keep_ids = [i.checkpoint_id for i in plan.keep]
    res = copy_checkpoints(p, p, sid, plan.keep, dst_session=staging, advance=advance)
    if res.failed:
        p.delete_session(staging)
        cid, msg = res.failed[0]
        raise PersistencyError(f"cannot stage {sid}/{cid} ({msg}); nothing was deleted")
    try:
        _check_copy(p, sid, staging, keep_ids)
        _unchanged(p, plan)
    except PersistencyError:
        p.delete_session(staging)
        raise
    p.delete_session(sid)
    _restore(p, staging, sid, advance)


def _apply(p: PersistencyStorageProvider, plan: PrunePlan, advance: Advance = None) -> None:
    if plan.action == "delete":
        _unchanged(p, plan)
        p.delete_session(plan.session_id)
    elif plan.action == "rewrite":
        _rewrite(p, plan, advance)
    elif plan.action == "recover":
        _restore(p, plan.session_id + STAGING_SUFFIX, plan.session_id, advance)


def prune(
    older_than: Annotated[
        str | None,
        typer.Option("--older-than", metavar="AGE", help="Drop runs whose last checkpoint is older than AGE "
                     "(7d, 12h, 1d12h, 30m, 2w); a session whose runs are all old is deleted.", show_default=False),
    ] = None,
    keep_last_runs: Annotated[
        int | None,
        typer.Option("--keep-last-runs", metavar="N", min=1, help="Always keep the newest N runs of each session "
                     "(alone: drop all older runs).", show_default=False),
    ] = None,
    session: Annotated[
        list[str] | None,
        typer.Option("--session", "-s", metavar="ID", help="Only this session (repeatable).", show_default=False),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Show what would be dropped; change nothing.")]
    = False,
    yes: YesOption = False,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Drop old runs and sessions, keeping every checkpoint a kept one needs to load.

    A run is dropped when it is older than --older-than and not among the --keep-last-runs newest.
    Kept runs keep their parent chain, even into dropped runs (a branch keeps its trunk). Do not
    prune sessions that a chat is writing to; an interrupted prune is finished by the next one.
    Asks before deleting anything unless --yes; --dry-run never asks and changes nothing.
    """
    if older_than is None and keep_last_runs is None:
        usage_error("give --older-than and/or --keep-last-runs (see: persistency prune --help)")
    try:
        cutoff = utcnow() - parse_duration(older_than) if older_than is not None else None
    except typer.BadParameter as exc:
        usage_error(f"--older-than: {exc.message}")
    plans: list[PrunePlan] = []
    errors: list[str] = []
    with open_provider(url) as p:
        all_sids = p.list_sessions()
        if session:
            sids = list(session)
        else:  # every session, and the target of a staging copy whose session is gone
            targets = {s[: -len(STAGING_SUFFIX)] for s in all_sids if s.endswith(STAGING_SUFFIX)}
            sids = sorted({s for s in all_sids if not s.endswith(STAGING_SUFFIX)} | (targets - {""}))
        for sid in sids:
            if sid + STAGING_SUFFIX in all_sids:
                plans.append(PrunePlan(sid, action="recover", note="finishing an interrupted prune"))
                continue
            try:
                infos = require_session(p, sid, url) if session else p.list_checkpoints(sid)
            except (CorruptCheckpointError, UnsupportedSchemaError, EncryptionError) as exc:
                # a damaged session is reported and left alone, the others pruned
                plans.append(PrunePlan(sid, action="skip", note=f"unreadable, left as it is: {exc}"))
                errors.append(f"{sid}: {exc}")
                continue
            plans.append(plan_session(sid, infos, cutoff, keep_last_runs))
        if not dry_run and _destructive(plans):
            confirm(_question(plans, url), yes=yes)
        if not dry_run:
            with progress_bar(disable=as_json) as progress:
                task = progress.add_task("pruning", total=sum(2 * len(plan.keep) for plan in plans
                                                              if plan.action == "rewrite") or None)
                for plan in plans:
                    progress.update(task, description=f"pruning {plan.session_id}")
                    try:
                        _apply(p, plan, lambda: progress.advance(task))
                    except PersistencyError as exc:
                        plan.note = f"failed: {exc}"
                        errors.append(f"{plan.session_id}: {exc}")
    _report(plans, dry_run, as_json)
    if errors:
        for e in errors:
            err_console().print(Text(f"error: {e}", style="red"))
        raise typer.Exit(1)


def _destructive(plans: list[PrunePlan]) -> bool:
    return any(plan.action in ("delete", "rewrite") for plan in plans)


def _question(plans: list[PrunePlan], url: str | None) -> str:
    deleted = sum(1 for p in plans if p.action == "delete")
    rewritten = [p for p in plans if p.action == "rewrite"]
    dropped = sum(len(p.drop_ids) for p in plans if p.action in ("delete", "rewrite"))
    return (f"prune {display_url(url)}: delete {deleted} session(s) and drop old runs from {len(rewritten)} more, "
            f"{dropped:,} checkpoint(s) in all (see them with --dry-run). Go ahead?")


def _report(plans: list[PrunePlan], dry_run: bool, as_json: bool) -> None:
    if as_json:
        emit_json({"dry_run": dry_run, "sessions": [p.as_json() for p in plans]})
        return
    title = "prune (dry run: nothing changed)" if dry_run else "prune"
    table = Table("session", "action", "runs dropped", "checkpoints dropped", "kept", "kept for lineage", "note",
                  title=title, title_justify="left")
    for p in plans:
        table.add_row(Text(p.session_id), p.action, Text(", ".join(p.dropped_runs)), str(len(p.drop_ids)),
                      str(len(p.keep)) if p.action != "keep" or p.dropped_runs else "all", str(len(p.retained)),
                      Text(p.note))
    out_console().print(table)
