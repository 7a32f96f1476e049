"""Checkpoints as files, through fsspec: a local folder (the embedded default), ``memory://``, or any
fsspec protocol the user has installed. See `provider` for the layout and what is create-only where."""

from __future__ import annotations

from .provider import FilesystemOptions, FilesystemStorageProvider

__all__ = ["FilesystemOptions", "FilesystemStorageProvider"]
