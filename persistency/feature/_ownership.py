"""Who owns a session's run: leases around a run, idempotent starts, generations (the ownership issue).

On by default: ``Persistency(provider, session_id)`` owns each run with `Ownership()` when the provider
implements leases (every built-in one: filesystem on a local disk, ``memory://``, SQLite, Redis, Redis
Cluster, S3; see `StorageBackend.acquire_lease`). ``ownership=Ownership(...)`` tunes it, ``ownership=None``
turns it off. A provider without leases (a third-party one, or the filesystem over a remote fsspec
protocol) runs without them, with one warning per provider class, on the create-only ids alone.
Owning a run is storage-side only: a chat that never meets another worker and never crashes behaves
exactly as without it. Before a run loads anything:

- the worker takes the session's lease. A live lease held by another worker means: touch nothing
  (no run end, no checkpoint, no model call) and raise `SessionBusyError` naming when it lapses,
  or, with ``wait=SECONDS``, wait for it and then decide as if this worker had started after the
  owner finished. A lease whose owner died lapses, and of the workers that try, exactly one wins it:
  only that one closes the dead attempt and continues it. A holder that was a process of this very
  machine (same host and PID namespace) and is gone, or a run of this very process that is over (its
  release lost in an outage), is known dead at once: its lease is released by its token
  (compare-and-delete, so still exactly one taker) instead of waited out.
- holding the lease, it checks whether its request was just answered by another worker: the same
  opening message (or the same ``request_id``) as the run that ended last (``resume_latest``), or as a
  completed branch from the same checkpoint (``resume_from``), within ``dedupe_window`` seconds.
  Then it shows that finished run instead of running a new turn (0 model calls).
- while the run goes on, a thread renews the lease every third of its duration; each save first
  checks that the lease is still held and that the session's generation (advanced by each delete)
  is the one the lease was taken in (a provider with ``checks_generation_on_write``, SQLite, Redis
  and the local filesystem, checks it inside the write itself), else the chat stops with `SessionBusyError` or
  `SessionDeletedError` (both `CheckpointConflictError`s: the feature stores nothing more).
- the lease is released when the run ends, however it ends.

The decisions here are I/O-free; the I/O goes through the feature's one-body plans (`_drive`).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from persistency.errors import PersistencyError, ProviderConfigError, SessionBusyError, SessionDeletedError
from persistency.feature._drive import Plan, io
from persistency.feature._owner import LIVE, LeaseIO, dead_here, owner_token
from persistency.feature._plan import Incoming, same_opening
from persistency.ids import parse_checkpoint_id
from persistency.models import Checkpoint, CheckpointInfo, utcnow
from persistency.policies import ResumePolicy
from persistency.storage import Lease, StorageBackend

if TYPE_CHECKING:
    from persistency.provider import PersistencyStorageProvider

__all__ = [
    "REQUEST_KEY", "Claim", "LeaseIO", "Ownership", "claim_plan", "dead_here", "duplicate_branch",
    "duplicate_plan", "finished_duplicate", "has_leases", "next_wait", "owner_token", "resolve", "show_finished",
]

log = logging.getLogger(__name__)

REQUEST_KEY = "request_id"
"""The manager-state key under which a run stores the request id it was started for."""
_COMPLETE = ("termination_message", "max_rounds")
RECHECK = 1.0
"""Longest sleep of a waiting worker between two looks at a busy lease (seconds)."""


@dataclass
class Ownership:
    """How the feature owns a session's runs.

    Args:
        lease_ttl: seconds a lease lasts unless renewed (renewed every third of it while the run goes
            on); after a crash the session is free again this long after the last renewal.
        wait: None to raise `SessionBusyError` at once when another worker owns the session, or the
            seconds to wait for it first.
        dedupe_window: seconds after a run ended during which the same opening message starts no new
            turn but returns that run (0: only an explicit ``request_id`` deduplicates).
        poll: seconds between attempts while waiting.
        take_dead_local: take over at once a lease whose holder was a process of this machine that is
            gone (same host and PID namespace, PID no longer running); False waits for its expiry.
        request_id: the request the next run answers (see `for_request`).

    The defaults: a 30 s lease renewed every 10 s (a worker that vanishes on another machine frees the
    session within 30 s; on this machine at once), no waiting, a 60 s dedupe window.
    """

    lease_ttl: float = 30.0
    wait: float | None = None
    dedupe_window: float = 60.0
    poll: float = 0.2
    take_dead_local: bool = True
    request_id: str | None = None
    """The request the next run answers (taken by that run): a retried delivery returns its result."""

    def __post_init__(self) -> None:
        for name in ("lease_ttl", "poll"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 7 * 86400:
                raise PersistencyError(f"Ownership {name} must be a number of seconds above 0, not {value!r}")
        for name in ("wait", "dedupe_window"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise PersistencyError(f"Ownership {name} must be None or seconds >= 0, not {value!r}")

    def for_request(self, request_id: str) -> Ownership:
        """Mark the next run as answering ``request_id`` (letters, digits, . _ - : @, up to 128)."""
        if not isinstance(request_id, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}", request_id):
            raise PersistencyError("request_id must be 1 to 128 letters, digits or . _ : @ -")
        self.request_id = request_id
        return self

    def take_request_id(self) -> str | None:
        """The request id of the run starting now (cleared: it belongs to one run)."""
        rid, self.request_id = self.request_id, None
        return rid


def has_leases(provider: PersistencyStorageProvider) -> bool:
    """True if ``provider`` implements the lease primitives (the base's default raises; a backend may also
    say ``supports_leases = False`` for a configuration without them)."""
    acquire = getattr(type(provider), "acquire_lease", None)
    if acquire is None or acquire is StorageBackend.acquire_lease:
        return False
    return bool(getattr(provider, "supports_leases", True))


_WARNED: set[str] = set()


def _warn_once(provider: PersistencyStorageProvider) -> None:
    kind = type(provider).__qualname__
    if kind not in _WARNED:
        _WARNED.add(kind)
        log.warning(
            "%s has no session leases: runs are not owned (two workers on one session are kept apart by the "
            "create-only checkpoint ids only; a late or duplicate start is not refused). Pass ownership=None "
            "to say so and silence this, or use a provider with leases.", kind)


def resolve(ownership: Ownership | str | None, provider: PersistencyStorageProvider) -> Ownership | None:
    """The feature's ownership: ``"auto"`` (the default) is `Ownership()` where ``provider`` has leases, else
    None with one warning per provider class; an explicit `Ownership` needs leases (`ProviderConfigError`)."""
    if ownership is None:
        return None
    if isinstance(ownership, str):
        if ownership != "auto":
            raise ValueError(f"ownership must be an Ownership, None or 'auto', not {ownership!r}")
        if has_leases(provider):
            return Ownership()
        _warn_once(provider)
        return None
    if not isinstance(ownership, Ownership):
        raise TypeError(f"ownership must be an Ownership, None or 'auto', not {type(ownership).__name__}")
    if not has_leases(provider):
        raise ProviderConfigError(
            f"{type(provider).__qualname__} has no session leases, so runs cannot be owned; pass ownership=None")
    return ownership


def next_wait(*, now: float, give_up_at: float | None, until_free: float, poll: float) -> float | None:
    """Seconds to sleep before trying a busy lease again (``until_free``: seconds until it lapses), or None
    to give up: no waiting asked for, or no waiting left. Never more than `RECHECK` at a time, so a lease
    released early (the owner finished) is noticed within it, not at the lease's expiry."""
    if give_up_at is None or now >= give_up_at:
        return None
    step = max(poll, min(until_free, RECHECK))
    return max(0.01, min(step, give_up_at - now))


# -- idempotent starts: I/O-free decisions ------------------------------------------------------------------
def _recent(cp: CheckpointInfo, now: datetime, window: float) -> bool:
    return window > 0 and (now - cp.created_at).total_seconds() <= window


def _answers(cp: Checkpoint, incoming: Incoming, request_id: str | None, now: datetime, window: float) -> bool:
    """True if the completed run ending at ``cp`` answered this very request."""
    if cp.kind != "run_end" or cp.end_reason not in _COMPLETE:
        return False
    stored = cp.manager_state.get(REQUEST_KEY)
    if request_id is not None:
        return bool(stored == request_id)
    opening = cp.manager_state.get("opening")
    return stored is None and isinstance(opening, dict) and same_opening(opening, incoming) and _recent(
        cp, now, window)


def finished_duplicate(policy: ResumePolicy, latest: CheckpointInfo | None, incoming: Incoming, *,
                       request_id: str | None, own_latest: str | None, now: datetime, window: float) -> bool:
    """``resume_latest``: did another worker just finish the run this start asks for?"""
    if policy.kind != "resume_latest" or not isinstance(latest, Checkpoint) or latest.checkpoint_id == own_latest:
        return False
    return _answers(latest, incoming, request_id, now, window)


def branch_runs(infos: list[CheckpointInfo], source_id: str) -> list[str]:
    """Run ids whose first checkpoint continues from ``source_id`` (the branches taken from it), oldest first."""
    source_run = next((i.run_id for i in infos if i.checkpoint_id == source_id), None)
    firsts: dict[str, CheckpointInfo] = {}
    for info in infos:
        firsts.setdefault(info.run_id, info)
    return [run for run, first in firsts.items() if first.parent_id == source_id and run != source_run]


def last_of_run(infos: list[CheckpointInfo], run_id: str) -> str | None:
    """The greatest checkpoint id of ``run_id`` (its run end, if it ended)."""
    ids = [i.checkpoint_id for i in infos if i.run_id == run_id and parse_checkpoint_id(i.checkpoint_id)]
    return max(ids) if ids else None


def duplicate_branch(policy: ResumePolicy, end: Checkpoint | None, incoming: Incoming, *,
                     request_id: str | None, now: datetime, window: float) -> bool:
    """``resume_from(X)``: is ``end`` (the last checkpoint of a branch from X) this request's answer?"""
    return policy.kind == "resume_from" and end is not None and _answers(end, incoming, request_id, now, window)


class Claim:
    """A held lease for one run: renewed by a thread, checked before each save, released at the end."""

    def __init__(self, lio: LeaseIO, lease: Lease, settings: Ownership, request_id: str | None) -> None:
        self.lio = lio
        self.lease = lease
        self.settings = settings
        self.request_id = request_id
        self.lost: str | None = None
        #: SQLite (its write transaction), Redis (its save script) and the local filesystem (under the
        #: segment's lock) check the generation in the write:
        #: no extra read per save there
        self.check_generation = not getattr(lio.provider, "checks_generation_on_write", False)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._renew_loop, name="persistency-lease", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        every = self.settings.lease_ttl / 3
        while not self._stop.wait(every):
            with self._lock:
                lease = self.lease
            try:
                renewed = self.lio.provider.renew_lease(lease, self.settings.lease_ttl)
            except Exception:  # an outage: keep trying until the lease would have lapsed
                if time.time() >= lease.expires_at:
                    self.lost = "its lease lapsed while the storage could not be reached"
                    return
                continue
            if renewed is None:
                self.lost = "its lease was taken by another worker after it lapsed"
                return
            with self._lock:
                self.lease = renewed

    def check(self) -> None:
        """Raise `SessionBusyError` if the lease was lost (the run is another worker's now)."""
        if self.lost is None and time.time() >= self.lease.expires_at:
            self.lost = "its lease lapsed before it was renewed"
        if self.lost is not None:
            raise SessionBusyError(self.lease.session_id, self.lease.expires_at,
                                   f"session {self.lease.session_id!r}: this worker lost the run ({self.lost}); "
                                   "it stores nothing more")

    def before_save_plan(self, cp: Checkpoint) -> Plan[None]:
        """Before each save: still the owner, and the session not deleted since the lease was taken."""
        self.check()
        if self.check_generation:
            gen = yield io(self.lio, "generation", cp.session_id)
            if gen != self.lease.generation:
                raise SessionDeletedError(
                    f"session {cp.session_id!r} was deleted while this chat ran (generation "
                    f"{self.lease.generation} -> {gen}); checkpoint {cp.checkpoint_id!r} was not saved, the chat stops")

    def release_plan(self) -> Plan[None]:
        """Stop renewing and give the lease up (a lost lease is left to its holder)."""
        self._stop.set()
        with self._lock:
            lease = self.lease
        try:
            if self.lost is None:
                yield io(self.lio, "release", lease)
        except PersistencyError:
            pass  # it lapses by itself, and this process's next start frees it (its token is no longer LIVE)
        finally:
            LIVE.discard(lease.owner)


def claim_plan(provider: PersistencyStorageProvider, session_id: str, settings: Ownership | None) -> Plan[Claim | None]:
    """Take the session's lease before anything is read (waiting if ``settings.wait``); None when off."""
    if settings is None:
        return None
    if not has_leases(provider):  # set on the attribute after construction: warn, run as before
        _warn_once(provider)
        return None
    lio = LeaseIO(provider)
    owner = owner_token()
    LIVE.add(owner)  # until release_plan, or until this start gives up
    try:
        return (yield from _claim_loop(lio, session_id, owner, settings))
    except BaseException:
        LIVE.discard(owner)
        raise


def _claim_loop(lio: LeaseIO, session_id: str, owner: str, settings: Ownership) -> Plan[Claim]:
    give_up_at = None if settings.wait is None else time.monotonic() + settings.wait
    released: set[str] = set()
    while True:
        lease = yield io(lio, "acquire", session_id, owner, float(settings.lease_ttl))
        if lease is not None:
            return Claim(lio, lease, settings, settings.take_request_id())
        held = yield io(lio, "current", session_id)
        if held is not None and settings.take_dead_local and held.token not in released and dead_here(held.owner):
            released.add(held.token)  # compare-and-delete on its token: of all who try, one acquire wins
            log.info("session %s: the lease of %s, a process of this machine that is gone, is taken over",
                     session_id, held.owner)
            yield io(lio, "release", held)
            continue
        expires_at = held.expires_at if held is not None else time.time() + settings.poll
        delay = next_wait(now=time.monotonic(), give_up_at=give_up_at, until_free=expires_at - time.time(),
                          poll=settings.poll)
        if delay is None:  # the request id stays set: the caller's retry is the same request
            raise SessionBusyError(session_id, expires_at)
        yield io(lio, "sleep", delay)


def duplicate_plan(
    provider: PersistencyStorageProvider, session_id: str, claim: Claim | None, policy: ResumePolicy,
    incoming: Incoming, latest: CheckpointInfo | None, own_latest: str | None,
) -> Plan[Checkpoint | None]:
    """The finished run that already answered this start (held lease: nobody can add one now), or None."""
    if claim is None:
        return None
    now, window = utcnow(), float(claim.settings.dedupe_window)
    if finished_duplicate(policy, latest, incoming, request_id=claim.request_id, own_latest=own_latest, now=now,
                          window=window):
        assert isinstance(latest, Checkpoint)
        return latest
    if policy.kind != "resume_from" or policy.checkpoint_id is None:
        return None
    infos: list[CheckpointInfo] = yield io(provider, "list_checkpoints", session_id)
    by_id = {i.checkpoint_id: i for i in infos}
    for run in reversed(branch_runs(infos, policy.checkpoint_id)):
        last = last_of_run(infos, run)
        info = by_id.get(last) if last is not None else None
        if info is None or info.kind != "run_end" or info.end_reason not in _COMPLETE:
            continue
        if claim.request_id is None and not _recent(info, now, window):
            continue
        end: Checkpoint = yield io(provider, "get_checkpoint", session_id, info.checkpoint_id)
        if duplicate_branch(policy, end, incoming, request_id=claim.request_id, now=now, window=window):
            return end
    return None


def show_finished(manager: Any, registered: Any, sender: Any, end: Checkpoint) -> None:
    """Put the finished run's transcript, histories, last speaker and pattern context into the live chat, as if
    this worker had run it (``initiate_group_chat`` and ``run_group_chat`` read the manager's last speaker)."""
    from persistency._capture import restore_histories
    from persistency.feature import _pattern

    agents = {a.name: a for a in registered.agents}
    agents.setdefault(sender.name, sender)
    restore_histories(manager, registered, agents, end.messages, clears=end.manager_state.get("clears") or [])
    _pattern.restore(registered, end.manager_state.get("pattern_state"), whole=False)
    last = next((agents.get(str(m.get("name"))) for m in reversed(end.messages) if m.get("name") in agents), None)
    if last is not None:
        manager._last_speaker = last
