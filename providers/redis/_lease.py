"""Session leases and generations in Redis: ``SET NX PX`` to take, compare-the-holder scripts to renew and release.

Keys (``P`` the provider's ``key_prefix``, ``S`` the session id, the hash tag shared with the
session's other keys, so every command below touches one cluster slot)::

    P:{S}:lease   string "TOKEN GENERATION OWNER", expiring by itself after the lease's duration (PX)
    P:{S}:gen     integer: the session's generation, advanced by each delete (no TTL: it outlives the session)

- acquire: one script that reads the generation and does ``SET key value NX PX ttl``: Redis
  creates the key only if none is live (an expired one is gone), so of racers exactly one gets
  ``OK``, and the lease names the generation it was taken in (no delete can land in between); on a
  cluster both keys live on the session's slot's primary. A lease written just before a failover
  can be lost with the primary (asynchronous replication), like any write; ``min_replicas`` does
  not cover leases.
- renew / release: a Lua script compares the stored value with the holder's and only then sets a
  new ``PEXPIRE`` / deletes, so a worker whose lease expired and was taken never touches the new one.

Written against a redis-py client object (`redis.Redis` or `redis.cluster.RedisCluster`); the
provider passes its client and its error translation.
"""

from __future__ import annotations

import time
from typing import Any

from persistency.errors import CorruptCheckpointError
from persistency.storage import Lease

from .._leases import check_lease, check_lease_args, check_ttl, new_token

__all__ = ["RedisLeases"]

_ACQUIRE = """
-- KEYS: lease, generation; ARGV: token, owner, ttl ms. Returns the generation, or false if a lease is live.
local gen = redis.call('GET', KEYS[2]) or '0'
if redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. gen .. ' ' .. ARGV[2], 'NX', 'PX', ARGV[3]) then return gen end
return false
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class RedisLeases:
    """The lease primitives and `session_generation` over one redis-py client and key prefix."""

    def __init__(self, client: Any, key_prefix: str) -> None:
        self._client = client
        self._prefix = key_prefix

    def lease_key(self, session_id: str) -> str:
        """The session's lease key (same hash tag, same slot as its records)."""
        return f"{self._prefix}:{{{session_id}}}:lease"

    def generation_key(self, session_id: str) -> str:
        """The session's generation counter."""
        return f"{self._prefix}:{{{session_id}}}:gen"

    @staticmethod
    def _value(lease: Lease) -> str:
        return f"{lease.token} {lease.generation} {lease.owner}"

    def session_generation(self, session_id: str) -> int:
        """The number each delete advances (0 for a session never deleted)."""
        raw = self._client.get(self.generation_key(session_id))
        if raw is None:
            return 0
        try:
            return int(raw)
        except ValueError as exc:
            raise CorruptCheckpointError(f"Redis key {self.generation_key(session_id)!r} is not a number") from exc

    def acquire(self, session_id: str, owner: str, ttl: float) -> Lease | None:
        """``SET NX PX`` and the generation in one script: the lease if no live one exists, else None.

        (The delete script advances the generation; the provider's delete is in `plans`.)"""
        sid, owner, ttl = check_lease_args(session_id, owner, ttl)
        token, expires = new_token(), time.time() + ttl
        gen = self._client.eval(_ACQUIRE, 2, self.lease_key(sid), self.generation_key(sid), token, owner,
                                max(1, int(ttl * 1000)))
        if gen is None:
            return None
        try:
            return Lease(sid, owner, expires, int(gen), token)
        except ValueError as exc:
            raise CorruptCheckpointError(f"Redis key {self.generation_key(sid)!r} is not a number") from exc

    def current(self, session_id: str) -> Lease | None:
        """The live lease as stored (None if none): who holds it and about when it lapses."""
        sid = check_lease_args(session_id, "probe", 1.0)[0]
        pipe = self._client.pipeline(transaction=False)  # both keys share the slot: fine on a cluster
        pipe.get(self.lease_key(sid))
        pipe.pttl(self.lease_key(sid))
        raw, pttl = pipe.execute()
        if raw is None or int(pttl) < 0:
            return None
        token, _, rest = _text(raw).partition(" ")
        generation, _, owner = rest.partition(" ")
        return Lease(sid, owner, time.time() + int(pttl) / 1000, int(generation or 0), token)

    def renew(self, lease: Lease, ttl: float) -> Lease | None:
        """Extend a held lease by ``ttl`` from now if it is still ours (compared in a script), else None."""
        lease, ttl = check_lease(lease), check_ttl(ttl)
        expires = time.time() + ttl
        done = self._client.eval(_RENEW, 1, self.lease_key(lease.session_id), self._value(lease),
                                 max(1, int(ttl * 1000)))
        return Lease(lease.session_id, lease.owner, expires, lease.generation, lease.token) if int(done) else None

    def release(self, lease: Lease) -> None:
        """Delete the lease if it is still ours (a taken lease is left to its new holder)."""
        lease = check_lease(lease)
        self._client.eval(_RELEASE, 1, self.lease_key(lease.session_id), self._value(lease))
