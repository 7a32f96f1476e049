"""Owner tokens that say where their holder ran, so a lease left by a dead process of this machine can be
told from one held by a live worker elsewhere (`dead_here`)."""

from __future__ import annotations

import os
import re
import socket
import uuid

__all__ = ["dead_here", "owner_token"]


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:60] or "host"


def _pid_namespace() -> str:
    """This process's PID namespace (an inode number on Linux; "0" where there is none to read)."""
    try:
        return re.sub(r"\D", "", os.readlink("/proc/self/ns/pid")) or "0"
    except OSError:
        return "0"


def owner_token() -> str:
    """A fresh owner name ``host@pidns@pid@random`` (a lease is compared on its token anyway; the rest tells
    `dead_here` whether the holder was a process of this machine)."""
    return f"{_host()}@{_pid_namespace()}@{os.getpid()}@{uuid.uuid4().hex[:12]}"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process: it exists
        return True
    try:  # a zombie (killed, not yet reaped) holds nothing
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def dead_here(owner: str) -> bool:
    """True only if ``owner`` (an `owner_token`) was a process of this host and PID namespace that is gone.

    Anything else (another machine or container, this very process, a token of another form, a running
    PID) is treated as alive: its lease is waited out, never taken early."""
    parts = owner.split("@")
    if len(parts) != 4 or not parts[2].isdigit() or parts[0] != _host() or parts[1] != _pid_namespace():
        return False
    pid = int(parts[2])
    return pid != os.getpid() and pid > 0 and not _running(pid)
