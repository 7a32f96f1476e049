"""What the Redis provider sends: its Lua scripts, and the operations a plan yields (no I/O).

All keys of a session share the hash tag ``{S}``, so each script runs on one slot, even on a
cluster. Scripts are sent by SHA (``EVALSHA``), falling back to ``EVAL`` once per server.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["CONNECT", "SCRIPTS", "Batch", "Call", "Keys", "Op", "Plan", "Script"]

T = TypeVar("T")

_SAVE = """
-- KEYS: ids, info, payload, generation [, session index]
-- ARGV: id, info line, payload value, nonce, parent id, parent signature, ttl ms, session id,
--       the generation the writer expects ('' for none)
-- Returns {status, the session's generation}. Nothing is written unless the status is ok or created.
local cid = ARGV[1]
local gen = redis.call('GET', KEYS[4]) or '0'
if ARGV[9] ~= '' and gen ~= ARGV[9] then return {'deleted', gen} end
local old = redis.call('HGET', KEYS[3], cid)
if old then
  if string.match(old, '^(%S+) ') == ARGV[4] then return {'replay', gen} end
  return {'conflict', gen}
end
if redis.call('HEXISTS', KEYS[2], cid) == 1 then return {'conflict', gen} end
if ARGV[5] ~= '' then
  local pinfo = redis.call('HGET', KEYS[2], ARGV[5])
  local ppay = redis.call('HGET', KEYS[3], ARGV[5])
  if not pinfo or not ppay then return {'noparent', gen} end
  if ARGV[6] ~= '' and redis.sha1hex(pinfo .. '\\n' .. ppay) ~= ARGV[6] then return {'stale', gen} end
end
local created = redis.call('EXISTS', KEYS[1]) == 0
redis.call('HSET', KEYS[2], cid, ARGV[2])
redis.call('HSET', KEYS[3], cid, ARGV[3])
redis.call('ZADD', KEYS[1], 0, cid)
if #KEYS >= 5 then redis.call('ZADD', KEYS[5], 0, ARGV[8]) end
local ttl = tonumber(ARGV[7])
if ttl > 0 then
  for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ttl) end
end
if created then return {'created', gen} end
return {'ok', gen}
"""

_LOAD = """
-- KEYS: ids, info, payload, generation; ARGV[1]: checkpoint id, or '' for the latest (greatest id)
-- Returns the session's generation (what was read belongs to it), then the ids, info lines and
-- payload values of the record and its bases, newest first, packed (see the end); each payload
-- value starts with "NONCE BASE ", so the walk reads the base pointer without JSON.
local gen = redis.call('GET', KEYS[4]) or '0'
local cid = ARGV[1]
if cid == '' then
  local last = redis.call('ZRANGE', KEYS[1], -1, -1)
  if #last == 0 then
    if redis.call('EXISTS', KEYS[2], KEYS[3]) > 0 then return {gen, 'damaged', 'no index'} end
    return {gen}
  end
  cid = last[1]
end
if redis.call('HEXISTS', KEYS[2], cid) == 0 and redis.call('HEXISTS', KEYS[3], cid) == 0 then
  if redis.call('ZSCORE', KEYS[1], cid) then return {gen, 'damaged', cid} end
  return {gen}
end
local ids, infos, payloads, seen = {}, {}, {}, {}
local cur = cid
while cur and not seen[cur] do
  seen[cur] = true
  local info = redis.call('HGET', KEYS[2], cur)
  local payload = redis.call('HGET', KEYS[3], cur)
  if not info and not payload then break end
  ids[#ids + 1] = cur
  infos[#ids] = info
  payloads[#ids] = payload
  cur = nil
  if payload then
    local base = string.match(payload, '^%S+ (%S+) ')
    if base ~= '-' then cur = base end
  end
end
if #ids == 0 then return {gen} end
-- Packed: three strings and the lengths, not 3 x N replies (the client parses 5 bulk strings, not 3,000).
local lens, ilist, plist = {}, {}, {}
for i = 1, #ids do
  local info, payload = infos[i], payloads[i]
  lens[i] = (info and #info or -1) .. ' ' .. (payload and #payload or -1)
  if info then ilist[#ilist + 1] = info end
  if payload then plist[#plist + 1] = payload end
end
return {gen, 'packed', table.concat(ids, ' '), table.concat(lens, ' '), table.concat(ilist),
  table.concat(plist)}
"""

_FETCH = """
-- KEYS: ids, info, payload; ARGV: checkpoint ids. Returns them and their bases, as _LOAD does.
local ids, infos, payloads, seen = {}, {}, {}, {}
local function add(id)
  if seen[id] then return nil end
  seen[id] = true
  ids[#ids + 1] = id
  infos[#ids] = redis.call('HGET', KEYS[2], id)
  payloads[#ids] = redis.call('HGET', KEYS[3], id)
  return payloads[#ids]
end
for _, id in ipairs(ARGV) do
  local payload = add(id)
  if payload then
    local base = string.match(payload, '^%S+ (%S+) ')
    if base and base ~= '-' then add(base) end
  end
end
return {ids, infos, payloads}
"""

_LIST = """
-- KEYS: ids, info; ARGV: before ('' for none), limit (-1 for all). Newest first.
local max = '+'
if ARGV[1] ~= '' then max = '(' .. ARGV[1] end
local ids
local limit = tonumber(ARGV[2])
if limit >= 0 then
  ids = redis.call('ZREVRANGEBYLEX', KEYS[1], max, '-', 'LIMIT', 0, limit)
else
  ids = redis.call('ZREVRANGEBYLEX', KEYS[1], max, '-')
end
local infos = {}
for i, id in ipairs(ids) do infos[i] = redis.call('HGET', KEYS[2], id) end
return {ids, infos}
"""

_IDS = """
-- KEYS: ids, info, payload. The session's ids; 'damaged' if records exist without their index.
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
if #ids == 0 and redis.call('EXISTS', KEYS[2], KEYS[3]) > 0 then return 'damaged' end
return ids
"""

_DELETE = """
-- KEYS: ids, info, payload, generation [, session index]; ARGV[1]: session id
-- The keys go and the generation advances at once: a save sees the old session or the new generation.
redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3])
local gen = redis.call('INCR', KEYS[4])
if #KEYS >= 5 then redis.call('ZREM', KEYS[5], ARGV[1]) end
return gen
"""

SCRIPTS: dict[str, tuple[str, str]] = {
    name: (hashlib.sha1(text.encode()).hexdigest(), text)  # noqa: S324 - Redis names scripts by SHA-1
    for name, text in (
        ("save", _SAVE), ("load", _LOAD), ("fetch", _FETCH), ("list", _LIST), ("ids", _IDS), ("delete", _DELETE)
    )
}


# -- operations: what to send, decided without I/O, run by a sync or an async driver ---------------
@dataclass(frozen=True)
class Script:
    """Run one of `SCRIPTS` (EVALSHA, falling back to EVAL once per server)."""

    name: str
    keys: tuple[str, ...]
    args: tuple[str | bytes | int, ...]
    what: str
    #: (replicas, timeout ms): also send WAIT on the same connection; the reply is then (reply, acked)
    wait: tuple[int, int] | None = None


@dataclass(frozen=True)
class Call:
    """One plain command."""

    args: tuple[str | bytes | int, ...]
    what: str


@dataclass(frozen=True)
class Batch:
    """Commands sent together in one pipeline (not a transaction; split by node on a cluster)."""

    calls: tuple[Call, ...]
    what: str


Op = Script | Call | Batch
Plan = Generator[Op, Any, T]
#: Yielded by a plan once its arguments are checked: connect (and learn cluster or not) now.
CONNECT = Call((), "connecting")


@dataclass(frozen=True)
class Keys:
    """The keys of one session; they share the hash tag ``{session}`` and so one cluster slot."""

    ids: str
    info: str
    payload: str
    #: the session's generation, advanced by each delete (no TTL: it outlives the session)
    gen: str

    @property
    def all(self) -> tuple[str, str, str]:
        return (self.ids, self.info, self.payload)

    @property
    def with_gen(self) -> tuple[str, str, str, str]:
        """The record keys and the generation counter (what the save, load and delete scripts name)."""
        return (*self.all, self.gen)
