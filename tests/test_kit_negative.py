"""The conformance kit fails the two negative fixtures of `tests.negative_providers`, saying what is wrong.

Each case runs the kit in a pytest of its own (as a third party would), on the broken provider,
and reads its report: the failing test, and a message that names the defect.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_MODULE = '''
import sys
sys.path.insert(0, {root!r})
import pytest
from persistency.testing import ProviderConformance
from tests.negative_providers import {cls}

class TestBroken(ProviderConformance):
    @pytest.fixture
    def provider(self, tmp_path):
        return {cls}(str(tmp_path / "store"))

    @pytest.fixture
    def provider_factory(self, tmp_path):
        return lambda: {cls}(str(tmp_path / "store"))

    @pytest.fixture
    def stored_bytes(self, tmp_path):
        return lambda: sum(f.stat().st_size for f in (tmp_path / "store").rglob("*") if f.is_file())
'''


def _run_kit(pytester: pytest.Pytester, cls: str, select: str) -> pytest.RunResult:
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_broken=_MODULE.format(root=str(ROOT), cls=cls))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", "-k", select)


def test_the_kit_fails_a_full_snapshot_provider_on_bytes_per_save(pytester: pytest.Pytester) -> None:
    result = _run_kit(pytester, "SnapshotProvider", "stores_what_is_new or round_trip or racing_writers")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed") == 1, result.stdout.str()
    assert outcomes.get("passed", 0) >= 5  # it is right about everything else it is asked
    out = result.stdout.str()
    assert "FAILED test_broken.py::TestBroken::test_a_save_stores_what_is_new_not_the_whole_transcript" in out
    assert "a save must store what is new since its parent" in out
    assert "not the whole checkpoint again" in out


def test_the_kit_fails_an_in_process_lock_on_the_process_race(pytester: pytest.Pytester) -> None:
    result = _run_kit(pytester, "InProcessLockProvider", "racing or round_trip")
    outcomes = result.parseoutcomes()
    out = result.stdout.str()
    assert outcomes.get("failed") == 2, out  # two instances in one process already split its lock
    assert outcomes.get("passed", 0) >= 5, out  # threads of one instance are kept apart by the lock
    assert "FAILED test_broken.py::TestBroken::test_instances_racing_for_one_id_exactly_one_wins" in out
    assert "create-only must hold between instances, not only within one" in out
    assert "FAILED test_broken.py::TestBroken::test_processes_racing_for_one_id_exactly_one_wins" in out
    won = re.search(r"(\d) of 6 processes won the create-only race", out)
    assert won and int(won.group(1)) >= 2, out  # (all 6, unless the machine delays one past the write)
    assert "does not hold across processes" in out
