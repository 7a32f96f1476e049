"""Redis-specific behaviour, on a real redis-server and a real three-node Redis Cluster.

What the conformance suite cannot see: round trips per operation, TTLs, hash-tag slots, races
between processes, typed errors without secrets, damaged keys, the async twins on redis.asyncio,
the bytes a long session costs, and the session index at 10,000 sessions.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import random
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
import redis.asyncio.connection
import redis.cluster
import redis.connection
from persistency.providers.redis import RedisStorageProvider
from persistency.providers.redis.calls import drive
from persistency.providers.redis.plans import Generations
from redis.crc import key_slot

from persistency import provider_from_url
from persistency.encryption import generate_key
from persistency.errors import (
    CheckpointConflictError,
    CorruptCheckpointError,
    EncryptionError,
    PersistencyError,
    ProviderConfigError,
    SessionDeletedError,
    StorageUnavailableError,
)
from persistency.ids import checkpoint_id_for
from persistency.models import Checkpoint
from persistency.provider import PersistencyStorageProvider
from persistency.storage.codec import encode
from persistency.testing import ProviderConformance, make_chain, make_checkpoint
from tests.servers.redis_server import free_port

SECRET = "s3cr3t-Pa55word"


@pytest.fixture(params=["redis", "redis_cluster"])
def url(request: pytest.FixtureRequest) -> str:
    """A fresh namespace on the standalone server, then on the cluster."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def provider(url: str) -> Iterator[RedisStorageProvider]:
    p = provider_from_url(url)
    assert isinstance(p, RedisStorageProvider)
    try:
        yield p
    finally:
        p.close()


def admin_client(url: str) -> Any:
    """A plain redis-py client on the same server(s), to look at (or damage) the keys."""
    base = url.split("?", 1)[0]
    probe = redis.Redis.from_url(base)
    try:
        cluster = str(probe.info("cluster").get("cluster_enabled", 0)) == "1"
    finally:
        probe.close()
    return redis.cluster.RedisCluster.from_url(base) if cluster else redis.Redis.from_url(base)


@pytest.fixture
def admin(url: str) -> Iterator[Any]:
    client = admin_client(url)
    try:
        yield client
    finally:
        client.close()


def prefix_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["key_prefix"][0]


def session_keys(admin: Any, url: str, session_id: str) -> list[bytes]:
    pattern = f"{prefix_of(url)}:{{{session_id}}}:*"
    return sorted(set(admin.scan_iter(match=pattern, count=1000)))


@contextmanager
def round_trips() -> Iterator[list[int]]:
    """Count requests sent to Redis (a pipeline or a script is one), sync and async connections."""
    counter = [0, 0]  # requests, bytes sent
    sync_orig = redis.connection.AbstractConnection.send_packed_command
    async_orig = redis.asyncio.connection.AbstractConnection.send_packed_command

    def size(command: Any) -> int:
        return len(command) if isinstance(command, (bytes, str)) else sum(len(c) for c in command)

    def sync_counting(self: Any, command: Any, check_health: bool = True) -> Any:
        counter[0] += 1
        counter[1] += size(command)
        return sync_orig(self, command, check_health)

    async def async_counting(self: Any, command: Any, check_health: bool = True) -> Any:
        counter[0] += 1
        counter[1] += size(command)
        return await async_orig(self, command, check_health)

    mp = pytest.MonkeyPatch()
    mp.setattr(redis.connection.AbstractConnection, "send_packed_command", sync_counting)
    mp.setattr(redis.asyncio.connection.AbstractConnection, "send_packed_command", async_counting)
    try:
        yield counter
    finally:
        mp.undo()


_WORDS = ("the agent checks invoice total against order lines then asks reviewer about tax rate "
          "refund policy customer shipping address carrier delay estimate budget quarter report "
          "summary draft revise approve reject escalate manager ticket priority deadline python "
          "function error retry timeout database query index latency cache memory vector").split()


def _message(i: int, size: int = 500) -> dict[str, Any]:
    """A ~``size``-character message of varied words (not a repeated phrase that compresses to nothing)."""
    rng = random.Random(i)
    words: list[str] = [f"message {i}:"]
    while sum(len(w) + 1 for w in words) < size:
        words.append(rng.choice(_WORDS) + (str(rng.randint(0, 9999)) if rng.random() < 0.2 else ""))
    text = " ".join(words)[:size]
    names = ("alice", "bob", "carol")
    return {"content": text, "role": "user" if i == 0 else "assistant", "name": names[i % 3]}


def save_long_session(provider: PersistencyStorageProvider, session_id: str, steps: int,
                      size: int = 500) -> list[dict[str, Any]]:
    """Save ``steps`` checkpoints of one run, each one message longer; returns the transcript."""
    msgs: list[dict[str, Any]] = []
    parent = None
    for step in range(1, steps + 1):
        msgs.append(_message(step - 1, size))
        cp = Checkpoint.model_construct(
            **make_checkpoint(session_id, step, parent_id=parent, messages=[]).model_dump(),
        )
        cp.messages = list(msgs)
        provider.save_checkpoint(cp)
        parent = cp.checkpoint_id
    return msgs


# -- round trips -------------------------------------------------------------------------------------
def test_a_save_is_one_round_trip_at_step_10_and_at_step_1000(provider: RedisStorageProvider) -> None:
    save_long_session(provider, "rt", 1000, size=100)
    save_long_session(provider, "short", 10, size=100)
    costs = {}
    for sid, step in (("short", 11), ("rt", 1001), ("rt", 1002)):
        msgs = [_message(i, 100) for i in range(step)]
        cp = make_checkpoint(sid, step, parent_id=checkpoint_id_for(1, step - 1), messages=msgs)
        with round_trips() as n:
            provider.save_checkpoint(cp)
        costs[step] = tuple(n)
    assert [c[0] for c in costs.values()] == [1, 1, 1]
    assert costs[1001][1] <= costs[11][1] + 64  # the same bytes on the wire at step 1,000 as at step 10


def test_loading_the_latest_of_a_1000_step_session_takes_at_most_3_round_trips(
    provider: RedisStorageProvider,
) -> None:
    msgs = save_long_session(provider, "big", 1000, size=100)
    fresh = RedisStorageProvider(provider.url)
    try:
        fresh.list_sessions()  # connect (and detect cluster) outside the count
        fresh.list_checkpoints("big", limit=1)  # and load the scripts (once per server)
        fresh.get_checkpoint("big", checkpoint_id_for(1, 1))
        with round_trips() as n:
            latest = fresh.get_latest_checkpoint("big")
        assert latest is not None and latest.step == 1000 and latest.messages == msgs
        assert n[0] <= 3, n[0]
        with round_trips() as n:
            mid = fresh.get_checkpoint("big", checkpoint_id_for(1, 500))
        assert mid.messages == msgs[:500]
        assert n[0] <= 3, n[0]
        with round_trips() as n:
            infos = fresh.list_checkpoints("big", limit=10)
        assert [i.step for i in infos] == list(range(991, 1001))
        assert n[0] <= 2, n[0]
    finally:
        fresh.close()


def test_loading_the_latest_is_at_most_2_round_trips_and_one_decode_of_the_transcript(
    provider: RedisStorageProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    from persistency.storage import decode

    msgs = save_long_session(provider, "one-pass", 300, size=300)
    fresh = RedisStorageProvider(provider.url)
    parses: list[int] = []
    singles: list[str] = []
    real_loads, real_decode = getattr(decode, "loads"), decode.decode_record

    def loads(data: bytes | str, where: str) -> Any:
        parses.append(len(data))
        return real_loads(data, where)

    def decode_one(data: bytes, where: str, *args: Any) -> Any:
        singles.append(where)
        return real_decode(data, where, *args)

    try:
        fresh.list_sessions()  # connect (and detect cluster) outside the count
        fresh.list_checkpoints("one-pass", limit=1)
        monkeypatch.setattr(decode, "loads", loads)
        monkeypatch.setattr(decode, "decode_record", decode_one)
        with round_trips() as n:
            latest = fresh.get_latest_checkpoint("one-pass")
        assert latest is not None and latest.messages == msgs
        assert n[0] <= 2, n[0]  # the load script (EVALSHA; a server that lost it: + EVAL)
        assert len(parses) <= 2, parses  # the infos as one array, the payloads as another
        assert singles == []
    finally:
        fresh.close()


def test_a_save_in_a_new_process_reads_its_parent_once(provider: RedisStorageProvider) -> None:
    chain = make_chain(provider, "cold", 50)
    other = RedisStorageProvider(provider.url, key_prefix=provider.key_prefix)
    try:
        other.list_sessions()
        with round_trips() as n:
            make_chain(other, "cold", 3, start=chain[-1])
        assert n[0] <= 5  # parent lineage (1, +1 for keyframes outside its chain) then 1 per save
        got = other.get_checkpoint("cold", checkpoint_id_for(1, 53))
        assert got.step == 53 and got.messages[:50] == chain[-1].messages
    finally:
        other.close()
    resumed = RedisStorageProvider(provider.url)  # a worker resuming: load the latest, then continue
    try:
        latest = resumed.get_latest_checkpoint("cold")
        assert latest is not None
        with round_trips() as n:
            make_chain(resumed, "cold", 1, start=latest)
        assert n[0] == 1
    finally:
        resumed.close()


# -- keys: slots, TTL, delete ---------------------------------------------------------------------------
def test_every_key_of_a_session_shares_one_slot(provider: RedisStorageProvider, url: str, admin: Any) -> None:
    make_chain(provider, "slot-me", 5)
    keys = session_keys(admin, url, "slot-me")
    assert {k.rsplit(b":", 1)[1] for k in keys} == {b"ids", b"info", b"payload"}
    assert len({key_slot(k) for k in keys}) == 1
    assert all(b"{slot-me}" in k for k in keys)


def test_ttl_is_set_on_every_key_and_refreshed_by_every_save(url: str, admin: Any) -> None:
    with provider_from_url(url, ttl=100) as p:
        chain = make_chain(p, "ttl", 2)
        keys = session_keys(admin, url, "ttl")
        assert len(keys) == 3
        assert all(90_000 < admin.pttl(k) <= 100_000 for k in keys)
        for k in keys:
            admin.pexpire(k, 5_000)
        make_chain(p, "ttl", 1, start=chain[-1])
        assert all(90_000 < admin.pttl(k) <= 100_000 for k in keys)
        assert admin.pttl(f"{prefix_of(url)}:sessions") == -1  # the index never expires


def test_ttl_from_the_url_and_expired_sessions_leave_the_index(url: str, admin: Any) -> None:
    with provider_from_url(f"{url}&ttl=60") as p:
        make_chain(p, "short-lived", 1)
        keys = session_keys(admin, url, "short-lived")
        assert keys and all(50_000 < admin.pttl(k) <= 60_000 for k in keys)
        with provider_from_url(url) as keeper:
            make_chain(keeper, "kept", 1)
            assert p.list_sessions() == ["kept", "short-lived"]
            for k in keys:  # the TTL runs out (now, rather than in a minute)
                admin.pexpire(k, 1)
            time.sleep(0.05)
            assert p.list_sessions() == ["kept"]
            assert admin.zrange(f"{prefix_of(url)}:sessions", 0, -1) == [b"kept"]  # pruned from the index


def test_delete_removes_every_key_and_the_index_entry(provider: RedisStorageProvider, url: str, admin: Any) -> None:
    make_chain(provider, "gone", 3)
    make_chain(provider, "stays", 1)
    provider.delete_session("gone")
    # p12: only the generation counter outlives the session (it is what a delete advances)
    assert [k for k in session_keys(admin, url, "gone") if not k.endswith(b":gen")] == []
    assert provider.session_generation("gone") == 1
    assert admin.zrange(f"{prefix_of(url)}:sessions", 0, -1) == [b"stays"]
    assert provider.list_checkpoints("gone") == []


def test_an_index_entry_without_a_session_is_not_listed(provider: RedisStorageProvider, url: str, admin: Any) -> None:
    make_chain(provider, "real", 1)
    admin.zadd(f"{prefix_of(url)}:sessions", {"ghost": 0})  # e.g. a crash after indexing, before the record
    assert provider.list_sessions() == ["real"]


def test_listing_never_reads_a_payload(provider: RedisStorageProvider, url: str, admin: Any) -> None:
    chain = make_chain(provider, "lst", 6)
    admin.delete(f"{prefix_of(url)}:{{lst}}:payload")  # listing must not notice
    assert [i.checkpoint_id for i in provider.list_checkpoints("lst")] == [c.checkpoint_id for c in chain]
    assert [i.metadata for i in provider.list_checkpoints("lst", limit=2)] == [c.metadata for c in chain[-2:]]


def test_keyword_options_win_over_the_url(url: str, admin: Any) -> None:
    with provider_from_url(url, key_prefix="kw-" + uuid.uuid4().hex) as p:
        assert isinstance(p, RedisStorageProvider)
        make_chain(p, "kw", 1)
        assert p.key_prefix != prefix_of(url)
        assert session_keys(admin, url, "kw") == []
        p.delete_session("kw")


def test_keyword_credentials_db_and_timeouts_win_over_the_url(redis_url: str) -> None:
    parts = urlsplit(redis_url)
    bad_user = parts._replace(netloc=f"nobody:{SECRET}@{parts.netloc}",
                              query=f"{parts.query}&socket_timeout=1&db=1").geturl()
    with provider_from_url(bad_user, username="default", password="any", db=3, socket_timeout=7.5) as p:
        make_chain(p, "kw-db", 1)  # "nobody" would be refused; the keyword's "default" user is not
        assert isinstance(p, RedisStorageProvider)
        kwargs = p._conn.sync_client().connection_pool.connection_kwargs
        assert (kwargs["db"], kwargs["socket_timeout"], kwargs["username"]) == (3, 7.5, "default")
        with redis.Redis(host=parts.hostname or "", port=parts.port or 6379, db=3) as db3:
            assert db3.exists(f"{prefix_of(redis_url)}:{{kw-db}}:ids")
        assert SECRET not in repr(p)
        p.delete_session("kw-db")


def test_list_sessions_is_fast_for_10000_sessions(url: str) -> None:
    with provider_from_url(url) as p:
        sids = [f"s{i:05d}" for i in range(10_000)]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda s: p.save_checkpoint(make_checkpoint(s, 1)), sids))
        p.list_sessions()
        t0 = time.perf_counter()
        with round_trips() as n:
            got = p.list_sessions()
        elapsed = time.perf_counter() - t0
        assert got == sids
        assert n[0] <= 4  # the index, then one pipeline of EXISTS checks (split by node on a cluster)
        print(f"list_sessions of 10,000: {elapsed * 1000:.0f} ms")
        assert elapsed < 2.0, elapsed


# -- create-only across processes ------------------------------------------------------------------------
def _race_worker(url: str, parent_json: str, writer: int, barrier: Any, results: Any) -> None:
    """One process racing to save checkpoint 000001-0000004 with its own content."""
    try:
        parent = Checkpoint.model_validate_json(parent_json)
        msgs = [*parent.messages, {"content": f"writer {writer}", "role": "assistant", "name": "bob"}]
        cp = make_checkpoint(parent.session_id, parent.step + 1, parent_id=parent.checkpoint_id, messages=msgs,
                             metadata={"writer": writer})
        with provider_from_url(url) as p:
            p.list_sessions()  # connected before the start line
            barrier.wait(timeout=60)
            try:
                p.save_checkpoint(cp)
                results.put(("won", writer))
            except CheckpointConflictError:
                results.put(("lost", writer))
    except BaseException as exc:  # report, never hang the parent
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def _continue_worker(url: str, session_id: str, writer: int, barrier: Any, results: Any) -> None:
    """One process continuing the latest checkpoint for 5 steps, stopping at its first conflict."""
    try:
        with provider_from_url(url) as p:
            p.list_sessions()
            barrier.wait(timeout=60)
            latest = p.get_latest_checkpoint(session_id)
            assert latest is not None
            saved = 0
            msgs = list(latest.messages)
            parent = latest.checkpoint_id
            for step in range(latest.step + 1, latest.step + 6):
                msgs.append({"content": f"writer {writer} step {step}", "role": "assistant", "name": "bob"})
                cp = make_checkpoint(session_id, step, parent_id=parent, messages=list(msgs))
                try:
                    p.save_checkpoint(cp)
                except CheckpointConflictError:
                    break
                saved += 1
                parent = cp.checkpoint_id
            results.put(("saved", saved))
    except BaseException as exc:
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def _run_processes(target: Any, args_for: Any, n: int) -> list[tuple[str, Any]]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(n)
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args_for(i), barrier, results)) for i in range(n)]
    for proc in procs:
        proc.start()
    out = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    return out


def test_processes_racing_for_one_id_exactly_one_wins(provider: RedisStorageProvider, url: str) -> None:
    chain = make_chain(provider, "prace", 3)
    n = 6
    out = _run_processes(_race_worker, lambda i: (url, chain[-1].model_dump_json(), i), n)
    assert not [o for o in out if o[0] == "error"], out
    winners = [w for kind, w in out if kind == "won"]
    assert len(winners) == 1, out
    assert sum(1 for kind, _ in out if kind == "lost") == n - 1
    got = provider.get_checkpoint("prace", checkpoint_id_for(1, 4))
    assert got.metadata == {"writer": winners[0]}
    assert got.messages[:-1] == chain[-1].messages
    assert [i.step for i in provider.list_checkpoints("prace")] == [1, 2, 3, 4]


def test_processes_continuing_one_run_never_fork_it(provider: RedisStorageProvider, url: str) -> None:
    make_chain(provider, "pcont", 3)
    out = _run_processes(_continue_worker, lambda i: (url, "pcont", i), 4)
    assert not [o for o in out if o[0] == "error"], out
    infos = provider.list_checkpoints("pcont")
    assert [i.step for i in infos] == list(range(1, len(infos) + 1))
    assert len(infos) >= 3 + 5
    prev: Checkpoint | None = None
    for info in infos:  # one linear history: each transcript extends its parent's
        cp = provider.get_checkpoint("pcont", info.checkpoint_id)
        if prev is not None:
            assert cp.parent_id == prev.checkpoint_id
            assert cp.messages[:-1] == prev.messages
        prev = cp


def test_a_retried_save_is_not_taken_for_a_conflict(
    provider: RedisStorageProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save whose reply was lost is sent again by redis-py's Retry; its token makes it idempotent."""
    import persistency.providers.redis.plans as mod

    monkeypatch.setattr(mod.secrets, "token_hex", lambda n: "same-token")
    cp = make_checkpoint("retry", 1)
    provider.save_checkpoint(cp)
    provider.save_checkpoint(cp)  # the same attempt replayed: success, not a conflict
    monkeypatch.undo()
    with pytest.raises(CheckpointConflictError):
        provider.save_checkpoint(cp)  # a different attempt: conflict


def _recreated_under(provider: RedisStorageProvider, url: str) -> Checkpoint:
    """The provider saved 3 steps; another process deletes the session and saves step 3 again (same id)."""
    first = make_chain(provider, "again", 3)  # the provider caches the lineage of step 3
    with provider_from_url(url) as other:
        other.delete_session("again")
        msgs = [{"content": f"other {i}", "role": "user", "name": "carol"} for i in range(3)]
        other.save_checkpoint(make_checkpoint("again", 3, messages=msgs, agent_states={"z": {"k": 1}}))
    return make_checkpoint("again", 4, parent_id=first[-1].checkpoint_id,
                           messages=[*msgs, {"content": "child", "role": "user", "name": "alice"}],
                           agent_states={"z": {"k": 1}})


def test_a_parent_recreated_by_another_process_is_refused_by_the_generation(
        provider: RedisStorageProvider, url: str) -> None:
    child = _recreated_under(provider, url)
    with pytest.raises(SessionDeletedError, match="generation 0 -> 1"):  # as on SQLite: never a splice
        provider.save_checkpoint(child)
    assert provider.list_checkpoint_ids("again") == [checkpoint_id_for(1, 3)]


def test_a_parent_recreated_under_an_instance_that_forgot_the_generation_is_reread(
        provider: RedisStorageProvider, url: str) -> None:
    """The fallback when the generation is not known (one of more than 100,000 sessions): the parent's
    signature shows the parent changed, the save is encoded again against what is stored."""
    child = _recreated_under(provider, url)
    provider._layout.gens = Generations()  # forgotten
    provider.save_checkpoint(child)
    got = provider.get_checkpoint("again", child.checkpoint_id)
    assert got.model_dump(mode="json") == child.model_dump(mode="json")


# -- errors ----------------------------------------------------------------------------------------------
def _assert_clean(exc: BaseException, *needles: str) -> None:
    text = str(exc)
    assert SECRET not in text and SECRET not in repr(exc)
    for needle in needles:
        assert needle in text, text


def test_unreachable_server_is_a_typed_error_without_the_password() -> None:
    port = free_port()
    for url in (f"redis://user:{SECRET}@127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/0?password={SECRET}"):
        p = provider_from_url(url, retries=1, retry_backoff_cap=0.01)
        assert SECRET not in repr(p)
        t0 = time.monotonic()
        with pytest.raises(StorageUnavailableError) as info:
            p.get_latest_checkpoint("s")
        assert time.monotonic() - t0 < 10
        _assert_clean(info.value, f"127.0.0.1:{port}")
        assert info.value.__cause__ is not None
        p.close()


async def test_unreachable_server_async_is_a_typed_error() -> None:
    port = free_port()
    p = provider_from_url(f"redis://:{SECRET}@127.0.0.1:{port}/0", retries=0)
    with pytest.raises(StorageUnavailableError) as info:
        await p.asave_checkpoint(make_checkpoint("s", 1))
    _assert_clean(info.value, f"127.0.0.1:{port}")
    await p.aclose()


def test_wrong_password_is_a_typed_error_without_the_password(url: str) -> None:
    parts = urlsplit(url)
    bad = parts._replace(netloc=f"nobody:{SECRET}@{parts.netloc}").geturl()
    with provider_from_url(bad, retries=0) as p:
        with pytest.raises(StorageUnavailableError) as info:
            p.save_checkpoint(make_checkpoint("s", 1))
        _assert_clean(info.value, parts.hostname or "", "Authentication")


@pytest.mark.parametrize(
    "bad",
    [
        "redis://127.0.0.1:notaport/0",
        "redis://127.0.0.1:6379/0?ttl=soon",
        "redis://127.0.0.1:6379/0?ttl=INF",
        "redis://127.0.0.1:6379/0?retry_backoff_cap=nan",
        "redis://127.0.0.1:99999/0",
        "redis://127.0.0.1:6379/0?cluster=maybe",
        "redis://127.0.0.1:6379/0?key_prefix=%7Bbrace%7D",
        "redis://127.0.0.1:6379/0?no_such_option=1",
        "redis://127.0.0.1:6379/0?socket_timeout=abc",
        f"redis://u:{SECRET}@127.0.0.1:6379/0?retries=-1",
    ],
)
def test_malformed_url_is_a_config_error(bad: str) -> None:
    with pytest.raises(ProviderConfigError) as info:
        provider_from_url(bad)
    _assert_clean(info.value)


@pytest.mark.parametrize("bad", [
    f"redis://:{SECRET}#x@127.0.0.1:6379/0",
    f"redis://u:{SECRET}?x@127.0.0.1:6379/0",
    f"redis://u:{SECRET}/x@127.0.0.1:6379/0",
    f"redis://127.0.0.1:6379/0#?password={SECRET}",
    f"redis://127.0.0.1:6379/0?pasword={SECRET}",
    f"redis://127.0.0.1:6379/0??password={SECRET}",
    f"redis://{SECRET}@127.0.0.1:6379/0",
    f"redis://u:{SECRET.replace('-', '%2D')}@127.0.0.1:notaport/0",
])
def test_a_password_is_never_echoed_however_the_url_mangles_it(bad: str) -> None:
    """A password with an unencoded / ? #, under a mistyped name, or percent-encoded stays out of
    every message and repr (the display URL is built from the raw text, not from urlsplit)."""
    try:
        p = provider_from_url(bad)
    except ProviderConfigError as exc:
        _assert_clean(exc)
        return
    assert SECRET not in repr(p) and SECRET not in p.url
    p.close()


def test_unknown_keyword_option_is_a_config_error() -> None:
    with pytest.raises(ProviderConfigError):
        provider_from_url("redis://127.0.0.1:6379/0", not_an_option=1)


def test_damaged_payload_is_corrupt_naming_the_key(provider: RedisStorageProvider, url: str, admin: Any) -> None:
    chain = make_chain(provider, "dmg", 3)
    key = f"{prefix_of(url)}:{{dmg}}:payload"
    admin.hset(key, chain[1].checkpoint_id, b'"payload":{not json\xff')
    with pytest.raises(CorruptCheckpointError, match="dmg") as info:
        provider.get_checkpoint("dmg", chain[-1].checkpoint_id)  # its base chain runs through it
    assert chain[1].checkpoint_id in str(info.value) and key in str(info.value)
    assert provider.get_checkpoint("dmg", chain[0].checkpoint_id).step == 1


def test_damaged_info_is_corrupt_when_listing(provider: RedisStorageProvider, url: str, admin: Any) -> None:
    chain = make_chain(provider, "dmgi", 2)
    key = f"{prefix_of(url)}:{{dmgi}}:info"
    admin.hset(key, chain[0].checkpoint_id, b"garbage")
    with pytest.raises(CorruptCheckpointError) as info:
        provider.list_checkpoints("dmgi")
    assert key in str(info.value)


def test_a_record_moved_to_another_id_is_corrupt(provider: RedisStorageProvider, url: str, admin: Any) -> None:
    chain = make_chain(provider, "moved", 2)
    p = f"{prefix_of(url)}:{{moved}}"
    for part in ("info", "payload"):
        admin.hset(f"{p}:{part}", chain[1].checkpoint_id, admin.hget(f"{p}:{part}", chain[0].checkpoint_id))
    with pytest.raises(CorruptCheckpointError, match="holds checkpoint"):
        provider.get_checkpoint("moved", chain[1].checkpoint_id)


def test_a_key_of_the_wrong_type_is_corrupt(provider: RedisStorageProvider, url: str, admin: Any) -> None:
    make_chain(provider, "wt", 1)
    admin.delete(f"{prefix_of(url)}:{{wt}}:payload")
    admin.set(f"{prefix_of(url)}:{{wt}}:payload", b"not a hash")
    with pytest.raises(CorruptCheckpointError, match="wrong type"):
        provider.get_latest_checkpoint("wt")


def test_a_missing_base_is_corrupt_not_silently_short(provider: RedisStorageProvider, url: str, admin: Any) -> None:
    chain = make_chain(provider, "hole", 4)
    p = f"{prefix_of(url)}:{{hole}}"
    for part in ("info", "payload"):
        admin.hdel(f"{p}:{part}", chain[1].checkpoint_id)
    with pytest.raises(CorruptCheckpointError, match="missing"):
        provider.get_checkpoint("hole", chain[-1].checkpoint_id)
    # still listed in the session's index: damage, not "no such checkpoint"
    with pytest.raises(CorruptCheckpointError, match="listed but its record is missing"):
        provider.get_checkpoint("hole", chain[1].checkpoint_id)


def test_an_orphan_id_at_the_end_of_the_index_is_damage_not_an_empty_session(
    provider: RedisStorageProvider, url: str, admin: Any
) -> None:
    make_chain(provider, "orphan", 2)
    admin.zadd(f"{prefix_of(url)}:{{orphan}}:ids", {"000001-0000009": 0})
    with pytest.raises(CorruptCheckpointError, match="000001-0000009"):
        provider.get_latest_checkpoint("orphan")
    with pytest.raises(CorruptCheckpointError, match="000001-0000009"):
        provider.list_checkpoints("orphan")


def test_partial_eviction_is_damage_not_an_empty_session(provider: RedisStorageProvider, url: str, admin: Any) -> None:
    make_chain(provider, "evicted", 2)
    admin.delete(f"{prefix_of(url)}:{{evicted}}:ids")  # what allkeys-lru may do to one key of a session
    assert provider.list_sessions() == ["evicted"]
    with pytest.raises(CorruptCheckpointError, match="index is missing"):
        provider.get_latest_checkpoint("evicted")
    with pytest.raises(CorruptCheckpointError, match="index is missing"):
        provider.list_checkpoints("evicted")


def test_every_error_is_a_persistency_error(provider: RedisStorageProvider) -> None:
    with pytest.raises(PersistencyError):
        provider.get_checkpoint("none", checkpoint_id_for(1, 1))


# -- async -------------------------------------------------------------------------------------------------
async def test_async_writers_racing_for_one_id_exactly_one_wins(provider: RedisStorageProvider) -> None:
    base = make_checkpoint("arace", 1)
    await provider.asave_checkpoint(base)

    async def writer(i: int) -> str:
        cp = make_checkpoint("arace", 2, parent_id=base.checkpoint_id, metadata={"writer": i})
        try:
            await provider.asave_checkpoint(cp)
            return f"won:{i}"
        except CheckpointConflictError:
            return "lost"

    results = await asyncio.gather(*(writer(i) for i in range(8)))
    winners = [r for r in results if r.startswith("won")]
    assert len(winners) == 1 and results.count("lost") == 7, results
    got = await provider.aget_checkpoint("arace", checkpoint_id_for(1, 2))
    assert got.metadata == {"writer": int(winners[0].split(":")[1])}
    await provider.aclose()


def test_async_twins_are_native() -> None:
    for name in ("asave_checkpoint", "aget_checkpoint", "aget_latest_checkpoint", "alist_checkpoints",
                 "alist_sessions", "adelete_session", "aclose"):
        assert getattr(RedisStorageProvider, name) is not getattr(PersistencyStorageProvider, name), name


async def test_async_twins_do_not_block_the_loop(url: str, admin: Any) -> None:
    p = provider_from_url(url)
    try:
        chain: list[Checkpoint] = []
        parent = None
        for step in range(1, 21):
            cp = make_checkpoint("aio", step, parent_id=parent)
            await p.asave_checkpoint(cp)
            chain.append(cp)
            parent = cp.checkpoint_id
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        nodes = admin.get_primaries() if isinstance(admin, redis.cluster.RedisCluster) else [None]
        for node in nodes:  # the server holds every client's commands for 400 ms
            if node is None:
                admin.execute_command("CLIENT", "PAUSE", 400, "ALL")
            else:
                admin.execute_command("CLIENT", "PAUSE", 400, "ALL", target_nodes=node)
        t0 = time.monotonic()
        with round_trips() as n:
            latest = await p.aget_latest_checkpoint("aio")
        waited = time.monotonic() - t0
        task.cancel()
        assert latest is not None and latest.model_dump(mode="json") == chain[-1].model_dump(mode="json")
        assert waited >= 0.3
        assert ticks >= 5, ticks  # the loop kept running while the load waited (a blocked loop ticks 0-1 times)
        assert n[0] <= 3
        with round_trips() as n:
            await p.asave_checkpoint(make_checkpoint("aio", 21, parent_id=parent))
        assert n[0] == 1
        assert [i.step for i in await p.alist_checkpoints("aio", limit=2)] == [20, 21]
    finally:
        await p.aclose()


# -- storage cost ------------------------------------------------------------------------------------------
def test_bytes_stored_for_1000_steps_stay_under_twice_the_transcript(
    provider: RedisStorageProvider, url: str, admin: Any
) -> None:
    msgs = save_long_session(provider, "cost", 1000, size=500)
    transcript = len(json.dumps(msgs, ensure_ascii=False, separators=(",", ":")).encode())
    p = f"{prefix_of(url)}:{{cost}}"
    stored = 0
    for part in ("info", "payload"):
        stored += sum(len(k) + len(v) for k, v in admin.hgetall(f"{p}:{part}").items())
    stored += sum(len(m) for m in admin.zrange(f"{p}:ids", 0, -1))
    memory = sum(int(admin.memory_usage(f"{p}:{part}", samples=0) or 0) for part in ("ids", "info", "payload"))
    print(f"transcript {transcript} B, stored {stored} B ({stored / transcript:.2f}x), "
          f"MEMORY USAGE {memory} B ({memory / transcript:.2f}x)")
    assert stored <= 2 * transcript
    assert memory <= 2 * transcript


# -- transports and transient failures ---------------------------------------------------------------------
def test_unix_socket_urls_work() -> None:
    import shutil
    import tempfile
    from pathlib import Path

    from tests.servers.redis_server import start_redis

    tmp = Path(tempfile.mkdtemp(prefix="prs-"))  # short: a unix socket path has a length limit
    server = start_redis(tmp, "--unixsocket", str(tmp / "r.sock"), "--unixsocketperm", "700")
    try:
        with provider_from_url(f"unix://{tmp / 'r.sock'}?db=2&key_prefix=u") as p:
            chain = make_chain(p, "sock", 3)
            assert p.get_checkpoint("sock", chain[-1].checkpoint_id).model_dump() == chain[-1].model_dump()
            assert p.list_sessions() == ["sock"]
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


class _ReplyDroppingProxy:
    """A loopback TCP proxy to Redis that, when armed, forwards one save script and then drops the
    connection instead of returning the reply: the save happened, but the client never heard."""

    def __init__(self, upstream_port: int, marker: bytes) -> None:
        import socket
        import threading

        self.upstream_port = upstream_port
        self.marker = marker
        self.armed = False
        self.saves_seen = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        import socket
        import threading

        self._server.settimeout(0.1)
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: Any, upstream: Any) -> None:
        import select

        swallow = False
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([client, upstream], [], [], 0.1)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        if self.marker in data:
                            self.saves_seen += 1
                            if self.armed:
                                self.armed, swallow = False, True
                        upstream.sendall(data)
                    elif swallow:
                        return  # the reply is lost with the connection
                    else:
                        client.sendall(data)
        finally:
            client.close()
            upstream.close()

    def close(self) -> None:
        self._stop.set()
        self._server.close()


def test_a_save_whose_reply_is_lost_is_retried_and_not_taken_for_a_conflict(redis_url: str) -> None:
    from persistency.providers.redis.scripts import SCRIPTS as _SCRIPTS

    parts = urlsplit(redis_url)
    proxy = _ReplyDroppingProxy(int(parts.port or 6379), _SCRIPTS["save"][0].encode())
    try:
        via_proxy = parts._replace(netloc=f"127.0.0.1:{proxy.port}").geturl()
        with provider_from_url(via_proxy, retry_backoff_cap=0.01) as p:
            chain = make_chain(p, "lost", 2)
            proxy.armed = True
            seen = proxy.saves_seen
            child = make_chain(p, "lost", 1, start=chain[-1])[0]  # redis-py retries; the token says "mine"
            assert proxy.saves_seen == seen + 2
            assert p.get_checkpoint("lost", child.checkpoint_id).model_dump() == child.model_dump()
            assert [i.step for i in p.list_checkpoints("lost")] == [1, 2, 3]
            with pytest.raises(CheckpointConflictError):
                p.save_checkpoint(child)
    finally:
        proxy.close()


def test_dropped_connections_are_retried(provider: RedisStorageProvider, admin: Any) -> None:
    chain = make_chain(provider, "drop", 2)
    admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    more = make_chain(provider, "drop", 2, start=chain[-1])
    latest = provider.get_latest_checkpoint("drop")
    assert latest is not None and latest.checkpoint_id == more[-1].checkpoint_id


def test_cluster_option_on_a_single_node_is_a_clear_error(redis_url: str) -> None:
    with provider_from_url(redis_url, cluster=True, retries=0) as p:
        with pytest.raises(StorageUnavailableError, match="luster"):
            p.list_sessions()


def test_rediss_urls_build_a_tls_client_without_io() -> None:
    p = provider_from_url(f"rediss://:{SECRET}@127.0.0.1:6380/0?key_prefix=tls&ttl=60")
    assert isinstance(p, RedisStorageProvider)
    assert p.ttl == 60 and p.key_prefix == "tls"
    assert SECRET not in repr(p)
    p.close()


# -- encryption at rest ------------------------------------------------------------------------------------
class TestEncryptedConformance(ProviderConformance):
    """The whole contract holds on Redis and Redis Cluster with payloads sealed."""

    @pytest.fixture
    def provider(self, url: str) -> Iterator[PersistencyStorageProvider]:
        with provider_from_url(url, encryption_key=generate_key()) as p:
            yield p


def test_sealed_payloads_on_redis_listing_without_the_key(url: str, admin: Any) -> None:
    key = generate_key()
    with provider_from_url(url, encryption_key=key, compression="none") as p:
        chain = make_chain(p, "enc", 3)
    stored = b"".join(v for v in admin.hgetall(f"{prefix_of(url)}:{{enc}}:payload").values())
    assert b"message 1" not in stored and b"You are alice" not in stored
    with provider_from_url(url) as plain:
        assert [i.step for i in plain.list_checkpoints("enc")] == [1, 2, 3]
        with pytest.raises(EncryptionError, match="encryption_key"):
            plain.get_latest_checkpoint("enc")
    with provider_from_url(url, encryption_key=generate_key()) as wrong, pytest.raises(EncryptionError):
        wrong.get_checkpoint("enc", chain[-1].checkpoint_id)
    with provider_from_url(url, encryption_key=key) as again:
        assert again.get_checkpoint("enc", chain[-1].checkpoint_id).messages == chain[-1].messages


def test_an_encryption_key_in_the_url_is_refused_and_not_echoed() -> None:
    key = generate_key()
    with pytest.raises(ProviderConfigError) as info:
        provider_from_url(f"redis://127.0.0.1:6379/0?encryption_key={key}")
    assert key not in str(info.value)


# -- the session index under interleavings (the protocol that matters on a cluster) --------------------------
def _step(provider: RedisStorageProvider, plan: Any, reply: Any = None) -> tuple[Any, Any]:
    """Run the next operation of a provider plan; returns (operation, its reply), or (None, result) at the end."""
    try:
        op = plan.send(reply)
    except StopIteration as stop:
        return None, stop.value
    return op, drive(provider._conn._op_calls(provider._conn.sync_client(), op))


def _finish(provider: RedisStorageProvider, plan: Any, reply: Any) -> None:
    op, reply = _step(provider, plan, reply)
    while op is not None:
        op, reply = _step(provider, plan, reply)


def test_a_delete_between_the_index_entry_and_the_first_record_leaves_the_session_listed(url: str) -> None:
    with provider_from_url(url) as writer, provider_from_url(url) as deleter:
        assert isinstance(writer, RedisStorageProvider)
        plan = writer._layout.write_plan(encode(make_checkpoint("racy", 1), None))
        op, reply = _step(writer, plan)  # connect
        if writer._conn.cluster:
            op, reply = _step(writer, plan, reply)
            assert op.args[0] == "ZADD"  # the index entry, before the record
        deleter.delete_session("racy")  # a delete lands before the record
        _finish(writer, plan, reply)
        assert writer.list_sessions() == ["racy"]
        assert deleter.list_sessions() == ["racy"]


def test_a_first_save_inside_a_delete_leaves_the_session_listed(url: str) -> None:
    with provider_from_url(url) as writer, provider_from_url(url) as deleter:
        assert isinstance(deleter, RedisStorageProvider)
        make_chain(writer, "racy2", 2)
        plan = deleter._layout.delete_plan("racy2")
        op, reply = _step(deleter, plan)  # connect
        op, reply = _step(deleter, plan, reply)  # the session's keys are gone
        assert op.name == "delete"
        fresh = make_chain(writer, "racy2", 1)  # a new first save lands inside the delete
        _finish(deleter, plan, reply)
        assert deleter.list_sessions() == ["racy2"]
        latest = deleter.get_latest_checkpoint("racy2")
        assert latest is not None and latest.model_dump() == fresh[0].model_dump()


# -- a cluster primary failing over --------------------------------------------------------------------------
def test_a_primary_failing_over_loses_no_acknowledged_checkpoint(tmp_path: Any) -> None:
    """On a cluster with replicas: with ``min_replicas=1`` saves wait for the slot's replica (sync and
    async) and fail typed while it is frozen; then kill the primary that holds the session: saves fail
    typed or succeed, and once the replica has taken over every acknowledged checkpoint loads."""
    from tests.servers.redis_server import start_cluster

    nodes = start_cluster(tmp_path, nodes=3, replicas=1, node_timeout_ms=1000)
    try:
        prefix = "fo"
        on_second = (f"s{i}" for i in range(1000) if 5461 <= key_slot(f"{prefix}:{{s{i}}}:ids".encode()) < 10922)
        sid = next(on_second)
        url = f"{nodes[0].url}?key_prefix={prefix}"  # the seed node stays up; the session lives on nodes[1]
        with provider_from_url(f"{url}&min_replicas=1&replica_timeout=0.5") as waiting:
            acked = make_chain(waiting, sid, 4)  # each save confirmed by the slot's replica
            with _stopped(nodes[3 + 1].proc), pytest.raises(StorageUnavailableError, match="only 0 of 1"):
                make_chain(waiting, sid, 1, start=acked[-1])  # WAIT went to the slot's own primary
            # that one is on the primary all the same (and, once the replica runs again, replicated)
            acked = [waiting.get_checkpoint(sid, i.checkpoint_id) for i in waiting.list_checkpoints(sid)]
            assert len(acked) == 5

            async def the_same_async() -> None:
                a = provider_from_url(f"{url}&min_replicas=1&replica_timeout=0.5")
                try:
                    nxt = make_checkpoint(sid, 6, parent_id=acked[-1].checkpoint_id,
                                          messages=[*acked[-1].messages, {"content": "6", "role": "user"}])
                    await a.asave_checkpoint(nxt)
                    with _stopped(nodes[3 + 1].proc), pytest.raises(StorageUnavailableError, match="only 0 of 1"):
                        await a.asave_checkpoint(make_checkpoint(
                            sid, 7, parent_id=nxt.checkpoint_id, messages=[*nxt.messages, {"content": "7"}]))
                finally:
                    await a.aclose()

            asyncio.run(the_same_async())
            acked = [waiting.get_checkpoint(sid, i.checkpoint_id) for i in waiting.list_checkpoints(sid)]
            assert len(acked) == 7
        with provider_from_url(url, retries=6, retry_backoff_cap=0.5) as p:
            time.sleep(0.3)  # replicated (asynchronously) before the crash
            nodes[1].proc.kill()
            outcomes: list[str] = []
            deadline = time.monotonic() + 60
            while len(acked) < 15 and time.monotonic() < deadline:
                msgs = [*acked[-1].messages, {"content": f"after {len(acked)}", "role": "user", "name": "bob"}]
                cp = make_checkpoint(sid, acked[-1].step + 1, parent_id=acked[-1].checkpoint_id, messages=msgs)
                try:
                    p.save_checkpoint(cp)
                    outcomes.append("ok")
                except StorageUnavailableError:
                    outcomes.append("unavailable")
                    time.sleep(0.2)
                    continue
                except CheckpointConflictError:  # an earlier attempt landed but its reply was lost
                    outcomes.append("conflict")
                    if p.get_checkpoint(sid, cp.checkpoint_id).model_dump() != cp.model_dump():
                        raise
                acked.append(cp)
            print(f"saves during the failover: {outcomes}")
            assert len(acked) == 15, outcomes
        with provider_from_url(url) as fresh:
            for cp in acked:
                assert fresh.get_checkpoint(sid, cp.checkpoint_id).model_dump() == cp.model_dump()
            assert [i.checkpoint_id for i in fresh.list_checkpoints(sid)] == [c.checkpoint_id for c in acked]
            assert fresh.list_sessions() == [sid]
    finally:
        for node in nodes:
            node.stop()


# -- waiting for replicas --------------------------------------------------------------------------------------
@pytest.fixture
def primary_with_replica(tmp_path: Any) -> Iterator[tuple[Any, Any]]:
    """A standalone primary and one replica in sync with it."""
    from tests.servers.redis_server import start_redis

    primary = start_redis(tmp_path / "p", "--repl-diskless-sync-delay", "0")
    replica = start_redis(tmp_path / "r", "--replicaof", "127.0.0.1", str(primary.port))
    try:
        with redis.Redis(port=replica.port) as r:
            deadline = time.monotonic() + 30
            while r.info("replication").get("master_link_status") != "up":
                assert time.monotonic() < deadline, "the replica did not sync"
                time.sleep(0.05)
        yield primary, replica
    finally:
        replica.stop()
        primary.stop()


def _stopped(proc: Any) -> Any:
    """Freeze a server process (SIGSTOP) for the ``with`` block: it stays connected but answers nothing."""
    import signal

    @contextmanager
    def frozen() -> Iterator[None]:
        proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            proc.send_signal(signal.SIGCONT)

    return frozen()


def test_min_replicas_waits_on_the_writing_connection(primary_with_replica: tuple[Any, Any]) -> None:
    primary, replica = primary_with_replica
    # WAIT returns as soon as the replica acknowledges, so a live replica gets a generous timeout (no
    # race with a busy machine); only the frozen one, which never acknowledges, meets a short timeout.
    url = f"{primary.url}?key_prefix=w&min_replicas=1&replica_timeout=60"
    with provider_from_url(url) as p, provider_from_url(url, replica_timeout=0.2) as short:
        chain = make_chain(p, "wait", 2)
        with round_trips() as n:
            more = make_chain(p, "wait", 1, start=chain[-1])
        assert n[0] == 1  # the script and WAIT share one pipeline
        with _stopped(replica.proc):  # the replica cannot acknowledge: the save says so
            with pytest.raises(StorageUnavailableError, match="written on the primary, but only 0 of 1"):
                make_chain(short, "wait", 1, start=more[-1])
        stored = p.get_latest_checkpoint("wait")  # it is on the primary all the same
        assert stored is not None and stored.step == 4
        assert make_chain(p, "wait", 1, start=stored)[0].step == 5  # and the chain goes on


async def test_min_replicas_async(primary_with_replica: tuple[Any, Any]) -> None:
    primary, replica = primary_with_replica
    url = f"{primary.url}?key_prefix=wa&min_replicas=1"
    p = provider_from_url(url, replica_timeout=60)
    short = provider_from_url(url, replica_timeout=0.2)
    try:
        first = make_checkpoint("await", 1)
        await p.asave_checkpoint(first)
        await short.aget_latest_checkpoint("await")  # the parent's lineage is cached before the freeze
        with _stopped(replica.proc):
            with pytest.raises(StorageUnavailableError, match="only 0 of 1"):
                await short.asave_checkpoint(make_checkpoint("await", 2, parent_id=first.checkpoint_id))
    finally:
        await p.aclose()
        await short.aclose()
