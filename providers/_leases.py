"""Checks every backend's lease primitives share: what a session id, an owner and a duration may be.

A lease's owner and duration come from the caller, so they are checked before they reach a key,
a row or an object name: a typed error at call time, never a half-taken lease.
"""

from __future__ import annotations

import math
import re
import uuid

from persistency.errors import ProviderConfigError
from persistency.ids import validate_id
from persistency.storage import Lease

__all__ = ["MAX_TTL", "check_lease", "check_lease_args", "new_token"]

MAX_TTL = 7 * 24 * 3600.0
_OWNER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+=:-]{0,199}")


def check_lease_args(session_id: str, owner: str, ttl: float) -> tuple[str, str, float]:
    """The validated (session id, owner, ttl): `InvalidIdentifierError` / `ProviderConfigError` naming the bad one."""
    sid = validate_id(session_id, "session_id")
    if not isinstance(owner, str) or not _OWNER_RE.fullmatch(owner):
        raise ProviderConfigError("lease owner must be 1 to 200 letters, digits or . _ @ + = : - (a worker token)")
    return sid, owner, check_ttl(ttl)


def check_ttl(ttl: float) -> float:
    """``ttl`` as seconds in (0, `MAX_TTL`], else `ProviderConfigError` naming the option."""
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not math.isfinite(ttl) or not 0 < ttl <= MAX_TTL:
        raise ProviderConfigError(f"lease ttl must be a number of seconds above 0 and at most {MAX_TTL:.0f}")
    return float(ttl)


def check_lease(lease: Lease) -> Lease:
    """``lease`` if it is a `Lease` with a valid session id and a token (else a typed error)."""
    if not isinstance(lease, Lease) or not lease.token:
        raise ProviderConfigError("expected a Lease returned by acquire_lease or renew_lease")
    validate_id(lease.session_id, "session_id")
    return lease


def new_token() -> str:
    """A fresh random token naming one holding of a lease (compared on renew and release)."""
    return uuid.uuid4().hex
