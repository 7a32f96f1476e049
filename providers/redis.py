"""Checkpoints in Redis with core commands only: Redis, Valkey, ElastiCache, Memorystore, Redis Cluster.

Key layout (``P`` is the ``key_prefix``, ``S`` the session id, used as the hash tag)::

    P:{S}:ids       sorted set, all scores 0: the session's checkpoint ids in byte (= creation) order
    P:{S}:info      hash  id -> the record's info line (all that listing reads)
    P:{S}:payload   hash  id -> "NONCE BASE ENC\\n" + the record's payload line (new messages and state
                    deltas only; ENC is j for JSON or z for zlib). NONCE is the writer's token, BASE the
                    base pointer that the load script follows without parsing JSON.
    P:sessions      sorted set, all scores 0: the session index, for list_sessions

Records come from the shared sans-IO codec (`persistency._codec`): each stores only what is new since
its parent, so memory grows with the transcript and a save at step 1,000 costs what one at step 10
costs. All keys of a session share the hash tag ``{S}``, so each operation on a session is one Lua
script in one slot, even on a cluster:

- save: one round trip. Create-only check, parent check, record, index, TTL refresh, atomically.
  The parent's `Lineage` (what the encoder needs) is cached per process; the script checks it
  against the stored parent (a SHA-1 of its bytes) and the save is redone if another process
  deleted and re-created the session meanwhile.
- load (one id or the latest): one round trip. The script walks the base pointers server-side and
  returns every record of the chain; keyframe records outside the chain cost one more.
- listing: one round trip over ``info`` only (one more for a metadata keyframe outside the page);
  no message payload is read.

The session index cannot share every session's slot. On a single node it is named in the same
scripts, so it moves atomically with the session. On a cluster it is kept by a protocol that never
loses a session: the first save of a session adds the index entry before and after the record
(so a crash or a concurrent delete cannot leave a session unlisted), a delete removes the entry
after the keys and puts it back if a concurrent writer re-created the session, and
``list_sessions`` checks every entry against its session (entries of sessions whose TTL ran out
are pruned the same way). The index itself has no TTL.

Replication is asynchronous; ``min_replicas`` makes each save also ``WAIT`` (on the writing
connection, in the same pipeline) until that many replicas have it, so a failover cannot lose an
acknowledged checkpoint.

Redis errors are translated at this boundary: connection, timeout, auth and permission errors
become `StorageUnavailableError` naming the URL without its password; damaged bytes become
`CorruptCheckpointError` naming the key. Transient errors are retried by redis-py's own
``Retry(ExponentialBackoff(...))``; a retried save is recognised by its token, not taken for a conflict.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import re
import secrets
import threading
import weakref
import zlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.cluster
import redis.exceptions
from redis.backoff import ExponentialBackoff
from redis.connection import URL_QUERY_ARGUMENT_PARSERS, parse_url
from redis.exceptions import NoScriptError, RedisClusterException, RedisError, ResponseError
from redis.retry import Retry

from persistency._codec import (
    Lineage,
    Record,
    decode_info_line,
    decode_record,
    encode_record,
    info_from_raw,
    lineage_of,
    materialize,
)
from persistency._recordstore import _LRU
from persistency.errors import (
    CheckpointConflictError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    InvalidIdentifierError,
    PersistencyError,
    ProviderConfigError,
    StorageUnavailableError,
)
from persistency.ids import validate_id
from persistency.models import Checkpoint, CheckpointInfo
from persistency.provider import PersistencyStorageProvider

if TYPE_CHECKING:
    from persistency.encryption import PayloadCipher

__all__ = ["RedisStorageProvider"]

_T = TypeVar("_T")

DEFAULT_KEY_PREFIX = "persistency"
_PREFIX_RE = re.compile(r"[A-Za-z0-9._:@+=/|-]{1,200}")
_COMPRESS_MIN = 256
_MAX_TTL = 10 * 365 * 86400
_DEFAULTS: dict[str, Any] = {"socket_connect_timeout": 5.0, "socket_timeout": 10.0}


# -- options ----------------------------------------------------------------------------------------
def _parse_bool_or_auto(value: object) -> bool | None:
    """``cluster``: True, False, or None for auto-detect."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("auto", ""):
        return None
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true, false or auto, not {value!r}")


def _parse_ttl(value: object) -> float | None:
    """``ttl``: seconds (a number, text or timedelta); None, 0 or "none" for no expiry."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str) and value.strip().lower() in ("", "none", "0"):
        return None
    else:
        seconds = _parse_seconds(value)
    if not 0 <= seconds <= _MAX_TTL:
        raise ValueError(f"must be between 0 and {_MAX_TTL} seconds")
    return seconds or None


def _parse_prefix(value: object) -> str:
    """``key_prefix``: braces would break the hash tag, so they are refused."""
    text = str(value)
    if not _PREFIX_RE.fullmatch(text):
        raise ValueError("must be 1-200 characters of letters, digits and . _ : @ + = / | - (no braces)")
    return text


def _parse_compression(value: object) -> str:
    """``compression``: zlib or none."""
    text = str(value).strip().lower()
    if text in ("zlib", "true", "1", "yes", "on"):
        return "zlib"
    if text in ("none", "false", "0", "no", "off", ""):
        return "none"
    raise ValueError("expected zlib or none")


def _parse_int(value: object) -> int:
    """A non-negative count (retries, cache size)."""
    n: int = int(value)  # type: ignore[call-overload]
    if not 0 <= n <= 10_000_000:
        raise ValueError("must be between 0 and 10,000,000")
    return n


def _parse_seconds(value: object) -> float:
    """A finite, non-negative number of seconds."""
    x = float(value)  # type: ignore[arg-type]
    if not math.isfinite(x) or x < 0:
        raise ValueError("must be a finite number >= 0")
    return x


#: The provider's own options, as URL query parameters or keyword arguments (the keyword wins).
_OPTIONS: dict[str, Callable[[Any], Any]] = {
    "key_prefix": _parse_prefix,
    "ttl": _parse_ttl,
    "cluster": _parse_bool_or_auto,
    "retries": _parse_int,
    "retry_backoff_base": _parse_seconds,
    "retry_backoff_cap": _parse_seconds,
    "cache_size": _parse_int,
    "compression": _parse_compression,
    "min_replicas": _parse_int,
    "replica_timeout": _parse_seconds,
}
_OPTION_DEFAULTS: dict[str, Any] = {
    "key_prefix": DEFAULT_KEY_PREFIX,
    "ttl": None,
    "cluster": None,
    "retries": 3,
    "retry_backoff_base": 0.05,
    "retry_backoff_cap": 1.0,
    "cache_size": 512,
    "compression": "zlib",
    "min_replicas": 0,
    "replica_timeout": 1.0,
}
#: Query parameters redis-py itself understands besides its parser table.
_REDIS_QUERY_EXTRA = frozenset({"username", "password", "client_name", "ssl_cert_reqs", "ssl_ca_certs",
                                "ssl_certfile", "ssl_keyfile", "ssl_ca_path", "ssl_password"})


#: Query options whose values are shown in messages; every other value (password, a typo of it,
#: anything unknown) is masked, so no spelling of a secret reaches a message or a repr.
_SHOWN_QUERY = frozenset({
    "key_prefix", "ttl", "cluster", "retries", "retry_backoff_base", "retry_backoff_cap", "cache_size",
    "compression", "min_replicas", "replica_timeout", "db", "socket_timeout", "socket_connect_timeout",
    "socket_keepalive", "max_connections", "health_check_interval", "protocol", "ssl_check_hostname",
    "ssl_cert_reqs", "client_name", "timeout", "retry_on_timeout",
})


def _redact(url: str) -> tuple[str, list[str]]:
    """The URL safe to show, and the secret-looking pieces it left out (to scrub from other text).

    Works on the raw text, not on urlsplit: a password holding an unencoded ``/``, ``?`` or ``#``
    moves urlsplit's idea of where the host starts. Everything before the last ``@`` is user
    information (only a plain user name is kept), a fragment is dropped, and query values are
    shown only for `_SHOWN_QUERY` options.
    """
    hidden: list[str] = []
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "<not a URL>", [url]
    user = ""
    if "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
        name, colon, secret = userinfo.partition(":")
        if colon and not any(c in name for c in "/?#"):
            user, hidden = f"{name}:****@", [secret]
        else:
            user, hidden = "****@", [userinfo]
    rest, hash_, fragment = rest.partition("#")
    if hash_:
        hidden.append(fragment)
    base, q, query = rest.partition("?")
    shown_query = []
    for pair in query.split("&") if q else []:
        name, eq, value = pair.partition("=")
        if value and name not in _SHOWN_QUERY:
            hidden.append(value)
            value = "****"
        shown_query.append(f"{name}{eq}{value}")
    shown = f"{scheme}://{user}{base}" + (f"?{'&'.join(shown_query)}" if q else "") + ("#****" if hash_ else "")
    return shown, sorted({h for h in hidden if h}, key=len, reverse=True)


def _scrubber(secrets: list[str]) -> Callable[[str], str]:
    """A function masking every one of ``secrets`` in a text: whole, URL-decoded, and each piece
    between URL delimiters (a parser's error may quote just the part it choked on)."""
    pieces = {p for s in secrets for p in re.split(r"[/?#@&=:;]", s) if len(p) >= 3}
    forms = sorted({f for s in {*secrets, *pieces} for f in (s, unquote(s)) if f}, key=len, reverse=True)

    def scrub(text: str) -> str:
        for form in forms:
            text = text.replace(form, "****")
        return text

    return scrub


@dataclass(frozen=True)
class _Config:
    """A parsed URL plus options: what the provider needs, and what redis-py gets."""

    display_url: str
    client_url: str
    redis_options: dict[str, Any]
    settings: dict[str, Any]
    scrub: Callable[[str], str]


def _parse_config(url: str, options: dict[str, Any]) -> _Config:
    """Split ``url`` and keyword ``options`` into the provider's settings and redis-py's (no I/O).

    The keyword wins over the URL. redis-py lets the URL win, so whatever a keyword overrides is
    taken out of the URL that redis-py sees. Raises `ProviderConfigError` naming the bad option.
    """
    shown, hidden = _redact(url)
    secret_values = [str(options[k]) for k in ("password",) if options.get(k)]
    scrub = _scrubber(hidden + secret_values)
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        username, password, _ = parts.username, parts.password, parts.port
    except ValueError as exc:
        raise ProviderConfigError(f"malformed Redis URL {shown!r}: {scrub(str(exc))}") from exc
    options = dict(options)
    ours = dict(q for q in query if q[0] in _OPTIONS)
    settings: dict[str, Any] = {}
    for name, parser in _OPTIONS.items():
        raw = options.pop(name) if name in options else ours.get(name, _OPTION_DEFAULTS[name])
        try:
            settings[name] = parser(raw) if raw is not None else None
        except (TypeError, ValueError) as exc:
            raise ProviderConfigError(scrub(f"Redis option {name}={raw!r} in {shown!r}: {exc}")) from exc
    if any(k == "encryption_key" for k, _ in query):
        raise ProviderConfigError(
            f"{shown!r}: never put encryption_key in a URL; pass it as a keyword or set PERSISTENCY_ENCRYPTION_KEY"
        )
    unknown = sorted({k for k, _ in query} - set(_OPTIONS) - set(URL_QUERY_ARGUMENT_PARSERS) - _REDIS_QUERY_EXTRA)
    if unknown:
        raise ProviderConfigError(
            f"unknown option(s) {', '.join(unknown)} in {shown!r}; the provider's options are "
            f"{', '.join(_OPTIONS)}, and redis-py's are {', '.join(sorted(URL_QUERY_ARGUMENT_PARSERS))}"
        )
    redis_options = options
    netloc = parts.netloc
    if {"username", "password"} & set(redis_options) and "@" in netloc:
        # A keyword credential overrides the URL's: move both out of the URL, keyword first.
        if username and "username" not in redis_options:
            redis_options["username"] = unquote(username)
        if password and "password" not in redis_options:
            redis_options["password"] = unquote(password)
        netloc = netloc.rsplit("@", 1)[1]
    path = "" if "db" in redis_options and parts.scheme != "unix" else parts.path
    rest = urlencode([(k, v) for k, v in query if k not in _OPTIONS and k not in redis_options], quote_via=quote)
    # Joined by hand: urlunsplit drops the "//" of "unix:///path" (an empty host).
    client_url = f"{parts.scheme}://{netloc}{path}" + (f"?{rest}" if rest else "")
    try:
        url_kwargs: dict[str, Any] = parse_url(client_url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise ProviderConfigError(f"malformed Redis URL {shown!r}: {scrub(str(exc))}") from exc
    for name, value in _DEFAULTS.items():
        if name not in url_kwargs and name not in redis_options:
            redis_options[name] = value
    redis_options["decode_responses"] = False  # records are bytes; the codec decodes them
    if settings["cluster"] and "path" in url_kwargs:
        raise ProviderConfigError(f"{shown!r}: Redis Cluster cannot be reached over a unix socket")
    if settings["cluster"] and (redis_options.get("db") or url_kwargs.get("db") or 0) != 0:
        raise ProviderConfigError(f"{shown!r}: Redis Cluster has only database 0")
    secrets = [str(redis_options.get("password") or ""), str(url_kwargs.get("password") or "")]
    return _Config(shown, client_url, redis_options, settings, _scrubber(hidden + secrets))


# -- Lua scripts (all keys of one session: one slot) ------------------------------------------------
_SAVE = """
-- KEYS: ids, info, payload [, session index]
-- ARGV: id, info line, payload value, nonce, parent id, parent signature, ttl ms, session id
local cid = ARGV[1]
local old = redis.call('HGET', KEYS[3], cid)
if old then
  if string.match(old, '^(%S+) ') == ARGV[4] then return 'replay' end
  return 'conflict'
end
if redis.call('HEXISTS', KEYS[2], cid) == 1 then return 'conflict' end
if ARGV[5] ~= '' then
  local pinfo = redis.call('HGET', KEYS[2], ARGV[5])
  local ppay = redis.call('HGET', KEYS[3], ARGV[5])
  if not pinfo or not ppay then return 'noparent' end
  if ARGV[6] ~= '' and redis.sha1hex(pinfo .. '\\n' .. ppay) ~= ARGV[6] then return 'stale' end
end
local created = redis.call('EXISTS', KEYS[1]) == 0
redis.call('HSET', KEYS[2], cid, ARGV[2])
redis.call('HSET', KEYS[3], cid, ARGV[3])
redis.call('ZADD', KEYS[1], 0, cid)
if #KEYS >= 4 then redis.call('ZADD', KEYS[4], 0, ARGV[8]) end
local ttl = tonumber(ARGV[7])
if ttl > 0 then
  for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ttl) end
end
if created then return 'created' end
return 'ok'
"""

_LOAD = """
-- KEYS: ids, info, payload; ARGV[1]: checkpoint id, or '' for the latest (greatest id)
-- Returns {ids, info lines, payload values} of the record and its bases, newest first: each
-- payload value starts with "NONCE BASE ", so the walk reads the base pointer without JSON.
local cid = ARGV[1]
if cid == '' then
  local last = redis.call('ZRANGE', KEYS[1], -1, -1)
  if #last == 0 then return {} end
  cid = last[1]
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
if #ids == 0 then return {} end
return {ids, infos, payloads}
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

_DELETE = """
-- KEYS: ids, info, payload [, session index]; ARGV[1]: session id
redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3])
if #KEYS >= 4 then redis.call('ZREM', KEYS[4], ARGV[1]) end
return 1
"""

_SCRIPTS: dict[str, tuple[str, str]] = {
    name: (hashlib.sha1(text.encode()).hexdigest(), text)  # noqa: S324 - Redis names scripts by SHA-1
    for name, text in (("save", _SAVE), ("load", _LOAD), ("fetch", _FETCH), ("list", _LIST), ("delete", _DELETE))
}


# -- operations: what to send, decided without I/O, run by a sync or an async driver ---------------
@dataclass(frozen=True)
class _Script:
    """Run one of `_SCRIPTS` (EVALSHA, falling back to EVAL once per server)."""

    name: str
    keys: tuple[str, ...]
    args: tuple[str | bytes | int, ...]
    what: str
    #: (replicas, timeout ms): also send WAIT on the same connection; the reply is then (reply, acked)
    wait: tuple[int, int] | None = None


@dataclass(frozen=True)
class _Call:
    """One plain command."""

    args: tuple[str | bytes | int, ...]
    what: str


@dataclass(frozen=True)
class _Batch:
    """Commands sent together in one pipeline (not a transaction; split by node on a cluster)."""

    calls: tuple[_Call, ...]
    what: str


_Op = _Script | _Call | _Batch
_Plan = Generator[_Op, Any, _T]
#: Yielded by a plan once its arguments are checked: connect (and learn cluster or not) now.
_CONNECT = _Call((), "connecting")


@dataclass(frozen=True)
class _Keys:
    """The keys of one session; they share the hash tag ``{session}`` and so one cluster slot."""

    ids: str
    info: str
    payload: str

    @property
    def all(self) -> tuple[str, str, str]:
        return (self.ids, self.info, self.payload)


class _Missing(Exception):
    """Internal: the codec asked for a record the plan has not fetched yet."""

    def __init__(self, checkpoint_id: str) -> None:
        super().__init__(checkpoint_id)
        self.checkpoint_id = checkpoint_id


def _text(value: bytes | str) -> str:
    """A reply item as text (ids are ASCII; anything else is shown, not trusted)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _signature(info_line: bytes, payload_line: bytes) -> str:
    """What the save script compares against the stored parent (``redis.sha1hex`` of its lines)."""
    return hashlib.sha1(info_line + b"\n" + payload_line).hexdigest()  # noqa: S324 - identity, not security


def _refs(record: Record) -> list[str]:
    """Keyframe records the head of a load needs besides its base chain."""
    return [str(d["ref"]) for d in record.deltas.values() if "ref" in d]


# -- the provider -----------------------------------------------------------------------------------
class RedisStorageProvider(PersistencyStorageProvider):
    """Stores checkpoints in Redis (single node or cluster) with core commands and Lua scripts only.

    Args:
        url: a redis-py URL: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS)
            or ``unix:///path/to/socket[?db=N]``, with redis-py's own query options
            (``socket_timeout``, ``ssl_ca_certs``, ...) and the provider's options below.
        key_prefix: prefix of every key (default ``persistency``); no braces.
        ttl: seconds; every key of a session expires this long after its last save (None: never).
        cluster: True for Redis Cluster, False for a single endpoint, None (``auto``) to ask the
            server (``INFO cluster``) on first use.
        retries, retry_backoff_base, retry_backoff_cap: redis-py's ``Retry(ExponentialBackoff(cap,
            base), retries)`` for connection errors and timeouts.
        cache_size: how many parent lineages to keep, so that a save needs no read.
        compression: ``zlib`` (default) compresses payloads over 256 bytes; ``none`` stores plain JSON.
        min_replicas, replica_timeout: after each save, ``WAIT`` (same round trip on a single node)
            until this many replicas have it, up to ``replica_timeout`` seconds (default 1); fewer
            raise `StorageUnavailableError` saying the checkpoint is on the primary only. 0: no wait.
        encryption_key: seal payloads with AES-256-GCM (`persistency.encryption`); listing works
            without it. Keyword (or ``PERSISTENCY_ENCRYPTION_KEY``) only, never in the URL.
        **redis_options: passed to the redis-py client (``password``, ``socket_timeout``,
            ``ssl_ca_certs``, ...). Timeouts default to 5 s to connect and 10 s per command.

    Each option may be given as a keyword argument or a URL query parameter
    (``redis://host/0?key_prefix=app&ttl=86400``); where both are given, the keyword wins.
    """

    schemes = ("redis", "rediss", "unix")

    def __init__(self, url: str, *, encryption_key: str | bytes | None = None, **options: Any) -> None:
        config = _parse_config(url, options)
        self._cipher: PayloadCipher | None = None
        if encryption_key is not None:
            from persistency.encryption import PayloadCipher

            self._cipher = PayloadCipher(encryption_key)
        self.url = config.display_url
        self.key_prefix: str = config.settings["key_prefix"]
        self.ttl: float | None = config.settings["ttl"]
        self._ttl_ms = int(self.ttl * 1000) if self.ttl else 0
        self._client_url = config.client_url
        self._redis_options = config.redis_options
        self._scrub = config.scrub
        self._retries: int = config.settings["retries"]
        self._backoff = ExponentialBackoff(cap=config.settings["retry_backoff_cap"],
                                           base=config.settings["retry_backoff_base"])
        self._cluster: bool | None = config.settings["cluster"]
        self._compress = config.settings["compression"] == "zlib"
        replicas: int = config.settings["min_replicas"]
        self._wait = (replicas, int(config.settings["replica_timeout"] * 1000)) if replicas else None
        self._index_key = f"{self.key_prefix}:sessions"
        self._lineages = _LRU(max(1, config.settings["cache_size"]))
        self._lock = threading.Lock()
        self._sync: Any = None
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._check_options()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisStorageProvider:
        """Build from a Redis URL; keyword ``options`` win over the URL's query parameters."""
        return cls(url, **options)

    def __repr__(self) -> str:
        return f"RedisStorageProvider({self.url!r}, key_prefix={self.key_prefix!r})"

    def _check_options(self) -> None:
        """Refuse options redis-py does not know now, not at the first command."""
        try:
            probe = redis.Redis.from_url(self._client_url, **self._redis_options)
            probe.connection_pool.make_connection()
        except (TypeError, ValueError, RedisError) as exc:
            raise ProviderConfigError(f"bad Redis options for {self.url!r}: {self._scrub(str(exc))}") from exc

    # -- keys and names --------------------------------------------------------------------------------
    def _keys(self, session_id: str) -> _Keys:
        """The session's keys: ``PREFIX:{SESSION}:...``, one hash tag, one slot."""
        base = f"{self.key_prefix}:{{{session_id}}}"
        return _Keys(f"{base}:ids", f"{base}:info", f"{base}:payload")

    def _where(self, keys: _Keys, checkpoint_id: str) -> str:
        """Where a record lives, for error messages (URL without password, keys, field)."""
        return f"{self.url} keys {keys.info!r}/{keys.payload!r} field {checkpoint_id!r}"

    def _session_keys(self, keys: _Keys) -> tuple[str, ...]:
        """The keys a session script names: the index too on a single node, where it is atomic."""
        return keys.all if self._cluster else (*keys.all, self._index_key)

    # -- clients ---------------------------------------------------------------------------------------
    def _client_kwargs(self, *, is_async: bool) -> dict[str, Any]:
        retry_cls = redis.asyncio.retry.Retry if is_async else Retry
        # retry_on_error too: redis-py 5 retries only the errors it names (6+ retries these by default).
        return {"retry_on_error": [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
                **self._redis_options, "retry": retry_cls(self._backoff, self._retries)}

    @staticmethod
    def _cluster_enabled(info: dict[str, Any]) -> bool:
        """True if an ``INFO cluster`` reply says the server runs in cluster mode."""
        return str(info.get("cluster_enabled", "0")) == "1"

    def _client(self) -> Any:
        """The sync client, created on first use (asking the server whether it is a cluster)."""
        client = self._sync
        if client is not None:
            return client
        with self._lock:
            if self._sync is None:
                with self._translate("connecting"):
                    if self._cluster is None:
                        with redis.Redis.from_url(self._client_url, **self._client_kwargs(is_async=False)) as probe:
                            self._cluster = self._cluster_enabled(self._probe_info(probe.info, "cluster"))
                    kwargs = self._client_kwargs(is_async=False)
                    if self._cluster:
                        client = redis.cluster.RedisCluster.from_url(self._client_url, **kwargs)
                    else:
                        client = redis.Redis.from_url(self._client_url, **kwargs)
                    for _sha, text in _SCRIPTS.values():
                        with contextlib.suppress(ResponseError):  # SCRIPT may be refused; EVAL still works
                            client.script_load(text)
                    self._sync = client
            return self._sync

    @staticmethod
    def _probe_info(info: Callable[[str], Any], section: str) -> dict[str, Any]:
        """``INFO section`` as a dict; empty when the server refuses INFO."""
        try:
            return dict(info(section))
        except ResponseError:  # INFO not allowed (managed services may restrict it): not a cluster
            return {}

    async def _aclient(self) -> Any:
        """This event loop's redis.asyncio client, created on first use (async clients are per loop)."""
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is not None:
            return client
        with self._translate("connecting"):
            if self._cluster is None:
                probe = redis.asyncio.Redis.from_url(self._client_url, **self._client_kwargs(is_async=True))
                try:
                    try:
                        info = dict(await probe.info("cluster"))
                    except ResponseError:
                        info = {}
                    self._cluster = self._cluster_enabled(info)
                finally:
                    await probe.aclose()
            kwargs = self._client_kwargs(is_async=True)
            if self._cluster:
                client = redis.asyncio.cluster.RedisCluster.from_url(self._client_url, **kwargs)
                await client.initialize()
            else:
                client = redis.asyncio.Redis.from_url(self._client_url, **kwargs)
            for _sha, text in _SCRIPTS.values():
                with contextlib.suppress(ResponseError):
                    await client.script_load(text)
        existing = self._async.get(loop)
        if existing is not None:  # another task of this loop connected meanwhile: keep one client
            with contextlib.suppress(Exception):
                await client.aclose()
            return existing
        self._async[loop] = client
        return client

    def close(self) -> None:
        """Close the connections (idempotent). Async clients are closed by `aclose`."""
        with self._lock:
            client, self._sync = self._sync, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        self._async = weakref.WeakKeyDictionary()

    async def aclose(self) -> None:
        """Close the connections of this event loop's async client, and the sync ones."""
        with contextlib.suppress(RuntimeError):
            client = self._async.pop(asyncio.get_running_loop(), None)
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
        self.close()

    # -- drivers: run a plan's operations, sync or async ----------------------------------------------
    @contextlib.contextmanager
    def _translate(self, what: str, keys: tuple[str, ...] = ()) -> Iterator[None]:
        """Turn redis-py errors into this library's, naming the URL (never the password)."""
        try:
            yield
        except PersistencyError:
            raise
        except ResponseError as exc:
            msg = self._scrub(str(exc))
            if "WRONGTYPE" in msg:
                raise CorruptCheckpointError(
                    f"{self.url}: {what}: key(s) {', '.join(keys)} hold a value of the wrong type ({msg})"
                ) from exc
            kind = type(exc).__name__
            raise StorageUnavailableError(f"Redis at {self.url} refused {what}: {kind}: {msg}") from exc
        except (RedisError, RedisClusterException, OSError) as exc:
            kind = type(exc).__name__
            raise StorageUnavailableError(
                f"Redis at {self.url} unavailable while {what}: {kind}: {self._scrub(str(exc))}"
            ) from exc

    def _run(self, plan: _Plan[_T]) -> _T:
        """Drive ``plan`` on the sync client: send each operation, feed back its reply."""
        reply: Any = None
        while True:
            try:
                op = plan.send(reply)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            reply = self._execute(self._client(), op)

    async def _arun(self, plan: _Plan[_T]) -> _T:
        """Drive ``plan`` on this event loop's redis.asyncio client."""
        reply: Any = None
        while True:
            try:
                op = plan.send(reply)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            reply = await self._aexecute(await self._aclient(), op)

    def _execute(self, client: Any, op: _Op) -> Any:
        """One operation on the sync client (EVALSHA, falling back to EVAL; a pipeline for a batch)."""
        if op is _CONNECT:
            return None
        with self._translate(op.what, op.keys if isinstance(op, _Script) else ()):
            if isinstance(op, _Script) and op.wait:
                for pipe in self._script_and_wait(client, op):
                    replies = pipe.execute(raise_on_error=False)
                    if not isinstance(replies[0], NoScriptError):
                        return self._waited(replies)
            if isinstance(op, _Script):
                sha, text = _SCRIPTS[op.name]
                try:
                    return client.execute_command("EVALSHA", sha, len(op.keys), *op.keys, *op.args)
                except NoScriptError:
                    return client.execute_command("EVAL", text, len(op.keys), *op.keys, *op.args)
            if isinstance(op, _Call):
                return client.execute_command(*op.args)
            pipe = client.pipeline(transaction=False)
            for call in op.calls:
                pipe.execute_command(*call.args)
            return pipe.execute()

    async def _aexecute(self, client: Any, op: _Op) -> Any:
        """`_execute` on a redis.asyncio client."""
        if op is _CONNECT:
            return None
        with self._translate(op.what, op.keys if isinstance(op, _Script) else ()):
            if isinstance(op, _Script) and op.wait:
                for pipe in self._script_and_wait(client, op):
                    replies = await pipe.execute(raise_on_error=False)
                    if not isinstance(replies[0], NoScriptError):
                        return self._waited(replies)
            if isinstance(op, _Script):
                sha, text = _SCRIPTS[op.name]
                try:
                    return await client.execute_command("EVALSHA", sha, len(op.keys), *op.keys, *op.args)
                except NoScriptError:
                    return await client.execute_command("EVAL", text, len(op.keys), *op.keys, *op.args)
            if isinstance(op, _Call):
                return await client.execute_command(*op.args)
            pipe = client.pipeline(transaction=False)
            for call in op.calls:
                pipe.execute_command(*call.args)
            return await pipe.execute()

    def _script_and_wait(self, client: Any, op: _Script) -> Iterator[Any]:
        """Pipelines of the script then ``WAIT``, on one connection to the key's primary (EVALSHA, then EVAL).

        ``WAIT`` counts the replicas that have the writes of *its own* connection, so it must follow
        the script on the same one: a pipeline, addressed to the slot's node on a cluster.
        """
        assert op.wait is not None
        sha, text = _SCRIPTS[op.name]
        target = {"target_nodes": client.get_node_from_key(op.keys[0])} if self._cluster else {}
        for command, script in (("EVALSHA", sha), ("EVAL", text)):
            pipe = client.pipeline(transaction=False)
            pipe.execute_command(command, script, len(op.keys), *op.keys, *op.args)
            pipe.execute_command("WAIT", *op.wait, **target)
            yield pipe

    @staticmethod
    def _waited(replies: list[Any]) -> tuple[Any, int]:
        """(script reply, replicas that acknowledged) from a script-and-WAIT pipeline; errors raised."""
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies[0], int(replies[1])

    # -- decoding replies (no I/O) ------------------------------------------------------------------------
    def _decode_rows(self, keys: _Keys, sid: str, reply: Any) -> tuple[dict[str, Record], dict[str, str]]:
        """Records (and their signatures) from a load/fetch reply ``{ids, infos, payloads}``."""
        records: dict[str, Record] = {}
        sigs: dict[str, str] = {}
        if not reply:
            return records, sigs
        ids, infos, payloads = reply
        for raw_id, info, payload in zip(ids, infos, payloads, strict=True):
            cid = _text(raw_id)
            where = self._where(keys, cid)
            if info is None and payload is None:
                continue
            if info is None or payload is None:
                part = "info" if info is None else "payload"
                raise CorruptCheckpointError(f"{where}: the record's {part} is missing")
            rec = decode_record(info + b"\n" + self._unpack_payload(payload, where), where, self._cipher)
            if rec.info.get("checkpoint_id") != cid or rec.info.get("session_id") != sid:
                raise CorruptCheckpointError(
                    f"{where}: holds checkpoint {rec.info.get('checkpoint_id')!r} of session "
                    f"{rec.info.get('session_id')!r}, not {cid!r} of {sid!r}"
                )
            records[cid] = rec
            sigs[cid] = _signature(info, payload)
        return records, sigs

    def _pack_payload(self, nonce: str, base: str | None, body: bytes) -> bytes:
        """``NONCE BASE ENCODING\\n`` then the payload line, zlib-compressed when that is smaller."""
        encoding = b"j"
        if self._compress and len(body) > _COMPRESS_MIN:
            packed = zlib.compress(body, 1)
            if len(packed) < len(body):
                body, encoding = packed, b"z"
        return f"{nonce} {base or '-'} ".encode() + encoding + b"\n" + body

    @staticmethod
    def _unpack_payload(value: bytes, where: str) -> bytes:
        """The payload line of a stored payload value (`_pack_payload` undone)."""
        header, sep, body = value.partition(b"\n")
        parts = header.split(b" ")
        if not sep or len(parts) != 3:
            raise CorruptCheckpointError(f"{where}: the payload's header is damaged")
        if parts[2] == b"z":
            try:
                return zlib.decompress(body)
            except zlib.error as exc:
                raise CorruptCheckpointError(f"{where}: the compressed payload is damaged ({exc})") from exc
        if parts[2] != b"j":
            raise CorruptCheckpointError(f"{where}: unknown payload encoding {parts[2]!r}")
        return body

    def _referenced_id(self, keys: _Keys, cid: str) -> str:
        """A checkpoint id found inside stored bytes: a bad one means the bytes are damaged."""
        try:
            return validate_id(cid, "referenced checkpoint id")
        except InvalidIdentifierError as exc:
            raise CorruptCheckpointError(f"{self.url} keys {keys.info!r}/{keys.payload!r}: {exc}") from exc

    def _fetch_op(self, keys: _Keys, ids: list[str], what: str) -> _Script:
        """The script that reads ``ids`` and their bases in one round trip."""
        return _Script("fetch", keys.all, tuple(ids), what)

    def _resolve(self, keys: _Keys, sid: str, records: dict[str, Record],
                 fn: Callable[[Callable[[str], Record]], _T]) -> _Plan[_T]:
        """Run codec ``fn`` over ``records``, fetching (one round trip each) any record it lacks."""

        def lookup(cid: str) -> Record:
            if cid not in records:
                raise _Missing(cid)
            return records[cid]

        while True:
            try:
                return fn(lookup)
            except _Missing as miss:
                cid = self._referenced_id(keys, miss.checkpoint_id)
                reply = yield self._fetch_op(keys, [cid], f"reading checkpoint {cid!r} of session {sid!r}")
                got, _ = self._decode_rows(keys, sid, reply)
                if cid not in got:
                    raise CorruptCheckpointError(
                        f"{self._where(keys, cid)}: missing, but another checkpoint of the session refers to it"
                    ) from None
                records.update(got)

    # -- plans: the contract's logic, written once for both drivers ----------------------------------------
    def _load_plan(self, sid: str, cid: str | None) -> _Plan[Checkpoint | None]:
        """Load ``cid`` (or the latest): one script for the chain, one more for keyframes outside it."""
        keys = self._keys(sid)
        what = f"loading {'the latest checkpoint' if cid is None else repr(cid)} of session {sid!r}"
        reply = yield _Script("load", keys.all, (cid or "",), what)
        if not reply:
            return None
        head_id = _text(reply[0][0])
        records, sigs = self._decode_rows(keys, sid, reply)
        head = records[head_id]
        yield from self._fetch_refs(keys, sid, head, records, what)
        checkpoint = yield from self._resolve(keys, sid, records, lambda fetch: materialize(head, fetch))
        # A worker that resumes loads the latest checkpoint and then saves its child: keep what that
        # save needs (from records already here, no I/O), so the first save after a resume is one trip.
        lineage = yield from self._resolve(keys, sid, records, lambda fetch: lineage_of(head, fetch))
        self._lineages.put((sid, head_id), (lineage, sigs[head_id]))
        return checkpoint

    def _fetch_refs(self, keys: _Keys, sid: str, record: Record, records: dict[str, Record], what: str) -> _Plan[None]:
        """Add to ``records`` the keyframes ``record`` refers to that are not there yet (one trip, if any)."""
        missing = [self._referenced_id(keys, r) for r in _refs(record) if r not in records]
        if missing:
            got, _ = self._decode_rows(keys, sid, (yield self._fetch_op(keys, missing, what)))
            records.update(got)

    def _lineage_plan(self, sid: str, keys: _Keys, pid: str, cid: str, *, cached: bool) -> _Plan[tuple[Lineage, str]]:
        """What the encoder needs of the parent, and its signature; from the cache when allowed."""
        hit: tuple[Lineage, str] | None = self._lineages.get((sid, pid)) if cached else None
        if hit is not None:
            return hit
        what = f"reading parent {pid!r} of checkpoint {cid!r} in session {sid!r}"
        records, sigs = self._decode_rows(keys, sid, (yield self._fetch_op(keys, [pid], what)))
        if pid not in records:
            raise CheckpointNotFoundError(f"checkpoint {cid!r} names parent {pid!r}, which is not in session {sid!r}")
        parent = records[pid]
        yield from self._fetch_refs(keys, sid, parent, records, what)
        lineage = yield from self._resolve(keys, sid, records, lambda fetch: lineage_of(parent, fetch))
        result = (lineage, sigs[pid])
        self._lineages.put((sid, pid), result)
        return result

    def _save_plan(self, checkpoint: Checkpoint) -> _Plan[None]:
        """Encode against the parent's lineage and write create-only; redo once if the parent changed."""
        sid = validate_id(checkpoint.session_id, "session_id")
        cid = validate_id(checkpoint.checkpoint_id, "checkpoint_id")
        pid = None if checkpoint.parent_id is None else validate_id(checkpoint.parent_id, "parent_id")
        keys = self._keys(sid)
        yield _CONNECT
        nonce = secrets.token_hex(8)
        what = f"saving checkpoint {cid!r} of session {sid!r}"
        status = ""
        for attempt in range(3):
            parent, sig = (None, "")
            if pid is not None:
                parent, sig = yield from self._lineage_plan(sid, keys, pid, cid, cached=attempt == 0)
            data, lineage = encode_record(checkpoint, parent, self._cipher)
            info_line, _, rest = data.partition(b"\n")
            base = decode_record(data, f"checkpoint {cid!r} being saved", self._cipher).base
            payload = self._pack_payload(nonce, base, rest.rstrip(b"\n"))
            if self._cluster and pid is None:
                # The index entry goes first, so a crash after the record cannot leave it unlisted.
                yield _Call(("ZADD", self._index_key, 0, sid), f"indexing session {sid!r}")
            reply = yield _Script(
                "save", self._session_keys(keys),
                (cid, info_line, payload, nonce, pid or "", sig, self._ttl_ms, sid),
                what, self._wait,
            )
            status, acked = (_text(reply[0]), int(reply[1])) if self._wait else (_text(reply), 0)
            if status != "stale":
                break
            self._lineages.drop_session(sid)  # the session was re-created under us: re-read the parent
        if status == "conflict":
            raise CheckpointConflictError(f"checkpoint {cid!r} already exists in session {sid!r}")
        if status == "noparent":
            self._lineages.drop_session(sid)
            raise CheckpointNotFoundError(f"checkpoint {cid!r} names parent {pid!r}, which is not in session {sid!r}")
        if status == "stale":
            raise CheckpointConflictError(
                f"checkpoint {cid!r}: its parent {pid!r} in session {sid!r} kept changing while saving "
                "(the session is being deleted and re-created concurrently)"
            )
        if status not in ("ok", "created", "replay"):
            raise StorageUnavailableError(f"Redis at {self.url}: unexpected reply {status!r} while {what}")
        if self._cluster and pid is None and status in ("created", "replay"):
            # Again after the record: a delete racing the first save may have removed the entry.
            yield _Call(("ZADD", self._index_key, 0, sid), f"indexing session {sid!r}")
        self._lineages.put((sid, cid), (lineage, _signature(info_line, payload)))
        if self._wait and acked < self._wait[0]:
            raise StorageUnavailableError(
                f"Redis at {self.url}: checkpoint {cid!r} of session {sid!r} was written on the primary, but "
                f"only {acked} of {self._wait[0]} replicas confirmed it within {self._wait[1]} ms; it could be "
                "lost if the primary fails before it replicates"
            )

    def _get_plan(self, session_id: str, checkpoint_id: str) -> _Plan[Checkpoint]:
        """`get_checkpoint` as a plan."""
        sid = validate_id(session_id, "session_id")
        cid = validate_id(checkpoint_id, "checkpoint_id")
        cp = yield from self._load_plan(sid, cid)
        if cp is None:
            raise CheckpointNotFoundError(f"no checkpoint {cid!r} in session {sid!r}")
        return cp

    def _latest_plan(self, session_id: str) -> _Plan[Checkpoint | None]:
        """`get_latest_checkpoint` as a plan."""
        sid = validate_id(session_id, "session_id")
        return (yield from self._load_plan(sid, None))

    def _list_plan(self, session_id: str, run_id: str | None, limit: int | None,
                   before: str | None) -> _Plan[list[CheckpointInfo]]:
        """Infos newest first from one script over ``info``; metadata keyframes outside the page cost one more."""
        sid = validate_id(session_id, "session_id")
        if before is not None:
            validate_id(before, "before")
        if run_id is not None:
            validate_id(run_id, "run_id")
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0")
        if limit == 0:
            return []
        keys = self._keys(sid)
        what = f"listing session {sid!r}"
        fetch_limit = limit if limit is not None and run_id is None else -1
        ids, lines = yield _Script("list", (keys.ids, keys.info), (before or "", fetch_limit), what)
        raws: dict[str, dict[str, Any]] = {}
        selected: list[str] = []
        for raw_id, line in zip(ids, lines, strict=True):
            cid = _text(raw_id)
            raws[cid] = self._raw_info(keys, sid, cid, line)
            if run_id is not None and raws[cid].get("run_id") != run_id:
                continue
            selected.append(cid)
            if limit is not None and len(selected) >= limit:
                break
        missing = sorted({str(m["ref"]) for c in selected if "ref" in (m := raws[c]["metadata"])} - set(raws))
        if missing:
            missing = [self._referenced_id(keys, r) for r in missing]
            got = yield _Call(("HMGET", keys.info, *missing), what)
            for cid, line in zip(missing, got, strict=True):
                if line is not None:
                    raws[cid] = self._raw_info(keys, sid, cid, line)

        def fetch_info(cid: str) -> dict[str, Any]:
            if cid not in raws:
                raise CorruptCheckpointError(f"{self._where(keys, cid)}: missing, but another checkpoint refers to it")
            return raws[cid]

        return [info_from_raw(raws[c], self._where(keys, c), fetch_info) for c in reversed(selected)]

    def _raw_info(self, keys: _Keys, sid: str, cid: str, line: bytes | None) -> dict[str, Any]:
        """Decode one info line, checking it belongs where it was found."""
        where = f"{self.url} key {keys.info!r} field {cid!r}"
        if line is None:
            raise CorruptCheckpointError(f"{where}: listed in {keys.ids!r} but has no info")
        info = decode_info_line(line, where)
        if info.get("checkpoint_id") != cid or info.get("session_id") != sid:
            raise CorruptCheckpointError(f"{where}: holds checkpoint {info.get('checkpoint_id')!r} of session "
                                         f"{info.get('session_id')!r}")
        return info

    def _sessions_plan(self) -> _Plan[list[str]]:
        """The index, checked against the sessions (stale entries pruned with a re-check)."""
        what = "listing sessions"
        names = yield _Call(("ZRANGE", self._index_key, 0, -1), what)
        sids = []
        for name in names:
            with contextlib.suppress(PersistencyError):
                sids.append(validate_id(_text(name)))
        if not sids:
            return []
        exists = yield _Batch(tuple(_Call(("EXISTS", self._keys(s).ids), what) for s in sids), what)
        live = [s for s, e in zip(sids, exists, strict=True) if e]
        stale = [s for s, e in zip(sids, exists, strict=True) if not e]
        if stale:
            # Prune entries of sessions that expired (TTL) or were half-created by a crash; re-check
            # afterwards so that a session created meanwhile keeps its entry.
            yield _Call(("ZREM", self._index_key, *stale), what)
            again = yield _Batch(tuple(_Call(("EXISTS", self._keys(s).ids), what) for s in stale), what)
            back = [s for s, e in zip(stale, again, strict=True) if e]
            if back:
                yield _Call(("ZADD", self._index_key, *[x for s in back for x in (0, s)]), what)
            live.extend(back)
        return sorted(live)

    def _delete_plan(self, session_id: str) -> _Plan[None]:
        """Remove the session's keys and its index entry (re-added if the session came back meanwhile)."""
        sid = validate_id(session_id, "session_id")
        keys = self._keys(sid)
        what = f"deleting session {sid!r}"
        yield _CONNECT
        yield _Script("delete", self._session_keys(keys), (sid,), what)
        yield _Call(("INCR", f"{self.key_prefix}:{{{sid}}}:gen"), what)  # p12: the generation (_redis_lease)
        self._lineages.drop_session(sid)
        if self._cluster:
            yield _Call(("ZREM", self._index_key, sid), what)
            if (yield _Call(("EXISTS", keys.ids), what)):  # re-created meanwhile: keep it listed
                yield _Call(("ZADD", self._index_key, 0, sid), what)

    # -- the contract ----------------------------------------------------------------------------------------
    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Store ``checkpoint`` create-only in one atomic round trip (the parent lineage is cached)."""
        self._run(self._save_plan(checkpoint))

    def get_checkpoint(self, session_id: str, checkpoint_id: str) -> Checkpoint:
        """Load one checkpoint; its base chain comes back in the same round trip."""
        return self._run(self._get_plan(session_id, checkpoint_id))

    def get_latest_checkpoint(self, session_id: str) -> Checkpoint | None:
        """The checkpoint with the greatest id, found and loaded in one round trip."""
        return self._run(self._latest_plan(session_id))

    def list_checkpoints(
        self,
        session_id: str,
        *,
        run_id: str | None = None,
        limit: int | None = None,
        before: str | None = None,
    ) -> list[CheckpointInfo]:
        """Infos oldest first, reading the ``info`` hash only (never a message payload)."""
        return self._run(self._list_plan(session_id, run_id, limit, before))

    def list_sessions(self) -> list[str]:
        """Every session with at least one checkpoint, sorted (from the session index)."""
        return self._run(self._sessions_plan())

    def delete_session(self, session_id: str) -> None:
        """Remove every key of the session and its index entry; a missing session is not an error."""
        self._run(self._delete_plan(session_id))

    async def asave_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Async `save_checkpoint` on redis.asyncio."""
        await self._arun(self._save_plan(checkpoint))

    async def aget_checkpoint(self, session_id: str, checkpoint_id: str) -> Checkpoint:
        """Async `get_checkpoint` on redis.asyncio."""
        return await self._arun(self._get_plan(session_id, checkpoint_id))

    async def aget_latest_checkpoint(self, session_id: str) -> Checkpoint | None:
        """Async `get_latest_checkpoint` on redis.asyncio."""
        return await self._arun(self._latest_plan(session_id))

    async def alist_checkpoints(
        self,
        session_id: str,
        *,
        run_id: str | None = None,
        limit: int | None = None,
        before: str | None = None,
    ) -> list[CheckpointInfo]:
        """Async `list_checkpoints` on redis.asyncio."""
        return await self._arun(self._list_plan(session_id, run_id, limit, before))

    async def alist_sessions(self) -> list[str]:
        """Async `list_sessions` on redis.asyncio."""
        return await self._arun(self._sessions_plan())

    async def adelete_session(self, session_id: str) -> None:
        """Async `delete_session` on redis.asyncio."""
        await self._arun(self._delete_plan(session_id))

    # -- leases and generations (p12, providers/_redis_lease.py) ------------------------------------------
    def _leases(self) -> Any:
        from ._redis_lease import RedisLeases

        return RedisLeases(self._client(), self.key_prefix)

    def session_generation(self, session_id: str) -> int:
        """The number each delete advances (0 for a session never deleted)."""
        sid = validate_id(session_id, "session_id")
        with self._translate("reading the session generation"):
            return int(self._leases().session_generation(sid))

    def acquire_lease(self, session_id: str, owner: str, ttl: float) -> Any:
        """Take the session's lease (``SET NX PX``) unless a live one exists (then None)."""
        with self._translate(f"taking the lease of session {session_id!r}"):
            return self._leases().acquire(session_id, owner, ttl)

    def current_lease(self, session_id: str) -> Any:
        """The session's live lease as stored, or None."""
        with self._translate(f"reading the lease of session {session_id!r}"):
            return self._leases().current(session_id)

    def renew_lease(self, lease: Any, ttl: float) -> Any:
        """Extend a held lease; None if it was taken."""
        with self._translate("renewing a lease"):
            return self._leases().renew(lease, ttl)

    def release_lease(self, lease: Any) -> None:
        """Give a held lease up (a taken one is left alone)."""
        with self._translate("releasing a lease"):
            self._leases().release(lease)
