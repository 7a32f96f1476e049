"""Checkpoints in Redis (single node or cluster), by concern: `options` (URL and options), `scripts`
(Lua and the operations plans yield), `plans` (each primitive, I/O-free), `client` (redis-py
clients, one body for sync and async, error translation), `formats` (bytes in Redis), `provider`."""

from __future__ import annotations

from .provider import RedisStorageProvider

__all__ = ["RedisStorageProvider"]
