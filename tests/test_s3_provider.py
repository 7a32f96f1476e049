"""The S3 provider on a real S3 server (moto, loopback, real HTTP): costs, races, errors, damage.

The conformance suite already runs on S3 (``tests/test_conformance.py``); these tests pin down
what is particular to S3: requests per save and per load counted at the server, packs, bytes
stored, conditional writes across processes, and typed errors without secrets.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import multiprocessing
import random
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from persistency.providers.s3 import S3StorageProvider, parse_s3_url

from persistency import provider_from_url
from persistency.errors import (
    CheckpointConflictError,
    CorruptCheckpointError,
    ProviderConfigError,
    StorageUnavailableError,
)
from persistency.ids import checkpoint_id_for
from persistency.models import Checkpoint
from persistency.testing import make_checkpoint
from tests.servers.s3_server import BUCKET, S3Server

STEPS = 1000
_WORDS = ("the", "agent", "replied", "with", "a", "plan", "to", "check", "numbers", "and", "then", "sum",
          "results", "carefully", "before", "passing", "control", "next", "speaker", "tool", "output",
          "shows", "error", "retry", "because", "value", "was", "missing", "from", "table", "query")


def _text(rng: random.Random, size: int = 500) -> str:
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < size:
        words.append(rng.choice(_WORDS) if rng.random() < 0.9 else str(rng.randint(0, 10**6)))
    return " ".join(words)[:size]


def _message(rng: random.Random, i: int) -> dict[str, Any]:
    return {"content": _text(rng), "role": "user" if i == 0 else "assistant",
            "name": ("alice", "bob", "carol")[i % 3]}


def _provider(server: S3Server, prefix: str, **options: Any) -> S3StorageProvider:
    p = provider_from_url(server.url(prefix), **options)
    assert isinstance(p, S3StorageProvider)
    return p


def _save_chain(provider: S3StorageProvider, server: S3Server, sid: str, steps: int,
                prefix: str) -> tuple[list[Checkpoint], list[int]]:
    """Save a chain of ``steps`` ~500-character messages; return the checkpoints and requests per save."""
    rng = random.Random(7)
    msgs: list[dict[str, Any]] = []
    parent = None
    saved: list[Checkpoint] = []
    costs: list[int] = []
    for step in range(1, steps + 1):
        msgs.append(_message(rng, step - 1))
        cp = make_checkpoint(sid, step, parent_id=parent, messages=list(msgs))
        mark = server.mark()
        provider.save_checkpoint(cp)
        costs.append(len(server.since(mark, prefix)))
        saved.append(cp)
        parent = cp.checkpoint_id
    return saved, costs


def _save_chain_from(provider: S3StorageProvider, sid: str, last: Checkpoint,
                     until: int) -> list[Checkpoint]:
    """Continue a chain of ~500-character messages from ``last`` up to step ``until``."""
    rng = random.Random(last.step)
    msgs = list(last.messages)
    saved: list[Checkpoint] = []
    parent = last.checkpoint_id
    for step in range(last.step + 1, until + 1):
        msgs.append(_message(rng, step - 1))
        cp = make_checkpoint(sid, step, parent_id=parent, messages=list(msgs))
        provider.save_checkpoint(cp)
        saved.append(cp)
        parent = cp.checkpoint_id
    return saved


def _same(a: Checkpoint, b: Checkpoint) -> None:
    assert a.model_dump(mode="json") == b.model_dump(mode="json")


@dataclass
class LongSession:
    """A 1,000-step session saved once for the module, with what each save cost."""

    prefix: str
    sid: str
    saved: list[Checkpoint]
    costs: list[int]


@pytest.fixture
def prefix(s3_server: S3Server) -> Iterator[str]:
    """A unique key prefix for one test, emptied afterwards."""
    name = f"t-{uuid.uuid4().hex}"
    yield name
    s3_server.clear(name)


@pytest.fixture(scope="module")
def long_session(s3_server: S3Server) -> Iterator[LongSession]:
    prefix = f"long-{uuid.uuid4().hex}"
    with _provider(s3_server, prefix) as p:
        assert isinstance(p, S3StorageProvider)
        saved, costs = _save_chain(p, s3_server, "long", STEPS, prefix)
    yield LongSession(prefix, "long", saved, costs)
    s3_server.clear(prefix)


# -- cost: requests per save, per load, per listing ---------------------------------------------------
def test_a_save_costs_the_same_at_step_10_and_step_1000(long_session: LongSession) -> None:
    costs = long_session.costs
    # One conditional PUT, nothing else: the parent's lineage is in memory.
    assert costs[9] == 1
    assert costs[STEPS - 1] == 1
    # Every 64th step also lists the session, writes a pack (cumulative: it replaces the one before),
    # its index, empties the 64 records it adds, lists the packs and deletes the one it replaced.
    assert max(costs) <= 64 + 6
    first, last = costs[:64 * 3], costs[-64 * 3:]
    assert sum(first) / len(first) == pytest.approx(sum(last) / len(last), abs=0.05)
    assert sum(costs) / len(costs) < 2.1


def test_loading_the_latest_of_1000_steps_takes_few_requests(
    s3_server: S3Server, long_session: LongSession
) -> None:
    with _provider(s3_server, long_session.prefix) as fresh:  # nothing cached
        mark = s3_server.mark()
        latest = fresh.get_latest_checkpoint(long_session.sid)
        used = s3_server.since(mark, long_session.prefix)
    assert latest is not None
    _same(latest, long_session.saved[-1])
    # a listing (2 pages), one cumulative pack (steps 1-960), the latest record's object, which
    # carries the 39 records after the pack
    assert len(used) <= 5, [(r.method, r.path) for r in used]
    assert sum(1 for r in used if r.method == "GET" and r.path.endswith(".pack.gz")) == 1


def test_loading_again_in_the_same_process_costs_a_listing(
    s3_server: S3Server, long_session: LongSession
) -> None:
    with _provider(s3_server, long_session.prefix) as p:
        p.get_latest_checkpoint(long_session.sid)
        mark = s3_server.mark()
        latest = p.get_latest_checkpoint(long_session.sid)
        used = s3_server.since(mark, long_session.prefix)
    assert latest is not None and latest.step == STEPS
    assert len(used) <= 2, used  # the listing: packs and unpacked records are immutable, kept in memory


def test_listing_1000_steps_reads_no_payload(s3_server: S3Server, long_session: LongSession) -> None:
    with _provider(s3_server, long_session.prefix) as fresh:
        mark = s3_server.mark()
        infos = fresh.list_checkpoints(long_session.sid)
        used = s3_server.since(mark, long_session.prefix)
        assert [i.checkpoint_id for i in infos] == [c.checkpoint_id for c in long_session.saved]
        assert [i.metadata for i in infos] == [c.metadata for c in long_session.saved]
        gets = [r for r in used if r.method == "GET" and not r.query.startswith("list-type")]
        assert not any(r.path.endswith(".pack.gz") for r in gets)  # packs hold payloads; indexes do not
        record_gets = [r for r in gets if "/checkpoints/" in r.path]
        assert record_gets and all(r.range == "bytes=0-511" for r in record_gets)
        assert len(used) <= 2 + STEPS // 64 + 64, len(used)

        mark = s3_server.mark()
        newest = fresh.list_checkpoints(long_session.sid, limit=3)
        assert [i.checkpoint_id for i in newest] == [c.checkpoint_id for c in long_session.saved[-3:]]


def test_listing_the_newest_few_reads_only_a_window(s3_server: S3Server, long_session: LongSession) -> None:
    with _provider(s3_server, long_session.prefix) as fresh:
        mark = s3_server.mark()
        newest = fresh.list_checkpoints(long_session.sid, limit=3)
        used = s3_server.since(mark, long_session.prefix)
    assert [i.checkpoint_id for i in newest] == [c.checkpoint_id for c in long_session.saved[-3:]]
    # the listing, a window of 16 ranged reads, and the index holding the metadata keyframe
    assert len(used) <= 2 + 16 + 1, len(used)


def test_bytes_stored_stay_under_twice_the_transcript(s3_server: S3Server, long_session: LongSession) -> None:
    client = s3_server.client()
    total = 0
    kwargs: dict[str, Any] = {"Bucket": BUCKET, "Prefix": f"{long_session.prefix}/"}
    while True:
        resp = client.list_objects_v2(**kwargs)
        total += sum(o["Size"] for o in resp.get("Contents", []))
        if not resp.get("IsTruncated"):
            break
        kwargs["ContinuationToken"] = resp["NextContinuationToken"]
    client.close()
    transcript = len(json.dumps(long_session.saved[-1].messages, ensure_ascii=False).encode("utf-8"))
    assert transcript > STEPS * 500
    assert total <= 2 * transcript, (total, transcript)


def test_a_resuming_process_saves_with_one_request(s3_server: S3Server, prefix: str) -> None:
    with _provider(s3_server, prefix) as first:
        _save_chain(first, s3_server, "r", 100, prefix)
    with _provider(s3_server, prefix) as second:
        latest = second.get_latest_checkpoint("r")
        assert latest is not None
        child = make_checkpoint("r", 101, parent_id=latest.checkpoint_id,
                                messages=[*latest.messages, {"content": "next", "role": "assistant", "name": "bob"}])
        mark = s3_server.mark()
        second.save_checkpoint(child)
        assert len(s3_server.since(mark, prefix)) == 1, s3_server.since(mark, prefix)
        _same(second.get_checkpoint("r", child.checkpoint_id), child)


def test_list_sessions_is_one_delimiter_listing(s3_server: S3Server, prefix: str) -> None:
    with _provider(s3_server, prefix) as p:
        for sid in ("b", "a", "c"):
            p.save_checkpoint(make_checkpoint(sid, 1))
        mark = s3_server.mark()
        assert p.list_sessions() == ["a", "b", "c"]
        used = s3_server.since(mark, prefix)
    assert len(used) == 1 and "delimiter=%2F" in used[0].query


def test_delete_session_removes_every_object(s3_server: S3Server, prefix: str) -> None:
    client = s3_server.client()
    with _provider(s3_server, prefix, pack_every=8) as p:
        _save_chain(p, s3_server, "gone", 40, prefix)
        _save_chain(p, s3_server, "kept", 3, prefix)
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/gone/")["Contents"]]
        assert any(k.endswith(".pack.gz") for k in keys) and any(k.endswith(".index.gz") for k in keys)
        p.delete_session("gone")
        assert client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/gone/").get("KeyCount") == 0
        assert p.list_sessions() == ["kept"]
    client.close()


# -- packs: correctness under crashes and concurrent readers -------------------------------------------
def test_every_checkpoint_of_a_packed_branching_session_loads(s3_server: S3Server, prefix: str) -> None:
    with _provider(s3_server, prefix, pack_every=4) as p:
        main, _ = _save_chain(p, s3_server, "s", 23, prefix)
        branch: list[Checkpoint] = []
        parent = main[9]
        for step in range(11, 20):
            msgs = [*parent.messages, {"content": f"branch {step}", "role": "assistant", "name": "carol"}]
            cp = make_checkpoint("s", step, run_seq=2, parent_id=parent.checkpoint_id, messages=msgs)
            p.save_checkpoint(cp)
            branch.append(cp)
            parent = cp
        end = make_checkpoint("s", 19, run_seq=2, parent_id=parent.checkpoint_id, messages=parent.messages,
                              kind="run_end", end_reason="max_rounds", end_seq=1)
        p.save_checkpoint(end)
    everything = [*main, *branch, end]
    with _provider(s3_server, prefix, pack_every=4) as fresh:
        for cp in everything:
            _same(fresh.get_checkpoint("s", cp.checkpoint_id), cp)
    with _provider(s3_server, prefix, pack_every=4) as fresh:
        infos = fresh.list_checkpoints("s")
        assert [i.checkpoint_id for i in infos] == sorted(c.checkpoint_id for c in everything)
        latest = fresh.get_latest_checkpoint("s")
        assert latest is not None
        _same(latest, end)


def test_a_crash_between_pack_and_emptying_loses_nothing(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, prefix: str
) -> None:
    with _provider(s3_server, prefix, pack_every=8) as p:
        real_put = p._aput

        async def dies_when_emptying(key: str, data: bytes, create: bool) -> str | None:
            if not data:
                raise ConnectionError("killed")
            return await real_put(key, data, create)

        monkeypatch.setattr(p, "_aput", dies_when_emptying)
        saved, _ = _save_chain(p, s3_server, "c", 20, prefix)  # packing fails after the pack; saves succeed
    with _provider(s3_server, prefix, pack_every=8) as fresh:
        for cp in saved:
            _same(fresh.get_checkpoint("c", cp.checkpoint_id), cp)
        assert len(fresh.list_checkpoints("c")) == 20
        # the merge at step 128 (16 packs of 8) empties what the crashes left whole
        more = _save_chain_from(fresh, "c", saved[-1], 128)
    client = s3_server.client()
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/c/checkpoints/")["Contents"]
    client.close()
    assert len(listed) == 128 and all(o["Size"] == 0 for o in listed)
    with _provider(s3_server, prefix, pack_every=8) as fresh:
        for cp in [*saved, *more][::9]:
            _same(fresh.get_checkpoint("c", cp.checkpoint_id), cp)


def test_a_reader_racing_compaction_still_loads(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, prefix: str
) -> None:
    with _provider(s3_server, prefix, pack_every=8) as writer, \
            _provider(s3_server, prefix, pack_every=8) as reader:
        saved, _ = _save_chain(writer, s3_server, "r", 7, prefix)
        step8 = make_checkpoint("r", 8, parent_id=saved[-1].checkpoint_id,
                                messages=[*saved[-1].messages, {"content": "8", "role": "user", "name": "alice"}])
        real_list = reader._list_session

        def list_then_compact(session_id: str, only_packs: bool = False) -> Any:
            listing = real_list(session_id, only_packs)
            if not only_packs and step8.checkpoint_id not in listing.records:
                writer.save_checkpoint(step8)  # packs steps 1-8 and empties their records
            return listing

        monkeypatch.setattr(reader, "_list_session", list_then_compact)
        got = reader.get_checkpoint("r", saved[-1].checkpoint_id)  # listed as whole, read as empty
        _same(got, saved[-1])
        monkeypatch.setattr(reader, "_list_session", real_list)
        infos = reader.list_checkpoints("r")
        assert [i.checkpoint_id for i in infos] == [c.checkpoint_id for c in [*saved, step8]]


def test_ids_with_every_allowed_character_round_trip(s3_server: S3Server, prefix: str) -> None:
    with _provider(s3_server, prefix) as p:
        cp = make_checkpoint("user@example.com+x=1_a.b-c", 1)
        cp = cp.model_copy(update={"checkpoint_id": "A+b=c@d_e.f-g"})
        p.save_checkpoint(cp)
        _same(p.get_checkpoint(cp.session_id, cp.checkpoint_id), cp)
        assert p.list_sessions() == [cp.session_id]
        with pytest.raises(CheckpointConflictError):
            p.save_checkpoint(cp)


# -- races across processes ---------------------------------------------------------------------------
def _race_worker(url: str, parent: dict[str, Any], worker: int, barrier: Any, results: Any) -> None:
    cp = Checkpoint.model_validate(parent)
    child = make_checkpoint(cp.session_id, cp.step + 1, parent_id=cp.checkpoint_id,
                            messages=[*cp.messages, {"content": f"worker {worker}", "role": "assistant",
                                                     "name": "bob"}], metadata={"worker": worker})
    with provider_from_url(url) as p:
        barrier.wait(timeout=60)
        try:
            p.save_checkpoint(child)
            results.put(("won", worker))
        except CheckpointConflictError:
            results.put(("lost", worker))
        except Exception as exc:
            results.put(("error", f"{type(exc).__name__}: {exc}"))


def test_processes_racing_for_one_id_exactly_one_wins(s3_server: S3Server, s3_url: str) -> None:
    with provider_from_url(s3_url) as p:
        base = make_checkpoint("race", 1)
        p.save_checkpoint(base)
    ctx = multiprocessing.get_context("spawn")
    n = 6
    barrier = ctx.Barrier(n)
    results = ctx.Queue()
    procs = [ctx.Process(target=_race_worker, args=(s3_url, base.model_dump(mode="json"), i, barrier, results))
             for i in range(n)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=120) for _ in range(n)]
    for proc in procs:
        proc.join(timeout=60)
    assert [o for o in outcomes if o[0] == "error"] == []
    winners = [o[1] for o in outcomes if o[0] == "won"]
    assert len(winners) == 1, outcomes
    with provider_from_url(s3_url) as p:
        got = p.get_checkpoint("race", checkpoint_id_for(1, 2))
        assert got.metadata == {"worker": winners[0]}
        assert got.messages[-1]["content"] == f"worker {winners[0]}"
        assert [i.checkpoint_id for i in p.list_checkpoints("race")] == [base.checkpoint_id, got.checkpoint_id]


# -- errors ------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_missing_bucket_is_storage_unavailable(s3_server: S3Server) -> None:
    url = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/x?endpoint_url={s3_server.endpoint}"
    with provider_from_url(url) as p, pytest.raises(StorageUnavailableError) as info:
        p.save_checkpoint(make_checkpoint("s", 1))
    assert "does not exist" in str(info.value) and "s3://no-such-bucket-" in str(info.value)
    with provider_from_url(url) as p, pytest.raises(StorageUnavailableError):
        p.list_sessions()


def test_an_unreachable_endpoint_fails_in_seconds() -> None:
    url = f"s3://{BUCKET}/x?endpoint_url=http://127.0.0.1:{_free_port()}&connect_timeout=1&max_attempts=2"
    started = time.monotonic()
    with provider_from_url(url) as p, pytest.raises(StorageUnavailableError) as info:
        p.get_latest_checkpoint("s")
    assert time.monotonic() - started < 15
    assert "cannot reach the endpoint" in str(info.value) and f"s3://{BUCKET}/x" in str(info.value)
    assert "Traceback" not in str(info.value)


def test_bad_credentials_are_named_without_the_secret(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    import moto.settings

    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # moto checks keys from now on
    secret = "wJalrXUtnFEMI-not-a-real-secret-9f3k"
    p = provider_from_url(s3_server.url(), key="AKIAEXAMPLEBADKEY000", secret=secret)
    with p, pytest.raises(StorageUnavailableError) as info:
        p.save_checkpoint(make_checkpoint("s", 1))
    message = str(info.value)
    assert "access denied" in message and secret not in message


def test_malformed_urls_and_options_are_config_errors() -> None:
    for url in ("s3://", "s3://UPPER/x", "s3://a/../b", "s3://b/x?nope=1", "s3://bkt/x?pack_every=zero",
                "s3://bkt/x?anon=maybe", "s3://bkt/x?region=a&region=b"):
        with pytest.raises(ProviderConfigError):
            provider_from_url(url)
    with pytest.raises(ProviderConfigError) as info:
        provider_from_url("s3://AKIAEXAMPLE:topsecretvalue@bkt/x")
    assert "topsecretvalue" not in str(info.value)


def test_keyword_options_win_over_the_query() -> None:
    assert parse_s3_url("s3a://bkt/a/b/?region=eu-west-1&anon=true&pack_every=8") == (
        "bkt", "a/b", {"region": "eu-west-1", "anon": True, "pack_every": 8})
    p = S3StorageProvider.from_url("s3://bkt/x?pack_every=8&endpoint_url=http://127.0.0.1:1", pack_every=16)
    assert p._pack_every == 16
    assert "127.0.0.1:1" in repr(p)
    p.close()


def test_a_damaged_record_is_corrupt_and_named(s3_server: S3Server, prefix: str) -> None:
    with _provider(s3_server, prefix) as p:
        saved, _ = _save_chain(p, s3_server, "d", 3, prefix)
    client = s3_server.client()
    key = f"{prefix}/d/checkpoints/{saved[1].checkpoint_id}.json"
    client.put_object(Bucket=BUCKET, Key=key, Body=b'{"info":{"schema_version":1,\n"payload":tru')
    client.close()
    with _provider(s3_server, prefix) as fresh:
        with pytest.raises(CorruptCheckpointError, match=key):
            fresh.get_checkpoint("d", saved[1].checkpoint_id)
        _same(fresh.get_checkpoint("d", saved[0].checkpoint_id), saved[0])
    with _provider(s3_server, prefix) as fresh:
        # the next record's object carries an intact copy of it (checksums checked), so it still loads
        _same(fresh.get_checkpoint("d", saved[2].checkpoint_id), saved[2])
    client = s3_server.client()
    key = f"{prefix}/d/checkpoints/{saved[2].checkpoint_id}.json"
    body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    client.put_object(Bucket=BUCKET, Key=key, Body=body[:-3] + bytes([body[-3] ^ 1]) + body[-2:])
    client.close()
    with _provider(s3_server, prefix) as fresh, pytest.raises(CorruptCheckpointError, match=key):
        fresh.get_checkpoint("d", saved[2].checkpoint_id)  # damage in what it carries is named too


def test_a_damaged_pack_or_emptied_record_without_a_pack_is_corrupt(
    s3_server: S3Server, prefix: str
) -> None:
    with _provider(s3_server, prefix, pack_every=4) as p:
        saved, _ = _save_chain(p, s3_server, "d", 6, prefix)
    client = s3_server.client()
    name = f"{saved[0].checkpoint_id}~{saved[3].checkpoint_id}"
    pack = f"{prefix}/d/packs/{name}.pack.gz"
    assert client.head_object(Bucket=BUCKET, Key=pack)["ContentLength"] > 0
    client.put_object(Bucket=BUCKET, Key=pack, Body=gzip.compress(b'{"format":"persistency-pack/1"}\nxx'))
    with _provider(s3_server, prefix, pack_every=4) as fresh, pytest.raises(CorruptCheckpointError, match=pack):
        fresh.get_latest_checkpoint("d")
    client.delete_object(Bucket=BUCKET, Key=pack)
    client.delete_object(Bucket=BUCKET, Key=f"{prefix}/d/packs/{name}.index.gz")
    with _provider(s3_server, prefix, pack_every=4) as fresh, pytest.raises(CorruptCheckpointError, match="empty"):
        fresh.get_checkpoint("d", saved[0].checkpoint_id)
    client.close()


# -- async ---------------------------------------------------------------------------------------------------
async def test_async_twins_do_not_block_the_event_loop(s3_server: S3Server, s3_url: str) -> None:
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    async with provider_from_url(s3_url) as p:
        task = asyncio.create_task(ticker())
        parent = None
        msgs: list[dict[str, Any]] = []
        for step in range(1, 21):
            msgs.append({"content": f"m{step}", "role": "assistant", "name": "bob"})
            cp = make_checkpoint("a", step, parent_id=parent, messages=list(msgs))
            await p.asave_checkpoint(cp)
            parent = cp.checkpoint_id
        latest = await p.aget_latest_checkpoint("a")
        stop.set()
        await task
    assert latest is not None and latest.step == 20
    assert ticks > 5


def test_no_credentials_anywhere_is_storage_unavailable(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with provider_from_url(s3_server.url()) as p, pytest.raises(StorageUnavailableError) as info:
        p.list_sessions()
    assert "credentials" in str(info.value)


def test_a_long_info_line_is_read_whole_when_listing(s3_server: S3Server, s3_url: str) -> None:
    big = {"note": "x" * 3000}
    with provider_from_url(s3_url) as p:
        cp = make_checkpoint("meta", 1, metadata=big)
        p.save_checkpoint(cp)
    with provider_from_url(s3_url) as fresh:
        assert [i.metadata for i in fresh.list_checkpoints("meta")] == [big]


def test_a_session_rewritten_by_another_process_is_not_served_stale(s3_url: str) -> None:
    with provider_from_url(s3_url) as a, provider_from_url(s3_url) as b:
        old = make_checkpoint("s", 1, metadata={"v": "old"}, messages=[{"content": "old", "role": "user"}])
        a.save_checkpoint(old)
        b.delete_session("s")
        new = make_checkpoint("s", 1, metadata={"v": "new"}, messages=[{"content": "new", "role": "user"}])
        b.save_checkpoint(new)
        latest = a.get_latest_checkpoint("s")
        assert latest is not None and latest.messages == new.messages


def test_an_unknown_profile_is_a_config_error(s3_server: S3Server) -> None:
    with provider_from_url(s3_server.url() + "&profile=no-such-profile") as p, pytest.raises(ProviderConfigError):
        p.list_sessions()


def test_a_server_that_never_answers_times_out_in_seconds() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # accepts connections (the kernel does), never answers a request
        port = listener.getsockname()[1]
        url = f"s3://{BUCKET}/x?endpoint_url=http://127.0.0.1:{port}&read_timeout=1&max_attempts=2"
        started = time.monotonic()
        with provider_from_url(url) as p, pytest.raises(StorageUnavailableError) as info:
            p.list_sessions()
        assert time.monotonic() - started < 10
    assert "cannot reach the endpoint (ReadTimeoutError)" in str(info.value)


def test_packs_merge_so_a_long_session_loads_with_few_requests(s3_server: S3Server, prefix: str) -> None:
    # pack_every=4: level-0 packs every 4 steps, merged into a level-1 pack every 64, level-2 every 1,024
    with _provider(s3_server, prefix, pack_every=4) as p:
        saved, costs = _save_chain(p, s3_server, "m", 300, prefix)
    client = s3_server.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/m/packs/")["Contents"]]
    client.close()
    packs = sorted(k.rsplit("/", 1)[1] for k in keys if k.endswith(".pack.gz"))
    # cumulative packs, one per level: steps 1-256 (level 1, replacing 1-64, 1-128, 1-192 and the
    # small ones) and 257-300 (level 0, replacing 257-260, 257-264, ...)
    assert packs == [f"{saved[0].checkpoint_id}~{saved[255].checkpoint_id}.pack.gz",
                     f"{saved[256].checkpoint_id}~{saved[299].checkpoint_id}.pack.gz"], packs
    # a crossing: the record, a listing, the pack and its index, 4 records emptied, the packs listed,
    # the replaced ones deleted in one request
    assert max(costs) <= 4 + 6
    with _provider(s3_server, prefix, pack_every=4) as fresh:
        mark = s3_server.mark()
        latest = fresh.get_latest_checkpoint("m")
        assert latest is not None
        _same(latest, saved[-1])
        assert len(s3_server.since(mark, prefix)) <= 1 + 2 + 1  # listing, two packs, the latest
        for cp in saved[::37]:
            _same(fresh.get_checkpoint("m", cp.checkpoint_id), cp)
    with _provider(s3_server, prefix, pack_every=4) as fresh:
        assert [i.checkpoint_id for i in fresh.list_checkpoints("m")] == [c.checkpoint_id for c in saved]


def test_a_reader_racing_a_merge_still_loads(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    with _provider(s3_server, prefix, pack_every=4) as writer, \
            _provider(s3_server, prefix, pack_every=4) as reader:
        saved, _ = _save_chain(writer, s3_server, "r", 63, prefix)
        step64 = make_checkpoint("r", 64, parent_id=saved[-1].checkpoint_id,
                                 messages=[*saved[-1].messages, {"content": "64", "role": "user", "name": "alice"}])
        real_list = reader._list_session

        def list_then_merge(session_id: str, only_packs: bool = False) -> Any:
            listing = real_list(session_id, only_packs)
            if not only_packs and step64.checkpoint_id not in listing.records:
                writer.save_checkpoint(step64)  # merges the fifteen small packs and deletes them
            return listing

        monkeypatch.setattr(reader, "_list_session", list_then_merge)
        _same(reader.get_checkpoint("r", saved[-1].checkpoint_id), saved[-1])
        _same(reader.get_checkpoint("r", saved[0].checkpoint_id), saved[0])
        monkeypatch.setattr(reader, "_list_session", real_list)
        assert len(reader.list_checkpoints("r")) == 64


def test_the_s3a_scheme_selects_the_same_provider(s3_server: S3Server, prefix: str) -> None:
    with provider_from_url(s3_server.url(prefix).replace("s3://", "s3a://", 1)) as p:
        assert isinstance(p, S3StorageProvider)
        p.save_checkpoint(make_checkpoint("s", 1))
    with provider_from_url(s3_server.url(prefix)) as p:
        assert p.list_sessions() == ["s"]


def test_a_url_without_an_endpoint_still_stays_on_loopback(s3_server: S3Server, prefix: str) -> None:
    mark = s3_server.mark()
    with provider_from_url(f"s3://{BUCKET}/{prefix}") as p:  # the fixture's AWS_ENDPOINT_URL_S3 applies
        p.save_checkpoint(make_checkpoint("s", 1))
    assert len(s3_server.since(mark, prefix)) == 1
