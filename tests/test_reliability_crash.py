"""Crash campaign: real processes SIGKILLed at random instants (mid-save and between steps), then resumed.

The engine is `tests.campaign`; this file runs a short version on every persistent backend in the
default suite (5 kills each, so CI proves it on every run) and the long one behind the
``campaign`` marker (``pytest -m campaign``; ``python -m tests.campaign`` writes the figures to JSON).
After every kill: the session loads, every stored checkpoint loads and is a prefix of the one true
transcript, and ``resume_latest`` ends the run with exactly the transcript, agent histories and
round count of an uninterrupted run.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from persistency import provider_from_url
from persistency.testing import make_checkpoint
from tests.campaign import (
    S3_BUCKET,
    SECRET,
    CampaignError,
    CrashResult,
    calibrate,
    crash_trial,
    moto_process,
    scan_for_secrets,
)

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the campaign forks its chat processes")

PERSISTENT = ["file", "redis", "redis_cluster", "s3"]


def _base_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "file":
        return str(tmp_path / "store")
    url = str(request.getfixturevalue(f"{backend}_url"))
    return f"{url}&pack_every=4" if backend == "s3" else url  # packs are written (and killed) mid-chat


def _trial_url(url: str, i: int) -> str:
    """A namespace of its own for trial ``i`` under ``url`` (the secret scan reads a trial's store whole)."""
    if "://" not in url:
        return f"{url}/t{i}"
    if url.startswith("sqlite://"):  # p12: a database file per trial
        return url.replace(".db", f"-t{i}.db", 1)
    if url.startswith("s3://"):
        base, _, query = url.partition("?")
        return f"{base.rstrip('/')}/t{i}?{query}"
    return url.replace("key_prefix=", f"key_prefix=t{i}-", 1) if "key_prefix=" in url else f"{url}?key_prefix=t{i}"


def _campaign(backend: str, url: str, kills: int, seed: str) -> list[CrashResult]:
    """``kills`` kills on ``url``, one session each; fails on the first broken promise."""
    run_seconds = calibrate(url, "calibration")
    rng = random.Random(seed)
    results: list[CrashResult] = []
    attempts = 0
    while len(results) < kills:
        attempts += 1
        assert attempts < 4 * kills, f"the run kept ending before the kill: {results}"
        mode = "in_save" if len(results) % 2 == 0 else "random"
        r = crash_trial(backend, _trial_url(url, attempts), "s", seed=rng.randrange(2**32), mode=mode,
                        run_seconds=run_seconds)
        if r.killed:
            assert r.survived, r
            results.append(r)
    return results


@pytest.mark.parametrize("backend", PERSISTENT)
def test_sigkill_at_random_instants_then_resume_is_exact(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    results = _campaign(backend, _base_url(backend, tmp_path, request), 5, f"suite-{backend}")
    assert len(results) == 5 and all(r.survived for r in results)
    assert {r.mode for r in results} == {"in_save", "random"}
    assert all(r.secret_bytes_scanned > 0 for r in results)  # every stored byte was scanned: no secret


@pytest.mark.parametrize("backend", PERSISTENT)
def test_the_secret_scan_finds_a_secret_where_one_is_stored(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Positive control: a secret written as message content (compressed in Redis, packed in S3) is found."""
    url = _base_url(backend, tmp_path, request)
    with provider_from_url(url) as p:
        parent = None
        for step in range(1, 6):  # past pack_every=4 on S3: the secret ends up in a gzipped pack too
            msgs = [{"role": "user", "content": f"{SECRET} " + "x" * 2000}] * step
            cp = make_checkpoint("leak", step, parent_id=parent, messages=msgs)
            p.save_checkpoint(cp)
            parent = cp.checkpoint_id
    with pytest.raises(CampaignError, match="secret"):
        scan_for_secrets(url)


@pytest.mark.campaign
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("backend", PERSISTENT)
def test_campaign_100_kills_per_provider(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if backend == "s3":  # moto in its own process: the session's in-process moto would share our GIL
        request.getfixturevalue("s3_server")  # (its fixture puts dummy credentials in the environment)
        with moto_process(set_env=False) as endpoint:
            url = f"s3://{S3_BUCKET}/c?endpoint_url={endpoint}&region=us-east-1&pack_every=4"
            results = _campaign(backend, url, 100, f"campaign-{backend}")
    else:
        results = _campaign(backend, _base_url(backend, tmp_path, request), 100, f"campaign-{backend}")
    landed = {where: sum(r.landed == where for r in results) for where in ("mid_save", "between_steps")}
    assert landed["mid_save"] > 0 and landed["between_steps"] > 0, landed
