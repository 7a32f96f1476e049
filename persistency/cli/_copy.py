"""``copy``: sessions from one store to another (folder to S3, Redis to a folder, ...), resumable.

Checkpoints already at the destination are skipped, so a re-run finishes an interrupted copy. Parents
are saved before their children, so the destination stores deltas against them just as the source
did. The source is read with one walk per session (`iter_checkpoints`: each record read once) and the
destination written in batches (one sync each where the backend can), so a copy is linear in the
number of records. `copy_checkpoints` is shared with ``prune``, which rewrites a session through a staging copy.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from persistency.cli._common import (
    JsonOption,
    checkpoint_ids,
    emit_json,
    interrupted,
    open_provider,
    out_console,
    progress_bar,
    require_session,
)
from persistency.cli._walk import SAVE_BATCH, iter_checkpoints, save_batch
from persistency.errors import CheckpointConflictError, PersistencyError
from persistency.ids import validate_id
from persistency.models import Checkpoint, CheckpointInfo
from persistency.provider import PersistencyStorageProvider
from persistency.registry import redact_url

__all__ = ["CopyResult", "copy", "copy_checkpoints", "parents_first", "readable_infos"]


@dataclass
class CopyResult:
    """What one session's copy did."""

    session_id: str
    copied: list[str] = field(default_factory=list)
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The result as plain JSON values."""
        return {"session_id": self.session_id, "copied": len(self.copied), "skipped": self.skipped,
                "failed": [{"checkpoint_id": c, "message": m} for c, m in self.failed]}


def parents_first(infos: list[CheckpointInfo]) -> list[CheckpointInfo]:
    """``infos`` ordered so that each checkpoint comes after its parent (when the parent is among them)."""
    by_id = {i.checkpoint_id: i for i in infos}
    done: set[str] = set()
    out: list[CheckpointInfo] = []
    for info in sorted(infos, key=lambda i: i.checkpoint_id):
        stack, on_stack = [info], {info.checkpoint_id}
        while stack:  # iterative: a foreign id scheme may list a long chain children-first
            cur = stack[-1]
            parent = cur.parent_id
            if parent is not None and parent in by_id and parent not in done and parent not in on_stack:
                stack.append(by_id[parent])
                on_stack.add(parent)
                continue
            stack.pop()
            on_stack.discard(cur.checkpoint_id)
            if cur.checkpoint_id not in done:
                done.add(cur.checkpoint_id)
                out.append(cur)
    return out


def _same_info(a: CheckpointInfo, b: CheckpointInfo) -> bool:
    """True when two infos describe the same checkpoint (the session id aside): a copy, not a clash."""
    return a.model_dump(exclude={"session_id"}) == b.model_dump(exclude={"session_id"})


def copy_checkpoints(
    src: PersistencyStorageProvider,
    dst: PersistencyStorageProvider,
    session_id: str,
    infos: list[CheckpointInfo],
    *,
    dst_session: str | None = None,
    advance: Callable[[], Any] | None = None,
) -> CopyResult:
    """Copy the checkpoints ``infos`` of ``session_id`` that ``dst`` lacks, parents first.

    One that ``dst`` holds already is skipped, or reported as failed if it is a different checkpoint
    under the same id (two stores that each grew a session of that name): nothing is overwritten.

    Args:
        dst_session: store them under this session id instead (their ``session_id`` is rewritten).
        advance: called once per checkpoint handled, for a progress bar.
    """
    target = validate_id(dst_session or session_id, "session id")
    result = CopyResult(session_id)
    existing = {i.checkpoint_id: i for i in dst.list_checkpoints(target)}
    failed: set[str] = set()

    def fail(cid: str, message: str) -> None:
        result.failed.append((cid, message))
        failed.add(cid)

    todo: dict[str, CheckpointInfo] = {}
    for info in parents_first(infos):
        cid = info.checkpoint_id
        if cid not in existing:
            todo[cid] = info
            continue
        if info.parent_id is not None and info.parent_id in failed:
            fail(cid, f"not copied: its parent {info.parent_id!r} was not copied")
        elif not _same_info(existing[cid], info):
            fail(cid, f"a different checkpoint {cid!r} is already in session {target!r} at the destination")
        else:
            result.skipped += 1
        if advance is not None:
            advance()
    batch: list[Checkpoint] = []

    def store() -> None:
        """Save the batch; if it fails, each one alone, so the error lands on its checkpoint."""
        try:
            save_batch(dst, batch)
            result.copied.extend(cp.checkpoint_id for cp in batch)
        except PersistencyError:
            for cp in batch:
                try:
                    if cp.parent_id is not None and cp.parent_id in failed:
                        raise PersistencyError(f"not copied: its parent {cp.parent_id!r} was not copied")
                    dst.save_checkpoint(cp)
                    result.copied.append(cp.checkpoint_id)
                except CheckpointConflictError:
                    result.skipped += 1  # another copy won the race (or the batch stored it): it is there
                except PersistencyError as exc:
                    fail(cp.checkpoint_id, str(exc))
        if advance is not None:  # after the write, not on Ctrl-C: the count says what was done
            for _ in batch:
                advance()
        batch.clear()

    for cid, loaded in iter_checkpoints(src, session_id, list(todo)):
        parent = todo[cid].parent_id
        if isinstance(loaded, PersistencyError) or (parent is not None and parent in failed):
            store()  # what came before is stored first, and the progress stays in order
            fail(cid, str(loaded) if isinstance(loaded, PersistencyError)
                 else f"not copied: its parent {parent!r} was not copied")
            if advance is not None:
                advance()
            continue
        batch.append(loaded if target == session_id else loaded.model_copy(update={"session_id": target}))
        if len(batch) >= SAVE_BATCH:
            store()
    store()
    return result


def readable_infos(
    src: PersistencyStorageProvider, session_id: str
) -> tuple[list[CheckpointInfo], list[tuple[str, str]]]:
    """The session's checkpoint infos and, when its listing fails on a damaged record, the ones that fail.

    A damaged record must not stop the rest of a session from being copied (or rescued).
    """
    try:
        return src.list_checkpoints(session_id), []
    except PersistencyError:
        infos: list[CheckpointInfo] = []
        failed: list[tuple[str, str]] = []
        for cid, loaded in iter_checkpoints(src, session_id, checkpoint_ids(src, session_id)):
            if isinstance(loaded, PersistencyError):
                failed.append((cid, str(loaded)))
            else:
                infos.append(loaded.info())
        return infos, failed


def _key_option(var: str | None, flag: str) -> dict[str, Any]:
    """``encryption_key`` from the environment variable ``var`` named by ``flag``, if given."""
    if var is None:
        return {}
    value = os.environ.get(var)
    if not value:
        raise typer.BadParameter(f"environment variable {var} is not set", param_hint=flag)
    return {"encryption_key": value}


def copy(
    src_url: Annotated[str, typer.Argument(metavar="SRC_URL", help="Store to copy from.", show_default=False)],
    dst_url: Annotated[str, typer.Argument(metavar="DST_URL", help="Store to copy to.", show_default=False)],
    session: Annotated[
        list[str] | None,
        typer.Option("--session", "-s", metavar="ID", help="Copy only this session (repeatable).", show_default=False),
    ] = None,
    src_key_env: Annotated[
        str | None,
        typer.Option("--src-key-env", metavar="VAR", show_default=False,
                     help="Read the source with the encryption key in environment variable VAR."),
    ] = None,
    dst_key_env: Annotated[
        str | None,
        typer.Option("--dst-key-env", metavar="VAR", show_default=False,
                     help="Encrypt the destination with the key in environment variable VAR."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Copy sessions between any two stores (folder, memory://, s3://, redis://), with a progress bar.

    Idempotent: checkpoints already at the destination are skipped, so re-running finishes an
    interrupted copy. Parents are copied before children, so the destination stores deltas too.
    Both stores use $PERSISTENCY_ENCRYPTION_KEY unless --src-key-env/--dst-key-env name another
    variable (keys never go on the command line): that re-keys, encrypts or decrypts a store.
    """
    results: list[CopyResult] = []
    with open_provider(src_url, **_key_option(src_key_env, "--src-key-env")) as src, \
            open_provider(dst_url, **_key_option(dst_key_env, "--dst-key-env")) as dst:
        for sid in session or []:
            if not checkpoint_ids(src, sid):
                require_session(src, sid, src_url)  # raises: no such session
        plans = [(sid, *readable_infos(src, sid)) for sid in (session or src.list_sessions())]
        total = sum(len(infos) for _, infos, _ in plans)
        done = [0]

        def step() -> None:
            done[0] += 1
            progress.advance(task)

        with progress_bar(disable=as_json) as progress:
            task = progress.add_task(f"{redact_url(src_url)} -> {redact_url(dst_url)}", total=total)
            try:
                for sid, infos, unreadable in plans:
                    progress.update(task, description=f"copying {sid}")
                    result = copy_checkpoints(src, dst, sid, infos, advance=step)
                    result.failed = sorted(unreadable + result.failed)
                    results.append(result)
            except KeyboardInterrupt:
                progress.stop()
                interrupted(f"copy stopped after {done[0]:,} of {total:,} checkpoints; run the same command "
                            "again to finish (checkpoints already copied are skipped)")
    failed = [(r.session_id, c, m) for r in results for c, m in r.failed]
    if as_json:
        emit_json({"sessions": [r.as_json() for r in results]})
    else:
        table = Table("session", "copied", "already there", "failed",
                      title=f"{redact_url(src_url)} -> {redact_url(dst_url)}", title_justify="left")
        for r in results:
            table.add_row(Text(r.session_id), str(len(r.copied)), str(r.skipped),
                          Text(str(len(r.failed)), style="red" if r.failed else ""))
        out_console().print(table)
        for sid, cid, msg in failed:
            out_console().print(Text(f"failed: {sid}/{cid}: {msg}", style="red"))
    if failed:
        raise typer.Exit(1)
