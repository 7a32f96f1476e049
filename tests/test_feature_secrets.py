"""Secrets never reach storage: distinctive values in every secret-bearing field of every agent's and
the manager's llm_config (and in default headers, URLs and an error message), a chat on every
backend, then every stored byte is scanned: zero occurrences."""

from __future__ import annotations

import asyncio
import gzip
import os
import uuid
import zlib
from pathlib import Path
from typing import Any

import pytest
from autogen import Agent, ConversableAgent, GroupChat, GroupChatManager, LLMConfig

from persistency import Persistency, provider_from_url
from persistency.redaction import REDACTED
from persistency.scripted import ScriptedModelClient
from tests.helpers_ag2 import Crash


class Secrets:
    """Unique secret values, one per field, with their prefix to scan for."""

    def __init__(self) -> None:
        self.prefix = f"S3CR3T{uuid.uuid4().hex[:12]}"
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return f"{self.prefix}x{self.n}"


def secret_llm_config(s: Secrets, script: list[str]) -> LLMConfig:
    """An llm_config with a secret in every field AG2 knows to carry one (scripted, so offline)."""
    client: dict[str, Any] = {}
    try:
        import httpx

        client = {"http_client": httpx.Client(headers={"Authorization": f"Bearer {s()}"})}
    except ImportError:  # pragma: no cover
        pass
    common = {"model_client_cls": "ScriptedModelClient", "script": script}
    token = s()
    return LLMConfig(
        {
            "model": "scripted",
            "api_key": s(),
            "base_url": f"https://user:{s()}@example.invalid/v1?api-key={s()}",
            "default_headers": {"Authorization": f"Bearer {s()}", "X-Api-Key": s(), "X-Trace-Id": s()},
            **client,
            **common,
        },
        {
            "api_type": "bedrock",
            "model": "m",
            "aws_access_key": s(),
            "aws_secret_key": s(),
            "aws_session_token": s(),
            "aws_region": "us-east-1",
            **common,
        },
        {
            "api_type": "azure",
            "model": "m",
            "api_key": s(),
            "azure_ad_token_provider": lambda: token,
            "base_url": "https://x.openai.azure.com",
            "api_version": "2024-06-01",
            **common,
        },
        {
            "api_type": "google",
            "model": "gemini",
            "api_key": s(),
            "credentials": s(),
            "google_application_credentials": s(),
            "project_id": "p",
            "location": "l",
            **common,
        },
        {
            "api_type": "anthropic",
            "model": "claude",
            "api_key": s(),
            "aws_access_key": s(),
            "aws_secret_key": s(),
            "aws_session_token": s(),
            "gcp_auth_token": s(),
            "gcp_project_id": "p",
            **common,
        },
    )


def build_secret_chat(s: Secrets, *, fail: bool = False) -> tuple[ConversableAgent, GroupChatManager]:
    agents = []
    for name in ("solver", "checker"):
        agent = ConversableAgent(
            name, llm_config=secret_llm_config(s, [f"{name} speaks"] * 5), human_input_mode="NEVER"
        )
        for _ in range(5):  # AG2 activates one config entry per registration
            agent.register_model_client(ScriptedModelClient)
        agents.append(agent)
    user = ConversableAgent("user", llm_config=False, human_input_mode="NEVER", default_auto_reply="go on")
    if fail:  # an upstream error that echoes the solver's api key
        key = agents[0].llm_config.config_list[0].api_key.get_secret_value()

        def failing(recipient: Any, messages: Any = None, sender: Agent | None = None, config: Any = None) -> Any:
            if len(messages or []) >= 3:
                raise Crash(f"upstream said key={key} is wrong")
            return False, None

        user.register_reply([Agent, None], failing, position=0)
    gc = GroupChat(
        [user, *agents],
        messages=[],
        max_round=6,
        speaker_selection_method="round_robin",
        select_speaker_auto_llm_config=secret_llm_config(s, ["solver"]),
    )
    manager = GroupChatManager(gc, name="manager", llm_config=secret_llm_config(s, ["unused"]))
    return user, manager


def raw_bytes(backend: str, url: str, request: pytest.FixtureRequest) -> bytes:
    """Every byte the backend holds for this test (files, memory objects, Redis values, S3 objects)."""
    chunks: list[bytes] = []
    if backend == "file":
        for root, _, files in os.walk(url):
            for f in files:
                chunks.append(Path(root, f).read_bytes())
    elif backend == "memory":
        import fsspec

        fs = fsspec.filesystem("memory")
        base = url.split("://", 1)[1]
        chunks += [fs.cat_file(p) for p in fs.find("/" + base.lstrip("/"))]
    elif backend in ("redis", "redis_cluster"):
        import redis

        base = url.split("?", 1)[0]
        client: Any = redis.RedisCluster.from_url(base) if backend == "redis_cluster" else redis.Redis.from_url(base)
        for key in client.scan_iter(count=1000):
            chunks.append(key)
            kind = client.type(key).decode()
            if kind == "string":
                chunks.append(client.get(key) or b"")
            elif kind == "hash":
                for k, v in client.hgetall(key).items():
                    chunks += [k, v]
            elif kind == "list":
                chunks += client.lrange(key, 0, -1)
            elif kind == "set":
                chunks += list(client.smembers(key))
            elif kind == "zset":
                chunks += client.zrange(key, 0, -1)
            elif kind == "stream":
                chunks += [repr(e).encode() for e in client.xrange(key)]
    elif backend == "s3":
        server = request.getfixturevalue("s3_server")
        c = server.client()
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=server.bucket):
            for obj in page.get("Contents", []):
                chunks.append(obj["Key"].encode())
                chunks.append(c.get_object(Bucket=server.bucket, Key=obj["Key"])["Body"].read())
    return b"\n".join(b"\n".join(_expanded(c)) for c in chunks)


def _expanded(chunk: bytes) -> list[bytes]:
    """The chunk and what it decompresses to: S3 packs are gzip, Redis payloads zlib after a header
    line, so a scan of the raw bytes alone could miss a secret stored compressed."""
    out = [chunk]
    for candidate in (chunk, chunk.split(b"\n", 1)[-1]):
        for decompress in (gzip.decompress, zlib.decompress):
            try:
                out.append(decompress(candidate))
            except (OSError, zlib.error, EOFError):
                pass
    return out


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_no_secret_in_any_stored_byte(
    storage_url: str, backend: str, request: pytest.FixtureRequest, is_async: bool
) -> None:
    s = Secrets()
    provider = provider_from_url(storage_url)
    user, manager = build_secret_chat(s)
    Persistency(provider, "secrets", metadata={"purpose": "scan"}).attach(manager)
    if is_async:
        asyncio.run(user.a_initiate_chat(manager, message="solve it", silent=True))
    else:
        user.initiate_chat(manager, message="solve it", silent=True)
    # a failing run whose error text carries a secret
    user2, manager2 = build_secret_chat(s, fail=True)
    Persistency(provider, "secrets2").attach(manager2)
    with pytest.raises(Crash):
        user2.initiate_chat(manager2, message="solve it", silent=True)

    assert s.n > 60
    end = provider.get_latest_checkpoint("secrets")
    assert end is not None and end.run_complete and end.step == 6
    solver_cfg = end.agent_states["solver"]["llm_config"]["config_list"]
    assert solver_cfg[0]["api_key"] == REDACTED and solver_cfg[1]["aws_secret_key"] == REDACTED
    failed = provider.get_latest_checkpoint("secrets2")
    assert failed is not None and failed.end_reason == "error" and REDACTED in (failed.error or "")

    materialized = "".join(
        cp.model_dump_json()
        for sid in ("secrets", "secrets2")
        for cp in (provider.get_checkpoint(sid, i.checkpoint_id) for i in provider.list_checkpoints(sid))
    )
    assert s.prefix not in materialized
    data = raw_bytes(backend, storage_url, request)
    assert data, "the scan found nothing stored: it would prove nothing"
    # the scan reads what is stored as plain text (compressed payloads included), or it proves nothing
    assert b"solve it" in data
    assert s.prefix.encode() not in data
