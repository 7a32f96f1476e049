"""Count what a provider sends over the wire: Redis round trips and S3 requests, client side.

Both counters patch the client library's classes once (not any provider's code), so they see
every client a provider builds, in any thread:

- Redis: one ``send_packed_command`` is one round trip (a pipeline or MULTI/EXEC block is packed
  into one write and its replies read back together); the connection handshake
  (HELLO / CLIENT SETINFO on a new connection) is counted apart. Replies are scanned for the
  payload marker, so a listing that reads a message payload is caught.
- S3: every API call through aiobotocore (what s3fs uses) or botocore, by operation name, plus
  the HTTP requests actually sent (retries included) and whether a response body held the marker.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from benchmarks.stream import MARKER

__all__ = ["WireCounter", "install_redis_counter", "install_s3_counter"]

_MARK = MARKER.encode()


@dataclass
class WireCounter:
    """Thread-safe tallies of round trips / requests while `counting` is on."""

    name: str
    round_trips: int = 0
    handshake: int = 0
    operations: Counter[str] = field(default_factory=Counter)
    http_requests: int = 0
    payload_seen: bool = False
    enabled: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _local: threading.local = field(default_factory=threading.local, repr=False)

    def reset(self) -> None:
        """Zero every tally."""
        with self._lock:
            self.round_trips = self.handshake = self.http_requests = 0
            self.operations = Counter()
            self.payload_seen = False

    @contextlib.contextmanager
    def counting(self) -> Iterator[WireCounter]:
        """Count (from zero) inside the block."""
        self.reset()
        self.enabled = True
        try:
            yield self
        finally:
            self.enabled = False

    def snapshot(self) -> dict[str, Any]:
        """The tallies as plain JSON."""
        with self._lock:
            return {
                "round_trips": self.round_trips,
                "handshake_round_trips": self.handshake,
                "operations": dict(self.operations),
                "http_requests": self.http_requests,
                "payload_seen": self.payload_seen,
            }

    def _add(self, attr: str, n: int = 1) -> None:
        if self.enabled:
            with self._lock:
                setattr(self, attr, getattr(self, attr) + n)

    def _op(self, name: str) -> None:
        if self.enabled:
            with self._lock:
                self.operations[name] += 1
                self.round_trips += 1

    def _saw(self, data: Any) -> None:
        if self.enabled and not self.payload_seen and _contains_marker(data):
            self.payload_seen = True


def _contains_marker(data: Any, depth: int = 0) -> bool:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return _MARK in bytes(data)
    if isinstance(data, str):
        return MARKER in data
    if depth < 4 and isinstance(data, (list, tuple)):
        return any(_contains_marker(d, depth + 1) for d in data)
    if depth < 4 and isinstance(data, dict):
        return any(_contains_marker(k, depth + 1) or _contains_marker(v, depth + 1) for k, v in data.items())
    return False


REDIS = WireCounter("redis")
S3 = WireCounter("s3")
_installed: set[str] = set()


def install_redis_counter() -> WireCounter:
    """Patch redis-py's connection class once; return the counter."""
    if "redis" in _installed:
        return REDIS
    from redis.connection import AbstractConnection

    send = AbstractConnection.send_packed_command
    read = AbstractConnection.read_response
    hello = AbstractConnection.on_connect_check_health

    def on_connect(self: Any, *args: Any, **kwargs: Any) -> Any:
        REDIS._local.handshake = True
        try:
            return hello(self, *args, **kwargs)
        finally:
            REDIS._local.handshake = False

    def send_packed_command(self: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(REDIS._local, "handshake", False):
            REDIS._add("handshake")
        else:
            REDIS._add("round_trips")
        return send(self, command, *args, **kwargs)  # type: ignore[no-untyped-call]

    def read_response(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = read(self, *args, **kwargs)
        REDIS._saw(out)
        return out

    AbstractConnection.on_connect_check_health = on_connect  # type: ignore[method-assign]
    AbstractConnection.send_packed_command = send_packed_command  # type: ignore[method-assign]
    AbstractConnection.read_response = read_response  # type: ignore[method-assign]
    _installed.add("redis")
    return REDIS


def _patch_read(body_cls: Any) -> None:
    aread = body_cls.read

    async def read(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = await aread(self, *args, **kwargs)
        S3._saw(out)
        return out

    body_cls.read = read


def install_s3_counter() -> WireCounter:
    """Patch aiobotocore's (and botocore's) client and endpoint classes once; return the counter."""
    if "s3" in _installed:
        return S3
    with contextlib.suppress(ImportError):
        from aiobotocore.client import AioBaseClient
        from aiobotocore.endpoint import AioEndpoint

        call = AioBaseClient._make_api_call
        asend = AioEndpoint._send

        async def _make_api_call(self: Any, operation_name: str, api_params: Any) -> Any:
            ranged = operation_name == "GetObject" and isinstance(api_params, dict) and "Range" in api_params
            S3._op(f"{operation_name}(range)" if ranged else operation_name)
            out = await call(self, operation_name, api_params)
            if isinstance(out, dict) and "Body" not in out:
                S3._saw(out)
            return out

        async def _send(self: Any, request: Any) -> Any:
            S3._add("http_requests")
            return await asend(self, request)

        AioBaseClient._make_api_call = _make_api_call  # type: ignore[method-assign]
        AioEndpoint._send = _send  # type: ignore[method-assign]
        from aiobotocore import response as _response

        for cls_name in ("AioStreamingBody", "AioHttpxStreamingBody"):
            body_cls = getattr(_response, cls_name, None)
            if body_cls is not None and "read" in vars(body_cls):
                _patch_read(body_cls)
    with contextlib.suppress(ImportError):
        from botocore.client import BaseClient

        bcall = BaseClient._make_api_call

        def _bmake_api_call(self: Any, operation_name: str, api_params: Any) -> Any:
            S3._op(operation_name)
            S3._add("http_requests")
            return bcall(self, operation_name, api_params)

        BaseClient._make_api_call = _bmake_api_call  # type: ignore[method-assign]
    _installed.add("s3")
    return S3
