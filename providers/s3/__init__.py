"""Checkpoints in S3 (through s3fs), by concern: `options` (URL and options), `transport` (requests
and error translation), `formats` (packs and indexes), `reads` (listing and loading a session),
`compaction` (packing chains), `provider` (the primitives on the storage base)."""

from __future__ import annotations

from .options import URL_QUERY_OPTIONS, parse_s3_url
from .provider import S3StorageProvider

__all__ = ["URL_QUERY_OPTIONS", "S3StorageProvider", "parse_s3_url"]
