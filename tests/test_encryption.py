"""Encryption at rest: payloads sealed, listing readable, a wrong key named as such."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from persistency import EncryptionError, PersistencyStorageProvider, ProviderConfigError, provider_from_url
from persistency.encryption import PayloadCipher, generate_key
from persistency.testing import ProviderConformance, make_chain


def _stored(root: Path) -> bytes:
    return b"".join(f.read_bytes() for f in sorted(root.rglob("*.json")))


def test_payloads_are_sealed_and_listing_stays_readable(tmp_path: Path) -> None:
    key = generate_key()
    p = provider_from_url(str(tmp_path), encryption_key=key)
    chain = make_chain(p, "enc", 5)
    raw = _stored(tmp_path)
    assert b"message 3" not in raw and b"You are alice" not in raw
    assert b'"problem":"2+2"' in raw  # metadata (info line) stays readable
    plain = provider_from_url(str(tmp_path))
    assert [i.step for i in plain.list_checkpoints("enc")] == [1, 2, 3, 4, 5]
    with pytest.raises(EncryptionError, match="encryption_key"):
        plain.get_checkpoint("enc", chain[-1].checkpoint_id)
    again = provider_from_url(str(tmp_path), encryption_key=key)
    assert again.get_checkpoint("enc", chain[-1].checkpoint_id).messages == chain[-1].messages


def test_wrong_key_is_named_not_mistaken_for_damage(tmp_path: Path) -> None:
    p = provider_from_url(str(tmp_path), encryption_key=generate_key())
    chain = make_chain(p, "enc", 2)
    other = provider_from_url(str(tmp_path), encryption_key=generate_key())
    with pytest.raises(EncryptionError, match="key"):
        other.get_checkpoint("enc", chain[-1].checkpoint_id)


def test_a_payload_moved_to_another_record_does_not_open(tmp_path: Path) -> None:
    key = generate_key()
    p = provider_from_url(str(tmp_path), encryption_key=key)
    chain = make_chain(p, "enc", 2)
    d = tmp_path / "enc" / "checkpoints"
    first, second = (d / f"{c.checkpoint_id}.json" for c in chain)
    line1 = second.read_bytes().split(b"\n", 1)[0]
    payload_of_first = first.read_bytes().split(b"\n", 1)[1]
    second.write_bytes(line1 + b"\n" + payload_of_first)
    with pytest.raises(EncryptionError):
        provider_from_url(str(tmp_path), encryption_key=key).get_checkpoint("enc", chain[-1].checkpoint_id)


def test_key_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSISTENCY_ENCRYPTION_KEY", generate_key())
    p = provider_from_url(str(tmp_path))
    make_chain(p, "enc", 1)
    assert b"message 0" not in _stored(tmp_path)


@pytest.mark.parametrize("bad", ["short", "!!not base64!!", b"\x00" * 16])
def test_bad_keys_are_refused(bad: str | bytes) -> None:
    with pytest.raises(ProviderConfigError):
        PayloadCipher(bad)


def test_cipher_repr_shows_no_key() -> None:
    key = generate_key()
    assert key not in repr(PayloadCipher(key))


class TestEncryptedConformance(ProviderConformance):
    """The whole contract holds with encryption on."""

    @pytest.fixture
    def provider(self, tmp_path: Path) -> Iterator[PersistencyStorageProvider]:
        with provider_from_url(str(tmp_path / "sealed"), encryption_key=generate_key()) as p:
            yield p
