"""Wrote ``stored.json``: raw bytes that ag2-persistency 0.1 stored, on every backend (run once, on 0.1).

Kept for the record of how the fixture was made; it needs the 0.1 code to reproduce it. Run with
``pytest tests/data/v0_1/generate_v01.py -p tests.servers.redis_server -p tests.servers.s3_server``
on a 0.1 checkout. ``test_legacy_format.py`` writes these bytes back and reads them.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import redis

from persistency import provider_from_url
from persistency.testing import make_checkpoint

KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="  # a fixed test key, not a secret
OUT = Path(__file__).with_name("stored.json")


def _write_session(p: Any, sid: str) -> None:
    msgs: list[dict[str, Any]] = []
    parent = None
    for step in range(1, 8):
        msgs.append({"content": f"message {step} ✓", "role": "user" if step == 1 else "assistant",
                     "name": ("alice", "bob")[step % 2]})
        states = {"alice": {"n": step // 3}, "bob": {"n": 0}, "carol": {"x": 1}}
        cp = make_checkpoint(sid, step, parent_id=parent, messages=list(msgs), agent_states=states,
                             metadata={"k": step // 2, "fixed": "same"})
        p.save_checkpoint(cp)
        parent = cp.checkpoint_id
    end = make_checkpoint(sid, 7, parent_id=parent, messages=list(msgs), kind="run_end", end_reason="error",
                          end_seq=1, metadata={"k": 3, "fixed": "same"})
    p.save_checkpoint(end.model_copy(update={"error": "boom: the model failed"}))
    fork = {"content": "branch", "role": "assistant", "name": "carol"}
    branch = make_checkpoint(sid, 4, run_seq=2, parent_id="000001-0000003", messages=[*msgs[:3], fork])
    p.save_checkpoint(branch)


def _sessions(url: str, key: bool) -> None:
    with provider_from_url(url, **({"encryption_key": KEY} if key else {})) as p:
        _write_session(p, "legacy-enc" if key else "legacy")


def test_generate(tmp_path: Path, redis_url: str, s3_url: str, s3_server: Any) -> None:
    out: dict[str, Any] = {"key": KEY}
    fs_root = tmp_path / "fs"
    for key in (False, True):
        _sessions(str(fs_root), key)
    out["file"] = {str(f.relative_to(fs_root)): base64.b64encode(f.read_bytes()).decode()
                   for f in sorted(fs_root.rglob("*.json"))}
    for key in (False, True):
        _sessions(redis_url, key)
    prefix = redis_url.split("key_prefix=")[1]
    client = redis.Redis.from_url(redis_url.split("?")[0])
    out["redis"] = {}
    for k in sorted(client.keys(f"{prefix}:*")):
        name = k.decode()[len(prefix):]
        kind = client.type(k).decode()
        if kind == "hash":
            value = {f.decode(): base64.b64encode(v).decode() for f, v in client.hgetall(k).items()}
        else:
            value = [m.decode() for m in client.zrange(k, 0, -1)]
        out["redis"][name] = {"type": kind, "value": value}
    for key in (False, True):
        _sessions(s3_url + "&pack_every=3", key)
    s3_prefix = s3_url.split("/", 3)[3].split("?")[0]
    c = s3_server.client()
    objs = c.list_objects_v2(Bucket=s3_server.bucket, Prefix=s3_prefix + "/")["Contents"]
    out["s3"] = {o["Key"][len(s3_prefix) + 1:]: base64.b64encode(
        c.get_object(Bucket=s3_server.bucket, Key=o["Key"])["Body"].read()).decode() for o in objs}
    OUT.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
