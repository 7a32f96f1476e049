"""Data written by 0.1 stays readable: the bytes 0.1 stored on every backend, written back and read.

``tests/data/v0_1/stored.json`` holds what 0.1 stored (record files, Redis keys, S3 objects with
packs), plain and encrypted, made by ``tests/data/v0_1/generate_v01.py`` on the 0.1 code. Those
records have no checksums (format 1); they load, list, and take new children in format 2.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import redis

from persistency import Checkpoint, provider_from_url
from persistency.testing import make_checkpoint
from tests.data.v0_1.generate_v01 import _write_session

STORED = json.loads((Path(__file__).parent / "data" / "v0_1" / "stored.json").read_text())
KEY = STORED["key"]


class _Recorder:
    """Collects what `_write_session` saves: the checkpoints 0.1 was given."""

    def __init__(self) -> None:
        self.saved: list[Checkpoint] = []

    def save_checkpoint(self, cp: Checkpoint) -> None:
        self.saved.append(cp)


def _expected(sid: str) -> list[Checkpoint]:
    rec = _Recorder()
    _write_session(rec, sid)
    return rec.saved


def _restore_file(root: Path) -> str:
    for name, blob in STORED["file"].items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(blob))
    return str(root)


def _restore_redis(url: str) -> str:
    prefix = url.split("key_prefix=")[1]
    client = redis.Redis.from_url(url.split("?")[0])
    for name, entry in STORED["redis"].items():
        key = prefix + name
        if entry["type"] == "hash":
            client.hset(key, mapping={f: base64.b64decode(v) for f, v in entry["value"].items()})
        else:
            client.zadd(key, {m: 0 for m in entry["value"]})
    return url


def _restore_s3(url: str, server: Any) -> str:
    prefix = url.split("/", 3)[3].split("?")[0]
    c = server.client()
    for name, blob in STORED["s3"].items():
        c.put_object(Bucket=server.bucket, Key=f"{prefix}/{name}", Body=base64.b64decode(blob))
    return url


@pytest.fixture(params=["file", "redis", "s3"])
def legacy_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return _restore_file(tmp_path / "store")
    if request.param == "redis":
        return _restore_redis(request.getfixturevalue("redis_url"))
    return _restore_s3(request.getfixturevalue("s3_url"), request.getfixturevalue("s3_server"))


@pytest.mark.parametrize("sid", ["legacy", "legacy-enc"])
def test_records_of_0_1_load_list_and_take_children(legacy_url: str, sid: str) -> None:
    expected = _expected(sid)
    p = provider_from_url(legacy_url, encryption_key=KEY)
    assert p.list_sessions() == ["legacy", "legacy-enc"]
    for cp in expected:
        got = p.get_checkpoint(sid, cp.checkpoint_id)
        assert got.model_dump(mode="json") == cp.model_dump(mode="json")
    infos = p.list_checkpoints(sid)
    assert [i.checkpoint_id for i in infos] == sorted(c.checkpoint_id for c in expected)
    assert infos == sorted((c.info() for c in expected), key=lambda i: i.checkpoint_id)
    # a new child of an old record is written in the new format and loads with the old chain under it
    parent = p.get_checkpoint(sid, "000002-0000004")
    child = make_checkpoint(sid, 5, run_seq=2, parent_id=parent.checkpoint_id,
                            messages=[*parent.messages, {"content": "new", "role": "user", "name": "bob"}])
    p.save_checkpoint(child)
    fresh = provider_from_url(legacy_url, encryption_key=KEY)
    assert fresh.get_checkpoint(sid, child.checkpoint_id).messages == child.messages
    latest = fresh.get_latest_checkpoint(sid)
    assert latest is not None and latest.checkpoint_id == child.checkpoint_id



def _cli(*args: str) -> Any:
    """The command line in-process (as tests/test_cli.py runs it), with the fixture's key."""
    from tests.test_cli import run

    return run(*args, env={"PERSISTENCY_ENCRYPTION_KEY": KEY})


def test_verify_and_copy_work_across_the_old_and_new_formats(tmp_path: Path) -> None:
    old = _restore_file(tmp_path / "old")
    with provider_from_url(old, encryption_key=KEY) as p:  # a new-format child on an old chain
        parent = p.get_checkpoint("legacy", "000002-0000004")
        p.save_checkpoint(make_checkpoint("legacy", 5, run_seq=2, parent_id=parent.checkpoint_id,
                                          messages=[*parent.messages, {"content": "new", "role": "user"}]))
    verified = _cli("verify", "--url", old, "--json")
    assert verified.exit_code == 0, verified.stdout + verified.stderr
    new = str(tmp_path / "new")
    copied = _cli("copy", old, new)
    assert copied.exit_code == 0, copied.stdout + copied.stderr
    with provider_from_url(old, encryption_key=KEY) as a, provider_from_url(new, encryption_key=KEY) as b:
        for sid in ("legacy", "legacy-enc"):
            assert b.list_checkpoint_ids(sid) == a.list_checkpoint_ids(sid)
            for cid in a.list_checkpoint_ids(sid):
                assert b.get_checkpoint(sid, cid).model_dump() == a.get_checkpoint(sid, cid).model_dump()
    assert all(f.read_bytes().startswith(b'{"v":2') for f in (tmp_path / "new").rglob("*.json"))
    assert _cli("verify", "--url", new).exit_code == 0
    # damage in an old-format record is reported by verify, naming it
    victim = tmp_path / "old" / "legacy" / "checkpoints" / "000001-0000002.json"
    victim.write_bytes(victim.read_bytes().replace(b'"format":1', b'"format":7'))
    damaged = _cli("verify", "--url", old)
    assert damaged.exit_code == 1 and "000001-0000002" in damaged.stdout + damaged.stderr
