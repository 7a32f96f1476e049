"""Session leases and generations in S3: conditional PUTs, ``If-None-Match: *`` to take, ``If-Match`` to change.

Objects (``R`` the provider's prefix; outside the session's folder, so a delete of the session
keeps them and listing never takes them for a session, their names starting with a dot)::

    R.leases/SESSION.json         {"owner", "token", "expires_at", "generation"}; its ETag proves the holding
    R.generations/SESSION         the session's generation as text, advanced by each delete

- acquire: GET the lease object. None there: ``PUT If-None-Match: *``. There and expired (or
  released): ``PUT If-Match: <the ETag read>``. Either PUT fails with 412 if another worker changed
  the object first, so of racers exactly one wins (S3's conditional writes are atomic per key).
- renew: ``PUT If-Match: <our ETag>`` with a later expiry; 412 means another worker took it.
- release: ``PUT If-Match: <our ETag>`` of an expired lease (portable where a conditional DELETE is not).
- generation: a compare-and-swap loop (GET, then PUT with If-Match / If-None-Match).

Expiry is the worker's wall clock (seconds since the epoch): workers must keep their clocks in
sync (NTP) to well under a lease's duration. Written against an async ``call(operation, **params)``
(s3fs's ``_call_s3``) and the provider's ``run`` (its event loop and error translation).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from persistency.errors import CorruptCheckpointError, StorageUnavailableError
from persistency.ids import validate_id
from persistency.storage import Lease

from .._leases import check_lease, check_lease_args, check_ttl, new_token

__all__ = ["S3Leases"]

T = TypeVar("T")
Run = Callable[..., Any]
_LOST = (409, 412)  # another conditional write won (409: one was in flight on the same key)
_CAS_ATTEMPTS = 20


def _status(exc: BaseException) -> int:
    """The HTTP status of a botocore error (s3fs keeps it as the cause), or 0."""
    seen: set[int] = set()
    err: BaseException | None = exc
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        meta = getattr(err, "response", {}) or {}
        status = meta.get("ResponseMetadata", {}).get("HTTPStatusCode") if isinstance(meta, dict) else None
        if status:
            return int(status)
        if isinstance(err, FileNotFoundError):
            return 404
        err = err.__cause__ or err.__context__
    return 0


class S3Leases:
    """The lease primitives and generations over one bucket and prefix."""

    def __init__(self, call: Callable[..., Awaitable[Any]], run: Run, bucket: str, root: str) -> None:
        self._call = call
        self._run = run
        self._bucket = bucket
        self._root = root

    def lease_key(self, session_id: str) -> str:
        """The session's lease object."""
        return f"{self._root}.leases/{session_id}.json"

    def generation_key(self, session_id: str) -> str:
        """The session's generation object."""
        return f"{self._root}.generations/{session_id}"

    # -- object I/O: None for "not there" / "someone else's write won" ---------------------------------------
    async def _aget(self, key: str) -> tuple[bytes, str] | None:
        try:
            resp = await self._call("get_object", Bucket=self._bucket, Key=key)
        except Exception as exc:
            if _status(exc) == 404:
                return None
            raise
        body = resp["Body"]
        try:
            return bytes(await body.read()), str(resp.get("ETag", ""))
        finally:
            body.close()

    async def _aput(self, key: str, data: bytes, etag: str | None) -> str | None:
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            resp = await self._call("put_object", Bucket=self._bucket, Key=key, Body=data, **condition)
        except Exception as exc:
            if _status(exc) in _LOST or (etag and _status(exc) == 404):
                return None
            raise
        return str(resp.get("ETag", "")) or None

    def _get(self, key: str, what: str) -> tuple[bytes, str] | None:
        return self._run(what, self._aget, key)  # type: ignore[no-any-return]

    def _put(self, key: str, data: bytes, etag: str | None, what: str) -> str | None:
        return self._run(what, self._aput, key, data, etag)  # type: ignore[no-any-return]

    def _decode(self, key: str, data: bytes) -> dict[str, Any]:
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict) or not isinstance(doc.get("expires_at"), (int, float)):
                raise ValueError("not a lease")
            return doc
        except ValueError as exc:
            raise CorruptCheckpointError(f"S3 object {key!r} is not a lease record") from exc

    @staticmethod
    def _body(owner: str, token: str, expires_at: float, generation: int) -> bytes:
        return json.dumps({"owner": owner, "token": token, "expires_at": expires_at,
                           "generation": generation}).encode()

    # -- generations -------------------------------------------------------------------------------------------
    def session_generation(self, session_id: str) -> int:
        """The number each delete advances (0 for a session never deleted)."""
        key = self.generation_key(validate_id(session_id, "session_id"))
        got = self._get(key, "reading the session generation")
        if got is None:
            return 0
        try:
            return int(got[0])
        except ValueError as exc:
            raise CorruptCheckpointError(f"S3 object {key!r} is not a generation number") from exc

    def advance_generation(self, session_id: str) -> int:
        """Advance the session's generation by one (compare-and-swap; called by the provider's delete)."""
        key = self.generation_key(validate_id(session_id, "session_id"))
        for _ in range(_CAS_ATTEMPTS):
            got = self._get(key, "reading the session generation")
            value = int(got[0]) + 1 if got else 1
            if self._put(key, str(value).encode(), got[1] if got else None, "advancing the session generation"):
                return value
        raise StorageUnavailableError(f"S3 {key}: the generation kept changing under {_CAS_ATTEMPTS} attempts")

    # -- leases ------------------------------------------------------------------------------------------------
    def acquire(self, session_id: str, owner: str, ttl: float) -> Lease | None:
        """The lease if none is live (one conditional PUT decides among racers), else None."""
        sid, owner, ttl = check_lease_args(session_id, owner, ttl)
        key = self.lease_key(sid)
        got = self._get(key, f"reading the lease of session {sid!r}")
        if got is not None and float(self._decode(key, got[0])["expires_at"]) > time.time():
            return None
        generation = self.session_generation(sid)
        expires = time.time() + ttl
        etag = self._put(key, self._body(owner, new_token(), expires, generation), got[1] if got else None,
                         f"taking the lease of session {sid!r}")
        return Lease(sid, owner, expires, generation, etag) if etag else None

    def current(self, session_id: str) -> Lease | None:
        """The live lease as stored (None if none, expired or released)."""
        sid = validate_id(session_id, "session_id")
        key = self.lease_key(sid)
        got = self._get(key, f"reading the lease of session {sid!r}")
        if got is None:
            return None
        doc = self._decode(key, got[0])
        if float(doc["expires_at"]) <= time.time():
            return None
        return Lease(sid, str(doc.get("owner", "")), float(doc["expires_at"]), int(doc.get("generation", 0)), got[1])

    def renew(self, lease: Lease, ttl: float) -> Lease | None:
        """A later expiry if the object is still the one we wrote (If-Match on its ETag), else None."""
        lease, ttl = check_lease(lease), check_ttl(ttl)
        expires = time.time() + ttl
        etag = self._put(self.lease_key(lease.session_id),
                         self._body(lease.owner, new_token(), expires, lease.generation), lease.token,
                         f"renewing the lease of session {lease.session_id!r}")
        return Lease(lease.session_id, lease.owner, expires, lease.generation, etag) if etag else None

    def release(self, lease: Lease) -> None:
        """Mark the lease expired if it is still ours; a lease taken by another is left alone."""
        lease = check_lease(lease)
        self._put(self.lease_key(lease.session_id), self._body("", new_token(), 0.0, lease.generation), lease.token,
                  f"releasing the lease of session {lease.session_id!r}")
