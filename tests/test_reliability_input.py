"""Bad input not covered elsewhere, each a typed error with nothing else damaged.

Already covered (not repeated here): hostile ids and payloads and random bytes through the codec
(``test_hostile_input.py``), damaged files (``test_filesystem_provider.py``), one damaged key
per kind on Redis and S3 (``test_redis_provider.py``, ``test_s3_provider.py``), unknown schemes,
a missing bucket and malformed Redis URLs as single examples (``test_registry.py`` and the provider
tests). Added here:

- a checkpoint id from another session, given to the feature on every backend;
- hypothesis-generated random bytes and truncations written into a checkpoint's Redis hash field
  or S3 record, pack and index objects: every read is the original data or a typed error, another
  session and the other checkpoints stay intact, and nothing was rewritten behind our back;
- hypothesis-generated URLs: unknown schemes, malformed Redis and S3 URLs (with a password that
  must never be echoed) are `ProviderConfigError`, never another exception, and do no I/O;
- a missing bucket and an unreachable Redis stop the chat before any model call.
"""

from __future__ import annotations

import string
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from persistency import (
    CorruptCheckpointError,
    Persistency,
    PersistencyError,
    PersistencyStorageProvider,
    ProviderConfigError,
    ResumeError,
    ResumePolicy,
    StorageUnavailableError,
    UnsupportedSchemaError,
    provider_from_url,
)
from persistency.models import Checkpoint
from persistency.testing import make_chain
from tests.helpers_ag2 import Faults, build_chat
from tests.servers.s3_server import BUCKET, S3Server

EXAMPLES = 60
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
S3_EXAMPLES = 20  # every example reads a whole session from moto several times
TYPED = (CorruptCheckpointError, UnsupportedSchemaError)
SECRET = "pw-4b1e-input-secret"


# -- a checkpoint id from another session ---------------------------------------------------------------
@pytest.mark.parametrize("policy", ["resume_from", "fresh_with_history"])
def test_a_checkpoint_id_of_another_session_is_refused_before_any_model_call(
    provider: PersistencyStorageProvider, policy: str
) -> None:
    theirs = build_chat()
    Persistency(provider, "theirs").attach(theirs.manager)
    theirs.user.initiate_chat(theirs.manager, message="hello", silent=True)
    their_infos = provider.list_checkpoints("theirs")
    foreign = their_infos[3].checkpoint_id
    mine = build_chat(faults=(faults := Faults()))
    Persistency(provider, "mine", policy=getattr(ResumePolicy, policy)(foreign)).attach(mine.manager)
    with pytest.raises(ResumeError, match=f"no checkpoint '{foreign}' in session 'mine'"):
        mine.user.initiate_chat(mine.manager, message="hello", silent=True)
    assert faults.calls == []
    assert provider.list_checkpoints("mine") == []
    assert provider.list_checkpoints("theirs") == their_infos


# -- damaged bytes in Redis and S3 ---------------------------------------------------------------------------
def _bytes_for(original: bytes, data: st.DataObject) -> bytes:
    """Random bytes, or the original truncated (never the original itself).

    (A byte flipped so that the JSON stays valid is not detected: see docs/reliability.md, limits.)
    """
    if data.draw(st.booleans()):
        out = data.draw(st.binary(max_size=600))
    else:
        out = original[: data.draw(st.integers(0, max(0, len(original) - 1)))]
    return out if out != original else out + b"\x00"


def _check_reads(
    make: Any, session: str, chain: list[Checkpoint], bystander: list[Checkpoint]
) -> int:
    """Every read is the original data or a typed error; the other session loads exactly. Returns the errors."""
    errors = 0
    p = make()
    try:
        for call in (lambda: p.list_checkpoints(session), lambda: p.get_latest_checkpoint(session),
                     *[lambda c=c: p.get_checkpoint(session, c.checkpoint_id) for c in chain]):
            try:
                got = call()
            except TYPED as exc:
                assert session in str(exc) or "checkpoint" in str(exc), exc
                errors += 1
                continue
            except PersistencyError as exc:  # pragma: no cover - any other error type is a finding
                pytest.fail(f"unexpected {type(exc).__name__}: {exc}")
            if isinstance(got, Checkpoint):
                want = next(c for c in chain if c.checkpoint_id == got.checkpoint_id)
                assert got.model_dump(mode="json") == want.model_dump(mode="json")
            elif isinstance(got, list):
                assert [i.checkpoint_id for i in got] == [c.checkpoint_id for c in chain]
        for c in bystander:
            assert p.get_checkpoint("bystander", c.checkpoint_id).model_dump(mode="json") == c.model_dump(mode="json")
        assert sorted(p.list_sessions()) == sorted(["bystander", session])
    finally:
        p.close()
    return errors


@pytest.fixture
def redis_store(redis_url: str) -> Iterator[tuple[str, Any, list[Checkpoint], list[Checkpoint]]]:
    import redis

    with provider_from_url(redis_url) as p:
        chain, bystander = make_chain(p, "victim", 4), make_chain(p, "bystander", 2)
    admin = redis.Redis.from_url(redis_url.split("?")[0])
    yield redis_url, admin, chain, bystander
    admin.close()


@SETTINGS
@given(data=st.data())
def test_random_and_truncated_redis_fields_are_typed_errors_and_damage_nothing_else(
    redis_store: tuple[str, Any, list[Checkpoint], list[Checkpoint]], data: st.DataObject
) -> None:
    url, admin, chain, bystander = redis_store
    prefix = url.split("key_prefix=")[1]
    part = data.draw(st.sampled_from(["info", "payload"]))
    victim = data.draw(st.sampled_from(chain))
    key = f"{prefix}:{{victim}}:{part}"
    original = admin.hget(key, victim.checkpoint_id)
    assert original
    admin.hset(key, victim.checkpoint_id, _bytes_for(original, data))
    try:
        _check_reads(lambda: provider_from_url(url), "victim", chain, bystander)  # (a byte of the save token
        # in front of a payload may change harmlessly: what must never happen is wrong data or an untyped error)
        assert admin.hget(key, victim.checkpoint_id) != original  # read paths never rewrite what they read
    finally:
        admin.hset(key, victim.checkpoint_id, original)
    assert _check_reads(lambda: provider_from_url(url), "victim", chain, bystander) == 0


@pytest.fixture
def s3_store(s3_server: S3Server) -> Iterator[tuple[str, str, list[Checkpoint], list[Checkpoint], list[str]]]:
    prefix = f"t-{uuid.uuid4().hex}"
    url = s3_server.url(prefix) + "&pack_every=4"
    with provider_from_url(url) as p:
        chain, bystander = make_chain(p, "victim", 6), make_chain(p, "bystander", 2)
    client = s3_server.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/victim/")["Contents"]
            if o["Size"] > 0]  # whole records, the pack and its index (packed records are empty objects)
    client.close()
    assert any(k.endswith(".pack.gz") for k in keys) and any(k.endswith(".index.gz") for k in keys)
    yield url, prefix, chain, bystander, sorted(keys)
    s3_server.clear(prefix)


@settings(SETTINGS, max_examples=S3_EXAMPLES)
@given(data=st.data())
def test_random_and_truncated_s3_objects_are_typed_errors_and_damage_nothing_else(
    s3_server: S3Server, s3_store: tuple[str, str, list[Checkpoint], list[Checkpoint], list[str]],
    data: st.DataObject,
) -> None:
    url, _, chain, bystander, keys = s3_store
    key = data.draw(st.sampled_from(keys))
    client = s3_server.client()
    try:
        original = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        client.put_object(Bucket=BUCKET, Key=key, Body=_bytes_for(original, data))
        try:
            _check_reads(lambda: provider_from_url(url), "victim", chain, bystander)
            assert client.get_object(Bucket=BUCKET, Key=key)["Body"].read() != original
        finally:
            client.put_object(Bucket=BUCKET, Key=key, Body=original)
        assert _check_reads(lambda: provider_from_url(url), "victim", chain, bystander) == 0
    finally:
        client.close()


def test_a_damaged_session_stops_the_chat_before_any_model_call(
    redis_store: tuple[str, Any, list[Checkpoint], list[Checkpoint]],
) -> None:
    url, admin, chain, _ = redis_store
    prefix = url.split("key_prefix=")[1]
    admin.hset(f"{prefix}:{{victim}}:payload", chain[-1].checkpoint_id, b"\xff\xfe not a record")
    chat = build_chat(faults=(faults := Faults()))
    Persistency(provider_from_url(url), "victim").attach(chat.manager)
    with pytest.raises(CorruptCheckpointError, match="victim"):
        chat.user.initiate_chat(chat.manager, message="hello", silent=True)
    assert faults.calls == []


# -- URLs ------------------------------------------------------------------------------------------------------
def _known_schemes() -> set[str]:
    from fsspec.registry import known_implementations

    from persistency.registry import _BUILTIN

    return set(known_implementations) | set(_BUILTIN) | {"file", "local"}


url_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)


@SETTINGS
@given(scheme=st.text(string.ascii_lowercase + string.digits + "+.-", min_size=1, max_size=12), rest=url_text)
def test_unknown_url_schemes_are_config_errors(scheme: str, rest: str) -> None:
    if scheme in _known_schemes() or not scheme[0].isalpha():
        return
    with pytest.raises(ProviderConfigError, match="scheme"):
        provider_from_url(f"{scheme}://{rest}")


def _constructs_or_config_error(url: str) -> None:
    try:
        p = provider_from_url(url)
    except ProviderConfigError as exc:
        assert SECRET not in f"{exc} {exc!r}"
        return
    assert SECRET not in repr(p)
    p.close()


def _text_without(chars: str) -> st.SearchStrategy[str]:
    return st.text(st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters=chars), max_size=60)


@SETTINGS
@given(netloc=url_text, path=_text_without("#?"), query=_text_without("#"))
def test_malformed_redis_urls_are_config_errors_without_the_password(netloc: str, path: str, query: str) -> None:
    for scheme in ("redis", "rediss"):
        _constructs_or_config_error(f"{scheme}://u:{SECRET}@{netloc}/{path}?{query}")
        _constructs_or_config_error(f"{scheme}://127.0.0.1:6399/{path}?password={SECRET}&{query}")


@pytest.mark.parametrize("url", [
    f"redis://:{SECRET}#x@127.0.0.1:6379/0",
    f"redis://u:{SECRET}?x@127.0.0.1:6379/0",
    f"redis://u:{SECRET}/x@127.0.0.1:6379/0",
    f"redis://127.0.0.1:6379/0#?password={SECRET}",
    f"redis://127.0.0.1:6379/0?pasword={SECRET}",
    f"redis://127.0.0.1:6379/0??password={SECRET}",
], ids=["hash", "question-mark", "slash", "fragment", "typo", "double-question-mark"])
def test_a_password_with_url_special_characters_is_never_echoed(url: str) -> None:
    _constructs_or_config_error(url)


@SETTINGS
@given(bucket=url_text, path=url_text, query=url_text)
def test_malformed_s3_urls_are_config_errors(bucket: str, path: str, query: str) -> None:
    _constructs_or_config_error(f"s3://{bucket}/{path}?endpoint_url=http://127.0.0.1:1&{query}")
    _constructs_or_config_error(f"s3://k:{SECRET}@{bucket}/{path}?{query}")  # credentials are refused, unechoed


def test_a_missing_bucket_stops_the_chat_before_any_model_call(s3_server: S3Server) -> None:
    url = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/x?endpoint_url={s3_server.endpoint}"
    chat = build_chat(faults=(faults := Faults()))
    Persistency(provider_from_url(url), "s").attach(chat.manager)
    with pytest.raises(StorageUnavailableError, match="does not exist"):
        chat.user.initiate_chat(chat.manager, message="hello", silent=True)
    assert faults.calls == []
