"""The crash campaign on SQLite: real processes SIGKILLed at random instants (mid-save and between steps),
then resumed; and the two-worker race on a killed run (engine: `tests.campaign`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from persistency import provider_from_url
from persistency.testing import make_checkpoint
from tests.campaign import SECRET, CampaignError, CrashResult, race_trial, scan_for_secrets
from tests.test_reliability_crash import _campaign as campaign

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the campaign forks its chat processes")


def _campaign(tmp_path: Path, kills: int, seed: str) -> list[CrashResult]:
    return campaign("sqlite", f"sqlite://{tmp_path}/store.db", kills, seed)


def test_sigkill_at_random_instants_then_resume_is_exact(tmp_path: Path) -> None:
    results = _campaign(tmp_path, 6, "suite-sqlite")
    assert len(results) == 6 and all(r.survived for r in results)
    assert {r.mode for r in results} == {"in_save", "random"}
    assert all(r.secret_bytes_scanned > 0 for r in results)


@pytest.mark.parametrize("is_async", [False, True])
def test_two_workers_on_a_killed_run_one_continues(tmp_path: Path, is_async: bool) -> None:
    r = race_trial("sqlite", f"sqlite://{tmp_path}/race.db", "s", is_async=is_async)
    assert r.conflict_reported and sorted(r.outcomes) == ["conflict", "done"] and r.loser_calls == []


def test_the_secret_scan_finds_a_secret_stored_in_sqlite(tmp_path: Path) -> None:
    """Positive control for the scan above: a secret written as message content is found in the file."""
    url = f"sqlite://{tmp_path}/leak.db"
    with provider_from_url(url) as p:
        p.save_checkpoint(make_checkpoint("leak", 1, messages=[{"role": "user", "content": f"{SECRET} x"}]))
    with pytest.raises(CampaignError, match="secret"):
        scan_for_secrets(url)


@pytest.mark.campaign
@pytest.mark.timeout(3600)
def test_campaign_100_kills_on_sqlite(tmp_path: Path) -> None:
    results = _campaign(tmp_path, 100, "campaign-sqlite")
    landed = {where: sum(r.landed == where for r in results) for where in ("mid_save", "between_steps")}
    assert landed["mid_save"] > 0 and landed["between_steps"] > 0, landed
