"""The record codec, public: encode a checkpoint into record bytes and read records back (no I/O).

Backends built on `StorageBackend` never call it; a backend that stores records its own way
(or a tool such as ``persistency verify``) uses these functions and gets the same checks.
"""

from __future__ import annotations

from persistency.storage.assemble import chain_of, info_from_raw, lineage_of, materialize, materialize_chain
from persistency.storage.decode import check_delta, decode_info_line, decode_record, decode_records
from persistency.storage.encode import DEDUP_FIELDS, encode
from persistency.storage.framing import is_legacy, sum_hex
from persistency.storage.jsontext import dumps, loads

__all__ = [
    "DEDUP_FIELDS",
    "chain_of",
    "check_delta",
    "decode_info_line",
    "decode_record",
    "decode_records",
    "dumps",
    "encode",
    "info_from_raw",
    "is_legacy",
    "lineage_of",
    "loads",
    "materialize",
    "materialize_chain",
    "sum_hex",
]
