"""Optional encryption at rest: message payloads and states sealed with AES-256-GCM.

Only the payload of a record is encrypted (messages, agent and manager state, and the error text
of a failed run); the info line (ids, step, kind, times, metadata) stays readable so that
listing, ``show`` and ``prune`` work without the key. Each payload is compressed, then sealed
with a fresh nonce and bound to its session and checkpoint id and to the info line's JSON
(associated data), so a payload copied onto another record, or an edited info line, fails to
open. A wrong key is named as such, never mistaken for damage. Needs the ``crypto`` extra.
"""

from __future__ import annotations

import base64
import hashlib
import os
import zlib
from typing import Any

from persistency.errors import EncryptionError, MissingDependencyError, ProviderConfigError

__all__ = ["ENV_VAR", "PayloadCipher", "generate_key"]

ENV_VAR = "PERSISTENCY_ENCRYPTION_KEY"
ALGORITHM = "A256GCM+zlib"


def generate_key() -> str:
    """A new random key, as the URL-safe base64 text that `PayloadCipher` accepts."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")


def _key_bytes(key: str | bytes) -> bytes:
    if isinstance(key, str):
        try:
            raw = base64.urlsafe_b64decode(key.strip() + "=" * (-len(key.strip()) % 4))
        except ValueError as exc:
            raise ProviderConfigError("encryption key is not URL-safe base64 (use generate_key())") from exc
    else:
        raw = bytes(key)
    if len(raw) != 32:
        raise ProviderConfigError(f"encryption key must be 32 bytes (AES-256), got {len(raw)}")
    return raw


class PayloadCipher:
    """Seals and opens record payloads with one AES-256 key (32 bytes, or its base64 text)."""

    def __init__(self, key: str | bytes) -> None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError as exc:
            raise MissingDependencyError(
                "encryption needs the 'crypto' extra: pip install 'ag2-persistency[crypto]'"
            ) from exc
        raw = _key_bytes(key)
        self._aead = AESGCM(raw)
        #: a short, non-secret fingerprint of the key, stored with each payload
        self.key_id = hashlib.sha256(b"ag2-persistency key id\x00" + raw).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"PayloadCipher(key_id={self.key_id!r})"

    def seal(self, payload: bytes, session_id: str, checkpoint_id: str, info: bytes | None = None) -> dict[str, Any]:
        """Encrypt a payload's JSON bytes into a JSON-able envelope, authenticating ``info`` with it."""
        nonce = os.urandom(12)
        ct = self._aead.encrypt(nonce, zlib.compress(payload, 6), _aad(session_id, checkpoint_id, info))
        return {
            "alg": ALGORITHM,
            "kid": self.key_id,
            "nonce": base64.b64encode(nonce).decode("ascii"),
            "ct": base64.b64encode(ct).decode("ascii"),
        }

    def open(self, envelope: dict[str, Any], session_id: str, checkpoint_id: str, where: str,
             info: bytes | None = None) -> bytes:
        """Decrypt an envelope back to the payload's JSON bytes; `EncryptionError` if it cannot.

        ``info`` is the info JSON the payload was sealed with (None for records of 0.1).
        """
        from cryptography.exceptions import InvalidTag

        if envelope.get("alg") != ALGORITHM:
            raise EncryptionError(f"{where}: unknown encryption {envelope.get('alg')!r}")
        if envelope.get("kid") != self.key_id:
            raise EncryptionError(
                f"{where}: encrypted with key {envelope.get('kid')!r}, but the key given is {self.key_id!r}"
            )
        try:
            nonce = base64.b64decode(envelope["nonce"], validate=True)
            ct = base64.b64decode(envelope["ct"], validate=True)
            return zlib.decompress(self._aead.decrypt(nonce, ct, _aad(session_id, checkpoint_id, info)))
        except (InvalidTag, KeyError, ValueError, TypeError, zlib.error) as exc:
            raise EncryptionError(f"{where}: encrypted payload does not open with this key (tampered?)") from exc


def _aad(session_id: str, checkpoint_id: str, info: bytes | None) -> bytes:
    ids = f"ag2-persistency\x00{session_id}\x00{checkpoint_id}".encode()
    return ids if info is None else ids + b"\x00" + info
