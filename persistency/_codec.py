"""Old home of the record codec; it is public now in `persistency.storage.codec`. Kept for importers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from persistency.models import Checkpoint
from persistency.storage.codec import (
    DEDUP_FIELDS,
    decode_info_line,
    decode_record,
    encode,
    info_from_raw,
    lineage_of,
    materialize,
    materialize_chain,
)
from persistency.storage.records import FORMAT, Lineage, Record

if TYPE_CHECKING:
    from persistency.encryption import PayloadCipher

__all__ = [
    "DEDUP_FIELDS",
    "FORMAT",
    "Lineage",
    "Record",
    "decode_info_line",
    "decode_record",
    "encode_record",
    "info_from_raw",
    "lineage_of",
    "materialize",
    "materialize_chain",
]


def encode_record(
    checkpoint: Checkpoint, parent: Lineage | None, cipher: PayloadCipher | None = None
) -> tuple[bytes, Lineage]:
    """The record bytes of ``checkpoint`` and its `Lineage` (see `persistency.storage.codec.encode`)."""
    record = encode(checkpoint, parent, cipher)
    return record.data, record.lineage
