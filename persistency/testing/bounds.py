"""The contract's costs and failures: bytes stored per save, and backend errors translated.

- A save stores what is new since its parent: the kit saves a 400-step chain and checks that the
  store grows linearly with the transcript, using the ``stored_bytes`` fixture (bytes the store
  holds now). For a `StorageBackend` the default counts the bytes handed to ``write_record``.
- A backend failure becomes a `PersistencyError` naming the backend: for a `StorageBackend` the
  kit makes each primitive fail and checks what the caller sees.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from persistency.errors import PersistencyError
from persistency.provider import PersistencyStorageProvider
from persistency.storage import StorageBackend
from persistency.testing.builders import make_checkpoint, message

__all__ = ["BoundTests"]

STEPS = 400
#: allowance per save for the info line, state deltas and framing (bytes)
PER_SAVE_OVERHEAD = 2048
_PRIMITIVES = ("write_record", "read_records", "read_chain", "read_info_lines", "list_ids", "list_session_ids",
               "delete_records")


class BoundTests:
    """Bytes per save and error translation."""

    @pytest.fixture
    def stored_bytes(self, provider: PersistencyStorageProvider) -> Callable[[], int]:
        """Override: how many bytes the store holds now. Default: bytes a `StorageBackend` was asked to write."""
        if not isinstance(provider, StorageBackend):
            pytest.skip("supply a stored_bytes fixture (bytes the store holds) to check the bytes-per-save bound")
        written = [0]
        inner = provider.write_record

        def counting(record: Any) -> None:
            inner(record)
            written[0] += len(record.data)

        provider.write_record = counting  # type: ignore[method-assign]
        return lambda: written[0]

    def test_a_save_stores_what_is_new_not_the_whole_transcript(
        self, provider: PersistencyStorageProvider, stored_bytes: Callable[[], int]
    ) -> None:
        before = stored_bytes()
        msgs: list[dict[str, Any]] = []
        parent = None
        marks = {}
        for step in range(1, STEPS + 1):
            msgs.append(message(step - 1, size=200))
            cp = make_checkpoint("bytes", step, parent_id=parent, messages=list(msgs))
            provider.save_checkpoint(cp)
            parent = cp.checkpoint_id
            if step in (100, 300, STEPS):
                marks[step] = stored_bytes() - before
        transcript = len(json.dumps(msgs).encode())
        total = marks[STEPS]
        bound = 4 * transcript + PER_SAVE_OVERHEAD * STEPS
        assert total <= bound, (
            f"{STEPS} saves stored {total:,} bytes for a {transcript:,}-byte transcript ({total / transcript:.0f}x; "
            f"the bound is {bound:,}): a save must store what is new since its parent (about one message), "
            "not the whole checkpoint again"
        )
        early, late = marks[100], marks[STEPS] - marks[300]
        assert late <= 2 * early + PER_SAVE_OVERHEAD * 10, (
            f"saves 301-{STEPS} stored {late:,} bytes, saves 1-100 stored {early:,}: the cost of a save grows with "
            "the transcript; it must stay the same at step 1,000 as at step 10"
        )

    @pytest.mark.parametrize("primitive", _PRIMITIVES)
    def test_a_backend_failure_is_a_persistency_error_naming_the_backend(
        self, provider: PersistencyStorageProvider, primitive: str
    ) -> None:
        if not isinstance(provider, StorageBackend):
            pytest.skip("error translation is checked through StorageBackend primitives")
        cp = make_checkpoint("err", 1)
        provider.save_checkpoint(cp)

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise OSError("simulated backend failure")

        setattr(provider, primitive, broken)
        child = make_checkpoint("err", 2, parent_id=cp.checkpoint_id)
        calls: list[tuple[str, Callable[[], Any]]] = [
            ("save_checkpoint", lambda: provider.save_checkpoint(child)),
            ("get_checkpoint", lambda: provider.get_checkpoint("err", cp.checkpoint_id)),
            ("get_latest_checkpoint", lambda: provider.get_latest_checkpoint("err")),
            ("list_checkpoints", lambda: provider.list_checkpoints("err")),
            ("list_sessions", provider.list_sessions),
            ("delete_session", lambda: provider.delete_session("err")),
        ]
        failed = 0
        for name, call in calls:
            try:
                call()
            except PersistencyError as exc:
                failed += 1
                assert provider.backend_name in str(exc), (
                    f"{name} failed with {type(exc).__name__}({str(exc)!r}), which does not name the backend "
                    f"{provider.backend_name!r}"
                )
                assert isinstance(exc.__cause__, OSError), f"{name}: the backend's error is not kept as the cause"
            except Exception as exc:
                raise AssertionError(
                    f"{name} let a raw {type(exc).__name__} escape when {primitive} failed; backend errors must "
                    "become PersistencyError subclasses (raise ... from exc)"
                ) from exc
        if not failed:
            pytest.skip(f"no contract call reached {primitive} on this backend (caches or a faster primitive)")
