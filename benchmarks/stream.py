"""The deterministic message stream every scenario replays: three speakers, ~500 characters each.

Every message ends with `MARKER`, a token that appears in message payloads and nowhere else, so a
request counter can tell whether listing checkpoints read a payload (at the end, so that a ranged
read of a record's first bytes, which may run a little past its info line, does not count).
"""

from __future__ import annotations

import functools
import json
import random
from typing import Any

__all__ = ["AGENTS", "MARKER", "MESSAGE_CHARS", "make_text", "speaker_of", "transcript", "transcript_json_bytes"]

AGENTS = ("alice", "bob", "carol")
MESSAGE_CHARS = 500
MARKER = "PAYLOADMARK"

_WORDS = (
    "the group chat checkpoint resumes after every step while agents reason about a plan and "
    "propose code review tests results numbers storage latency durable append only log snapshot "
    "alpha beta gamma delta epsilon vector matrix integral proof lemma theorem answer question"
).split()


@functools.cache
def make_text(index: int, speaker: str, chars: int = MESSAGE_CHARS) -> str:
    """The ``index``-th message's text: deterministic, ``chars`` characters, marker at the end.

    Cached: warm it (`transcript`) before timing, so a scripted reply costs next to nothing and
    the run without persistence is as fast as it can be (the harshest baseline for overheads).
    """
    rng = random.Random(index * 7919 + 17)
    head = f"[{index:06d} {speaker}] "
    body = chars - len(MARKER) - 1
    words: list[str] = []
    size = len(head)
    while size < body:
        w = rng.choice(_WORDS)
        words.append(w)
        size += len(w) + 1
    return (head + " ".join(words))[:body] + " " + MARKER


def speaker_of(index: int) -> str:
    """Round robin: message ``index`` is spoken by this agent."""
    return AGENTS[index % len(AGENTS)]


def transcript(steps: int) -> list[dict[str, Any]]:
    """The stream's first ``steps`` messages as AG2-style message dicts."""
    return [
        {"content": make_text(i, speaker_of(i)), "role": "user" if i == 0 else "assistant", "name": speaker_of(i)}
        for i in range(steps)
    ]


def transcript_json_bytes(messages: list[dict[str, Any]]) -> int:
    """Size of the transcript as compact UTF-8 JSON: the yardstick for "bytes stored"."""
    return len(json.dumps(messages, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
