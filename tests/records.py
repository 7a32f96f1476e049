"""Test helpers that edit stored records as another writer would: change a line, keep checksums valid."""

from __future__ import annotations

from collections.abc import Callable

from persistency.storage.framing import frame, split


def reframed(data: bytes, edit_info: Callable[[bytes], bytes]) -> bytes:
    """``data`` (a format-2 record) with its info JSON edited and both checksums recomputed."""
    info, payload = split(data, "test record")
    line1, line2 = frame(edit_info(info), payload)
    return line1 + b"\n" + line2 + b"\n"
