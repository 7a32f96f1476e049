"""Encryption at rest: payloads sealed, listing readable, a wrong key named as such."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from persistency import (
    CorruptCheckpointError,
    EncryptionError,
    PersistencyStorageProvider,
    ProviderConfigError,
    provider_from_url,
)
from persistency.encryption import PayloadCipher, generate_key
from persistency.storage.framing import frame, split
from persistency.testing import ProviderConformance, make_chain, make_checkpoint
from tests.fs_records import record_file
from tests.records import reframed


def _stored(root: Path) -> bytes:
    return b"".join(f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file())


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
    first, second = (record_file(tmp_path, "enc", c.checkpoint_id) for c in chain)
    info, _ = split(second.read_bytes(), "x")
    _, payload = split(first.read_bytes(), "x")
    line1 = second.read_bytes().split(b"\n", 1)[0]
    payload_of_first = first.read_bytes().split(b"\n", 1)[1]
    second.write_bytes(line1 + b"\n" + payload_of_first)
    with pytest.raises(CorruptCheckpointError, match="checksum"):  # the checksum binds the lines together
        provider_from_url(str(tmp_path), encryption_key=key).get_checkpoint("enc", chain[-1].checkpoint_id)
    # with the checksums recomputed, the encryption still refuses it: the info line is associated data
    second.write_bytes(b"\n".join(frame(info, payload)) + b"\n")
    with pytest.raises(EncryptionError):
        provider_from_url(str(tmp_path), encryption_key=key).get_checkpoint("enc", chain[-1].checkpoint_id)


def test_an_edited_info_line_does_not_open(tmp_path: Path) -> None:
    key = generate_key()
    chain = make_chain(provider_from_url(str(tmp_path), encryption_key=key), "enc", 2)
    path = record_file(tmp_path, "enc", chain[0].checkpoint_id)
    data = path.read_bytes()
    path.write_bytes(reframed(data, lambda info: info.replace(b'"problem":"2+2"', b'"problem":"2+3"')))
    assert path.read_bytes() != data
    with pytest.raises(EncryptionError):
        provider_from_url(str(tmp_path), encryption_key=key).get_checkpoint("enc", chain[0].checkpoint_id)


def test_error_text_is_sealed_and_listed_with_the_key(tmp_path: Path) -> None:
    key = generate_key()
    p = provider_from_url(str(tmp_path), encryption_key=key)
    chain = make_chain(p, "enc", 1)
    end = make_checkpoint("enc", 1, parent_id=chain[0].checkpoint_id, messages=chain[0].messages, kind="run_end",
                          end_reason="error", end_seq=1).model_copy(update={"error": "the prompt said SECRET-42"})
    p.save_checkpoint(end)
    assert b"SECRET-42" not in _stored(tmp_path)
    assert provider_from_url(str(tmp_path), encryption_key=key).list_checkpoints("enc")[-1].error == end.error
    again = provider_from_url(str(tmp_path), encryption_key=key)
    assert again.get_checkpoint("enc", end.checkpoint_id).error == end.error


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
