"""Observability and argument checks of the feature (#16 item 8, #13 item 4).

Per-module loggers with a DEBUG line per save and load, OpenTelemetry spans when the API is
installed, the ``on_checkpoint`` callback (whose failures never break a chat), and arguments
refused at construction with an error naming them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from persistency import CheckpointInfo, Persistency, ResumePolicy
from tests.helpers_ag2 import Faults, build_chat


def _crash_then_resume(tmp_path: Path) -> None:
    """A chat that fails before step 3, then the same chat on fresh objects resuming it."""
    crashed = build_chat(max_round=5, faults=Faults(raise_at=3))
    with Persistency(f"file://{tmp_path}", "s").attach(crashed.manager), pytest.raises(RuntimeError):
        crashed.user.initiate_chat(crashed.manager, message="hi", silent=True)
    resumed = build_chat(max_round=5)
    with Persistency(f"file://{tmp_path}", "s").attach(resumed.manager):
        resumed.user.initiate_chat(resumed.manager, message="hi", silent=True)


def test_on_checkpoint_sees_every_stored_checkpoint_in_order(tmp_path: Path) -> None:
    seen: list[CheckpointInfo] = []
    chat = build_chat(max_round=4)
    with Persistency(f"file://{tmp_path}", "s", on_checkpoint=seen.append).attach(chat.manager) as feature:
        chat.user.initiate_chat(chat.manager, message="hi", silent=True)
        stored = [i.checkpoint_id for i in feature.checkpoints()]
    assert [i.checkpoint_id for i in seen] == stored
    assert all(isinstance(i, CheckpointInfo) for i in seen) and seen[-1].kind == "run_end"


def test_a_failing_on_checkpoint_is_logged_and_the_chat_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(info: Any) -> None:
        raise RuntimeError("callback bug")

    plain = build_chat(max_round=4)
    plain.user.initiate_chat(plain.manager, message="hi", silent=True)
    chat = build_chat(max_round=4)
    with caplog.at_level(logging.ERROR, logger="persistency"):
        with Persistency(f"file://{tmp_path}", "s", on_checkpoint=broken).attach(chat.manager) as feature:
            chat.user.initiate_chat(chat.manager, message="hi", silent=True)
            assert len(feature.checkpoints()) == 5
    assert chat.transcript() == plain.transcript()
    assert sum("on_checkpoint callback failed" in r.getMessage() for r in caplog.records) == 5


def test_debug_lines_for_each_save_and_load_come_from_module_loggers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="persistency"):
        _crash_then_resume(tmp_path)
    saves = [r for r in caplog.records if r.getMessage().startswith("saved checkpoint")]
    loads = [r for r in caplog.records if r.getMessage().startswith("loaded the latest checkpoint")]
    assert len(saves) == len({r.getMessage() for r in saves}) == (2 + 1) + (3 + 1)  # steps and run end, twice
    assert len(loads) == 2 and all(" ms, " in r.getMessage() and "bytes" in r.getMessage() for r in saves + loads)
    assert {r.name for r in saves} == {"persistency.feature._writer"}
    assert {r.name for r in loads} == {"persistency.feature._start"}


def test_spans_for_save_load_and_resume_when_opentelemetry_is_installed(tmp_path: Path) -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from persistency.feature import _observe

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _observe._TRACER = provider.get_tracer("persistency")
    try:
        _crash_then_resume(tmp_path)
    finally:
        _observe._TRACER = None
    names = [s.name for s in exporter.get_finished_spans()]
    assert names.count("persistency.load") == 2 and names.count("persistency.resume") == 1
    assert names.count("persistency.save") == 7


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"policy": "resume_latest"}, TypeError, "policy"),
        ({"max_pending": "x"}, TypeError, "max_pending"),
        ({"max_pending": 0}, ValueError, "max_pending"),
        ({"durability": "later"}, ValueError, "durability"),
        ({"durability": 1}, TypeError, "durability"),
        ({"on_error": "ignore"}, ValueError, "on_error"),
        ({"on_checkpoint": "print"}, TypeError, "on_checkpoint"),
        ({"metadata": ["a"]}, TypeError, "metadata"),
    ],
)
def test_bad_arguments_are_refused_at_construction(
    tmp_path: Path, kwargs: dict[str, Any], error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=name):
        Persistency(f"file://{tmp_path}", "s", **kwargs)


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: ResumePolicy.resume_from(5), TypeError),  # type: ignore[arg-type]
        (lambda: ResumePolicy.resume_latest(max_rounds="3"), TypeError),  # type: ignore[arg-type]
        (lambda: ResumePolicy.fresh(max_rounds=0), ValueError),
        (lambda: ResumePolicy.fresh_with_history("../x"), ValueError),
        (lambda: ResumePolicy("resume_latest", "000001-0000001"), ValueError),
        (lambda: ResumePolicy("later"), ValueError),  # type: ignore[arg-type]
    ],
)
def test_policy_factories_validate_their_arguments(make: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        make()
