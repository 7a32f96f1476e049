"""``persistency copy`` between stores: complete, idempotent, parents first, deltas kept, any backend pair."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from persistency import provider_from_url
from persistency.provider import PersistencyStorageProvider
from persistency.testing import make_chain
from tests.fs_records import record_file
from tests.test_cli import assert_one_line_error, populate, run


def _dump(p: PersistencyStorageProvider) -> dict[str, dict[str, object]]:
    """Every checkpoint of the store, materialized, by session and id."""
    return {
        sid: {i.checkpoint_id: p.get_checkpoint(sid, i.checkpoint_id).model_dump(mode="json")
              for i in p.list_checkpoints(sid)}
        for sid in p.list_sessions()
    }


def _url(backend: str, tmp_path: Path, request: pytest.FixtureRequest, name: str) -> str:
    if backend == "file":
        return str(tmp_path / name)
    if backend == "memory":
        return f"memory://cli-{name}-{uuid.uuid4().hex}"
    return str(request.getfixturevalue(f"{backend}_url"))


def test_copy_everything_then_rerun_copies_nothing(tmp_path: Path) -> None:
    src_url, dst_url = str(tmp_path / "src"), str(tmp_path / "dst")
    src = provider_from_url(src_url)
    populate(src)
    r = run("copy", src_url, dst_url, "--json")
    assert r.exit_code == 0, r.stderr
    assert {s["session_id"]: (s["copied"], s["skipped"]) for s in r.json()["sessions"]} == {
        "conv-1": (10, 0), "conv-2": (2, 0)}
    assert _dump(provider_from_url(dst_url)) == _dump(src)
    again = run("copy", src_url, dst_url, "--json")
    assert again.exit_code == 0
    assert {s["session_id"]: (s["copied"], s["skipped"]) for s in again.json()["sessions"]} == {
        "conv-1": (0, 10), "conv-2": (0, 2)}
    table = run("copy", src_url, dst_url)
    assert table.exit_code == 0 and "conv-1" in table.stdout and "already there" in table.stdout


def test_destination_stores_deltas_against_copied_parents(tmp_path: Path) -> None:
    src_url, dst_url = str(tmp_path / "src"), str(tmp_path / "dst")
    src = provider_from_url(src_url)
    chain = make_chain(src, "long", 40)
    assert run("copy", src_url, dst_url).exit_code == 0
    last = chain[-1].checkpoint_id
    record = record_file(tmp_path / "dst", "long", last).read_bytes()
    doc = json.loads(record)
    payload = doc["payload"]
    assert "base" not in payload  # the base is the parent
    assert doc["info"]["parent_id"] == chain[-2].checkpoint_id and payload["base_step"] == 39
    assert len(payload["messages"]) == 1  # only the new message, not the whole transcript
    assert _dump(provider_from_url(dst_url)) == _dump(src)


def test_an_interrupted_copy_is_finished_by_the_next(tmp_path: Path) -> None:
    src_url, dst_url = str(tmp_path / "src"), str(tmp_path / "dst")
    src, dst = provider_from_url(src_url), provider_from_url(dst_url)
    made = populate(src)
    for cp in made["run1"][:3]:  # as if an earlier copy died after three checkpoints
        dst.save_checkpoint(cp)
    r = run("copy", src_url, dst_url, "--session", "conv-1", "--json")
    assert r.exit_code == 0
    assert r.json()["sessions"] == [{"session_id": "conv-1", "copied": 7, "skipped": 3, "failed": []}]
    assert provider_from_url(dst_url).list_sessions() == ["conv-1"]
    assert _dump(provider_from_url(dst_url))["conv-1"] == _dump(src)["conv-1"]


def test_copy_of_an_unknown_session_is_a_one_line_error(tmp_path: Path) -> None:
    src_url = str(tmp_path / "src")
    populate(provider_from_url(src_url))
    assert_one_line_error(run("copy", src_url, str(tmp_path / "dst"), "-s", "nope"), "no session 'nope'")
    assert_one_line_error(run("copy", src_url, "nosuch://x"), "unknown storage URL scheme", code=2)


def test_copy_reports_checkpoints_it_cannot_read(tmp_path: Path) -> None:
    src_url, dst_url = str(tmp_path / "src"), str(tmp_path / "dst")
    chain = make_chain(provider_from_url(src_url), "s", 4)
    record_file(tmp_path / "src", "s", chain[1].checkpoint_id).write_bytes(b"{not json")
    r = run("copy", src_url, dst_url, "--json")
    assert r.exit_code == 1
    [result] = r.json()["sessions"]
    assert result["copied"] == 1 and {f["checkpoint_id"] for f in result["failed"]} == {
        c.checkpoint_id for c in chain[1:]}


PAIRS = [("file", "memory"), ("memory", "file"), ("file", "redis"), ("redis", "s3"), ("s3", "file"),
         ("s3", "redis"), ("redis_cluster", "file")]


@pytest.mark.parametrize(("src_backend", "dst_backend"), PAIRS, ids=[f"{a}-to-{b}" for a, b in PAIRS])
def test_copy_between_backends(
    src_backend: str, dst_backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    src_url = _url(src_backend, tmp_path, request, "src")
    dst_url = _url(dst_backend, tmp_path, request, "dst")
    src = provider_from_url(src_url)
    try:
        populate(src)
        first = run("copy", src_url, dst_url, "--json")
        assert first.exit_code == 0, first.stderr
        assert sum(s["copied"] for s in first.json()["sessions"]) == 12
        with provider_from_url(dst_url) as dst:
            assert _dump(dst) == _dump(src)
        again = run("copy", src_url, dst_url, "--json")
        assert sum(s["copied"] for s in again.json()["sessions"]) == 0
        assert run("verify", "-u", dst_url).exit_code == 0
    finally:
        src.close()


def test_copy_encrypts_rekeys_and_decrypts_with_keys_from_the_environment(tmp_path: Path) -> None:
    from persistency.encryption import generate_key

    plain_url, enc_url, back_url = (str(tmp_path / n) for n in ("plain", "enc", "back"))
    plain = provider_from_url(plain_url)
    populate(plain)
    keys = {"OLD_KEY": generate_key(), "NEW_KEY": generate_key()}
    r = run("copy", plain_url, enc_url, "--dst-key-env", "OLD_KEY", env=keys)
    assert r.exit_code == 0, r.stderr
    stored = b"".join(f.read_bytes() for f in (tmp_path / "enc").rglob("*.json"))
    assert b"message 1 xxx" not in stored  # payloads sealed
    readable = run("show", "conv-1", "latest", "-u", enc_url, env={"PERSISTENCY_ENCRYPTION_KEY": keys["OLD_KEY"]})
    assert readable.exit_code == 0 and "message 1 xxx" in readable.stdout
    # key rotation: old key in, new key out; then decrypt back to a plain store
    rekeyed = str(tmp_path / "rekeyed")
    assert run("copy", enc_url, rekeyed, "--src-key-env", "OLD_KEY", "--dst-key-env", "NEW_KEY",
               env=keys).exit_code == 0
    assert run("copy", rekeyed, back_url, "--src-key-env", "NEW_KEY", env=keys).exit_code == 0
    assert _dump(provider_from_url(back_url)) == _dump(plain)
    wrong = run("verify", "-u", rekeyed, env={"PERSISTENCY_ENCRYPTION_KEY": keys["OLD_KEY"]})
    assert wrong.exit_code == 1
    missing = run("copy", plain_url, str(tmp_path / "x"), "--dst-key-env", "NO_SUCH_VAR")
    assert missing.exit_code == 2 and "NO_SUCH_VAR" in missing.stderr


def test_a_different_checkpoint_under_the_same_id_is_reported_not_skipped(tmp_path: Path) -> None:
    src_url, dst_url = str(tmp_path / "src"), str(tmp_path / "dst")
    make_chain(provider_from_url(src_url), "s", 3)
    theirs = make_chain(provider_from_url(dst_url), "s", 1)[0]
    clash = theirs.model_copy(update={"metadata": {"other": "store"}})
    assert clash.checkpoint_id == "000001-0000001"
    provider_from_url(str(tmp_path / "dst2")).save_checkpoint(clash)
    r = run("copy", src_url, str(tmp_path / "dst2"), "--json")
    assert r.exit_code == 1
    [result] = r.json()["sessions"]
    assert result["failed"][0]["checkpoint_id"] == "000001-0000001"
    assert "different checkpoint" in result["failed"][0]["message"]
    assert len(result["failed"]) == 3 and result["copied"] == 0  # nothing grafted onto a stranger
    assert run("copy", src_url, dst_url, "--json").exit_code == 0  # the same checkpoint: skipped
