"""durability="async" on the filesystem: the writer stores what is queued at each wake-up as one batch."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
from persistency.providers.filesystem import FilesystemStorageProvider

from persistency import Persistency
from persistency.models import Checkpoint
from tests.helpers_ag2 import build_chat


def test_a_busy_async_writer_stores_its_queue_with_one_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    provider = FilesystemStorageProvider(tmp_path)
    gate = threading.Event()
    batches: list[int] = []
    single, many = provider.save_checkpoint, provider.save_checkpoints

    def hold() -> None:  # the writer's first call waits until the chat has queued ten more steps
        if not batches:
            gate.wait(30)

    def counted_single(cp: Checkpoint) -> None:
        hold()
        batches.append(1)
        single(cp)

    def counted_many(cps: Any) -> None:
        hold()
        batches.append(len(cps))
        many(cps)

    monkeypatch.setattr(provider, "save_checkpoint", counted_single)
    monkeypatch.setattr(provider, "save_checkpoints", counted_many)
    syncs = []
    real_fdatasync = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (syncs.append(fd), real_fdatasync(fd))[1])

    chat = build_chat(max_round=16)
    feature = Persistency(provider, "s", durability="async", max_pending=100)
    feature.attach(chat.manager)
    t = threading.Thread(target=lambda: chat.user.initiate_chat(chat.manager, message="hello", silent=True))
    t.start()
    for _ in range(3000):  # the chat runs ahead of the held writer: its steps wait in the queue
        if len(chat.manager.groupchat.messages) >= 12 or not t.is_alive():
            break
        threading.Event().wait(0.01)
    gate.set()
    t.join(60)
    feature.detach()
    stored = FilesystemStorageProvider(tmp_path).list_checkpoints("s")
    assert sum(batches) == len(stored) and len(stored) >= 16, (batches, len(stored))
    assert max(batches) >= 8, batches  # the queued steps went in one batch
    assert len(syncs) <= len(batches) + 3, (syncs, batches)  # one sync per batch (+ the new folders, once)
    latest = FilesystemStorageProvider(tmp_path).get_latest_checkpoint("s")
    assert latest is not None and latest.messages == chat.manager.groupchat.messages
