"""Hostile and damaged input, generated: ids, payloads and stored bytes never escape the typed errors."""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from persistency.providers.filesystem import FilesystemStorageProvider

from persistency import (
    CorruptCheckpointError,
    InvalidIdentifierError,
    PersistencyError,
    ProviderConfigError,
    SerializationError,
    UnsupportedSchemaError,
    provider_from_url,
    validate_id,
)
from persistency._codec import decode_info_line, decode_record
from persistency.testing import make_chain, make_checkpoint
from tests.every_backend import backend, storage_url

__all__ = ["backend", "storage_url"]  # fixtures: every backend of tests/conftest.py and SQLite

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=["Cs"])),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
messages = st.dictionaries(st.text(max_size=10), json_values, max_size=5)


@SETTINGS
@given(st.text(max_size=200))
def test_any_text_is_a_safe_id_or_refused(tmp_path: Path, candidate: str) -> None:
    try:
        validate_id(candidate)
    except InvalidIdentifierError:
        return
    root = tmp_path / "ids"
    p = FilesystemStorageProvider(root, fsync=False)
    p.save_checkpoint(make_checkpoint(candidate, 1).model_copy(update={"session_id": candidate}))
    created = [f.resolve() for f in root.rglob("*") if f.is_file()]
    assert created and all(root.resolve() in f.parents for f in created)
    assert p.list_sessions()[-1:] == [candidate] or candidate in p.list_sessions()
    p.delete_session(candidate)


@SETTINGS
@given(st.lists(messages, min_size=1, max_size=6))
def test_any_json_transcript_round_trips_exactly(transcript: list[dict[str, Any]]) -> None:
    p = provider_from_url(f"memory://hyp-{uuid.uuid4().hex}")
    parent = None
    for step in range(1, len(transcript) + 1):
        cp = make_checkpoint("h", step, parent_id=parent, messages=transcript[:step])
        p.save_checkpoint(cp)
        parent = cp.checkpoint_id
    got = p.get_latest_checkpoint("h")
    assert got is not None
    assert json.dumps(got.messages, sort_keys=True) == json.dumps(transcript, sort_keys=True)


@pytest.mark.parametrize(
    "bad",
    [
        {"content": float("nan")},
        {"content": math.inf},
        {"content": b"bytes"},
        {"content": {1, 2}},
        {"content": object()},
    ],
    ids=["nan", "inf", "bytes", "set", "object"],
)
def test_unstorable_messages_are_named_at_save(tmp_path: Path, bad: dict[str, Any]) -> None:
    p = FilesystemStorageProvider(tmp_path)
    chain = make_chain(p, "s", 2)
    msgs = [*chain[-1].messages, dict(bad, name="mallory", role="assistant")]
    with pytest.raises(SerializationError, match=r"message at step 3 from 'mallory'"):
        p.save_checkpoint(make_checkpoint("s", 3, parent_id=chain[-1].checkpoint_id, messages=msgs))
    latest = p.get_latest_checkpoint("s")
    assert latest is not None and latest.checkpoint_id == chain[-1].checkpoint_id


@SETTINGS
@given(st.binary(max_size=400))
def test_random_bytes_never_escape_the_typed_errors(data: bytes) -> None:
    for decode in (lambda: decode_record(data, "k"), lambda: decode_info_line(data, "k")):
        try:
            decode()
        except (CorruptCheckpointError, UnsupportedSchemaError):
            pass
        except PersistencyError as exc:  # pragma: no cover - any other typed error is a finding
            pytest.fail(f"unexpected {type(exc).__name__}: {exc}")


@SETTINGS
@given(json_values)
def test_valid_json_of_the_wrong_shape_is_corrupt(value: Any) -> None:
    data = json.dumps({"info": value, "payload": value}).encode()
    assume(not isinstance(value, dict))
    with pytest.raises(CorruptCheckpointError):
        decode_record(data, "k")


def test_a_ten_megabyte_message_round_trips(tmp_path: Path) -> None:
    p = FilesystemStorageProvider(tmp_path)
    huge = {"content": "z" * (10 * 1024 * 1024), "role": "assistant", "name": "bob"}
    chain = make_chain(p, "big", 2)
    cp = make_checkpoint("big", 3, parent_id=chain[-1].checkpoint_id, messages=[*chain[-1].messages, huge])
    p.save_checkpoint(cp)
    got = FilesystemStorageProvider(tmp_path).get_checkpoint("big", cp.checkpoint_id)
    assert got.messages[-1]["content"] == huge["content"]


# -- the bad inputs of issue #13 on SQLite (the other backends: tests/test_provider_options.py) ------------
def _deep(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"d": value}
    return value


@pytest.mark.parametrize("limit", ["x", -1, 1.5, True, [1]])
def test_sqlite_bad_limits_are_refused(tmp_path: Path, limit: Any) -> None:
    with provider_from_url(f"sqlite://{tmp_path}/a.db") as p:
        make_chain(p, "s", 2)
        with pytest.raises(ProviderConfigError, match="limit"):
            p.list_checkpoints("s", limit=limit)


@pytest.mark.parametrize(
    ("url", "options", "named"),
    [
        ("sqlite://{tmp}/a.db", {"cache_size": -1}, "cache_size"),
        ("sqlite://{tmp}/a.db", {"fsync": "no"}, "fsync"),
        ("sqlite://{tmp}/a.db", {"bogus": 1}, "bogus"),
        ("sqlite://{tmp}/a.db", {"busy_timeout": -1}, "busy_timeout"),
        ("sqlite://{tmp}/a.db?bogus=1", {}, "bogus"),
        ("sqlite://{tmp}/a.db?busy_timeout=x", {}, "busy_timeout"),
        ("sqlite://{tmp}/a.db?fsync=maybe", {}, "fsync"),
        ("sqlite://{tmp}/nul\x00.db", {}, "NUL"),
        ("sqlite://{tmp}", {}, "folder"),
        ("sqlite://", {}, "names a database file"),
    ],
)
def test_sqlite_bad_options_are_refused_at_construction_naming_them(
    tmp_path: Path, url: str, options: dict[str, Any], named: str
) -> None:
    with pytest.raises(ProviderConfigError, match=named):
        provider_from_url(url.replace("{tmp}", str(tmp_path)), **options)
    assert not (tmp_path / "a.db").exists()


def test_sqlite_a_file_that_is_not_a_database_is_one_cli_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from persistency.cli import app

    notes = tmp_path / "notes.db"
    notes.write_text("a person's notes, not a database\n" * 200)
    with pytest.raises(ProviderConfigError, match="not a database"):
        provider_from_url(f"sqlite://{notes}")
    r = CliRunner().invoke(app, ["sessions", "--url", f"sqlite://{notes}"], env={"PERSISTENCY_URL": ""})
    assert r.exit_code != 0 and r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error: "), r.stderr
    assert notes.read_text().startswith("a person's notes")  # not turned into a database


def test_sqlite_deep_content_is_refused_before_storing_or_round_trips(tmp_path: Path) -> None:
    with provider_from_url(f"sqlite://{tmp_path}/a.db") as p:
        with pytest.raises(SerializationError):
            p.save_checkpoint(make_checkpoint("deep", 1, messages=[{"content": _deep(5000), "role": "user"}]))
        with pytest.raises(SerializationError):
            p.save_checkpoint(make_checkpoint("deep", 1, metadata={"d": _deep(5000)}))
        with pytest.raises(SerializationError):
            p.save_checkpoint(make_checkpoint("deep", 1, agent_states={"a": {"deep": _deep(5000)}}))
        assert p.list_sessions() == []
        cp = make_checkpoint("ok", 1, messages=[{"content": _deep(500), "role": "user"}], metadata={"d": _deep(500)})
        p.save_checkpoint(cp)
        assert p.get_checkpoint("ok", cp.checkpoint_id) == cp


# -- ids read from storage, on every backend ----------------------------------------------------------------
@pytest.mark.parametrize("evil", ["../../../x", "x}{y", "a/b", "..", "-rf", "x\\u0000y"])
def test_a_stored_parent_id_that_is_no_id_is_damage_on_every_backend(storage_url: str, evil: str) -> None:
    """A hostile writer stores a record whose (checksummed) info line names a parent that is no id: it is
    refused as damage naming the id rule before it reaches a path, an S3 key or a Redis key."""
    from persistency.storage import StorageBackend
    from persistency.storage.encode import encode
    from persistency.storage.framing import frame, split
    from persistency.storage.records import NewRecord

    with provider_from_url(storage_url) as p:
        chain = make_chain(p, "s", 1)
        msgs = [*chain[0].messages, {"content": "2"}]
        good = make_checkpoint("s", 2, parent_id=chain[0].checkpoint_id, messages=msgs)
        rec = encode(good, None)
        info, payload = split(rec.data, "new record")
        assert frame(info, payload) == (rec.info_line, rec.payload_line)  # re-framing alone changes nothing
        wanted = b'"parent_id":"' + chain[0].checkpoint_id.encode() + b'"'
        assert wanted in info
        line1, line2 = frame(info.replace(wanted, b'"parent_id":' + json.dumps(evil).encode()), payload)
        assert isinstance(p, StorageBackend)  # every shipped backend: written through its own primitive
        p.write_record(NewRecord(rec.session_id, rec.checkpoint_id, rec.parent_id, None, rec.step,
                                 line1 + b"\n" + line2 + b"\n", line1, line2, rec.lineage))
    with provider_from_url(storage_url) as fresh:
        for call in (lambda: fresh.get_checkpoint("s", good.checkpoint_id), lambda: fresh.get_latest_checkpoint("s"),
                     lambda: fresh.list_checkpoints("s")):
            with pytest.raises(CorruptCheckpointError, match=r"stored checkpoint id|parent"):
                call()
        assert fresh.get_checkpoint("s", chain[0].checkpoint_id) == chain[0]
