"""The storage backends under test: how to get a fresh URL on each, and how many bytes it holds.

Redis and S3 need servers; `benchmarks.servers` starts them and hands back their addresses.
Bytes are counted from the storage itself, never from the provider's own report: file sizes on
disk, the values in fsspec's memory store, the logical size of every Redis key, the S3 objects'
sizes.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.counters import WireCounter
from persistency import provider_from_url
from persistency.provider import PersistencyStorageProvider

__all__ = ["Backend", "filesystem_backend", "memory_backend", "redis_backend", "s3_backend", "snapshot_backend"]


@dataclass
class Backend:
    """One provider under test."""

    name: str
    fresh_url: Callable[[str], str]
    bytes_stored: Callable[[str], int]
    counter: WireCounter | None = None
    #: options for a provider that only creates fixtures (e.g. the 10,000 sessions): may skip fsync
    bulk_options: dict[str, Any] = field(default_factory=dict)
    unit: str = ""  # "round trips" or "requests"
    #: builds a provider for a URL (default: the registry, as a user would)
    make: Callable[..., PersistencyStorageProvider] = provider_from_url
    #: frees what a URL holds once measured (keeps in-process stores small)
    cleanup: Callable[[str], None] = lambda url: None
    #: bytes the storage really allocates for a URL (disk blocks), where that differs from the content
    allocated: Callable[[str], int] | None = None
    #: extra facts to record about a provider after a run (e.g. the snapshot store's cap)
    after_run: Callable[[PersistencyStorageProvider], dict[str, Any]] = lambda provider: {}


def _du(path: Path, *, blocks: bool = False) -> int:
    """Apparent size of every file under ``path`` (or, with ``blocks``, the disk space allocated)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(dirpath, f))
            except FileNotFoundError:
                continue
            total += st.st_blocks * 512 if blocks else st.st_size
    return total


def filesystem_backend(workdir: Path) -> Backend:
    """A local folder under ``workdir`` (the embedded default)."""

    def fresh(tag: str) -> str:
        return str(workdir / f"fs-{tag}-{uuid.uuid4().hex[:6]}")

    return Backend("filesystem", fresh, lambda url: _du(Path(url)), bulk_options={"fsync": False},
                   allocated=lambda url: _du(Path(url), blocks=True),
                   cleanup=lambda url: shutil.rmtree(url, ignore_errors=True))


def snapshot_backend(workdir: Path, cap_bytes: int | None) -> Backend:
    """The full-snapshot-per-step reference store in a local folder."""
    from benchmarks.references import SnapshotPerStepProvider

    def fresh(tag: str) -> str:
        return str(workdir / f"snap-{tag}-{uuid.uuid4().hex[:6]}")

    def make(url: str, **options: Any) -> PersistencyStorageProvider:
        return SnapshotPerStepProvider(url, cap_bytes=cap_bytes)

    def after(provider: PersistencyStorageProvider) -> dict[str, Any]:
        assert isinstance(provider, SnapshotPerStepProvider)
        return {"snapshot_sizes": provider.sizes, "snapshot_skipped": provider.skipped,
                "snapshot_stopped_at_step": provider.stopped_at_step, "snapshot_cap_bytes": cap_bytes}

    return Backend("snapshot", fresh, lambda url: _du(Path(url)), make=make, after_run=after,
                   allocated=lambda url: _du(Path(url), blocks=True),
                   cleanup=lambda url: shutil.rmtree(url, ignore_errors=True))


def memory_backend() -> Backend:
    """fsspec's in-process ``memory://`` store."""

    def fresh(tag: str) -> str:
        return f"memory://bench-{tag}-{uuid.uuid4().hex[:6]}"

    def root(url: str) -> str:
        return "/" + url.split("://", 1)[1].strip("/") + "/"

    def size(url: str) -> int:
        from fsspec.implementations.memory import MemoryFileSystem

        r = root(url)
        return sum(len(f.getvalue()) for k, f in list(MemoryFileSystem.store.items()) if k.startswith(r))

    def cleanup(url: str) -> None:
        from fsspec.implementations.memory import MemoryFileSystem

        r = root(url)
        for k in [k for k in list(MemoryFileSystem.store) if k.startswith(r)]:
            MemoryFileSystem.store.pop(k, None)
        MemoryFileSystem.pseudo_dirs[:] = [d for d in MemoryFileSystem.pseudo_dirs if not (d + "/").startswith(r)]

    return Backend("memory", fresh, size, cleanup=cleanup)


def redis_backend(base_url: str, counter: WireCounter) -> Backend:
    """A Redis server; each URL gets its own key prefix (the provider's ``key_prefix`` option)."""
    import redis

    def fresh(tag: str) -> str:
        sep = "&" if "?" in base_url else "?"
        return f"{base_url}{sep}key_prefix=bench-{tag}-{uuid.uuid4().hex[:6]}"

    def size(url: str) -> int:
        prefix = url.split("key_prefix=", 1)[1].split("&", 1)[0]
        client = redis.Redis.from_url(base_url)
        total = 0
        try:
            for key in client.scan_iter(match=f"*{prefix}*", count=1000):
                total += _redis_key_bytes(client, key)
        finally:
            client.close()
        return total

    return Backend("redis", fresh, size, counter=counter, unit="round trips")


def _redis_key_bytes(client: Any, key: bytes) -> int:
    """The logical size of one key: its name plus what it holds."""
    kind = client.type(key)
    kind = kind.decode() if isinstance(kind, bytes) else kind
    n = len(key)
    if kind == "string":
        return n + int(client.strlen(key))
    if kind == "hash":
        return n + sum(len(f) + len(v) for f, v in client.hgetall(key).items())
    if kind == "list":
        return n + sum(len(v) for v in client.lrange(key, 0, -1))
    if kind == "set":
        return n + sum(len(v) for v in client.smembers(key))
    if kind == "zset":
        return n + sum(len(m) + 8 for m, _s in client.zrange(key, 0, -1, withscores=True))
    if kind == "stream":
        return n + sum(len(i) + sum(len(f) + len(v) for f, v in d.items()) for i, d in client.xrange(key))
    return n + int(client.memory_usage(key) or 0)


def s3_backend(bucket: str, endpoint_url: str, region: str, counter: WireCounter) -> Backend:
    """An S3 server (moto); each URL is a fresh prefix in one bucket, the endpoint in its query."""

    def fresh(tag: str) -> str:
        return f"s3://{bucket}/bench-{tag}-{uuid.uuid4().hex[:6]}?endpoint_url={endpoint_url}&region={region}"

    def size(url: str) -> int:
        import boto3

        prefix = url.split("://", 1)[1].split("?", 1)[0].partition("/")[2]
        client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region,
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        total = 0
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/"):
            total += sum(o["Size"] for o in page.get("Contents", []))
        return total

    return Backend("s3", fresh, size, counter=counter, unit="requests")
