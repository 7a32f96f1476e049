"""Resume policies: what the next run of a session does with the checkpoints already stored.

A policy is plain data (kind, checkpoint id, round budget) so that it can be logged, compared and
passed across a CLI; `persistency.feature` applies it when a chat starts. The exact meaning of
each policy is in the docstring of its constructor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from persistency.ids import validate_id

__all__ = ["PolicyKind", "ResumePolicy"]

PolicyKind = Literal["resume_latest", "resume_from", "fresh_with_history", "fresh"]
_KINDS = ("resume_latest", "resume_from", "fresh_with_history", "fresh")


@dataclass(frozen=True)
class ResumePolicy:
    """How a run starts: resume the latest run, branch from a checkpoint, or start fresh.

    Build one with the class methods; ``max_rounds`` is always "messages the run may append from
    where it starts" (AG2's ``max_round``; the opening message of a new run counts as one).
    """

    kind: PolicyKind
    checkpoint_id: str | None = None
    max_rounds: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {', '.join(_KINDS)}, not {self.kind!r}")
        if self.checkpoint_id is not None:
            if not isinstance(self.checkpoint_id, str):
                raise TypeError(f"checkpoint_id must be a str, not {type(self.checkpoint_id).__name__}")
            if self.kind in ("resume_latest", "fresh"):
                raise ValueError(f"{self.kind} takes no checkpoint_id")
            validate_id(self.checkpoint_id, "checkpoint_id")
        if self.max_rounds is not None:
            if not isinstance(self.max_rounds, int) or isinstance(self.max_rounds, bool):
                raise TypeError(f"max_rounds must be a positive integer, not {type(self.max_rounds).__name__}")
            if self.max_rounds < 1:
                raise ValueError(f"max_rounds must be a positive integer, not {self.max_rounds!r}")
        if self.kind == "resume_from" and self.checkpoint_id is None:
            raise ValueError("resume_from needs a checkpoint_id")

    @classmethod
    def resume_latest(cls, max_rounds: int | None = None) -> ResumePolicy:
        """Continue the latest run if it stopped early and gets the same opening message; else a new turn.

        Empty session: a new run. Latest run unfinished or failed and the same opening message: it
        continues from its latest checkpoint with the round budget it had left (or ``max_rounds``
        more). A different message: that run is closed as "superseded" and a new run starts with
        its transcript as history. Latest run complete: a new run with the whole transcript as
        history and a fresh budget; the finished run's terminal step is never re-run.
        """
        return cls("resume_latest", None, max_rounds)

    @classmethod
    def resume_from(cls, checkpoint_id: str, max_rounds: int | None = None) -> ResumePolicy:
        """Branch a new run from ``checkpoint_id``: its exact state, later checkpoints left untouched.

        The same opening message continues that run from there; a different one is appended as the
        next turn. Budget: what was left at that checkpoint, unless ``max_rounds`` is given.
        """
        return cls("resume_from", checkpoint_id, max_rounds)

    @classmethod
    def fresh_with_history(cls, checkpoint_id: str | None = None, max_rounds: int | None = None) -> ResumePolicy:
        """A new run with the transcript of the latest (or the given) checkpoint as history.

        Fresh round budget and speaker selection; the message passed to ``initiate_chat`` is appended.
        """
        return cls("fresh_with_history", checkpoint_id, max_rounds)

    @classmethod
    def fresh(cls, max_rounds: int | None = None) -> ResumePolicy:
        """A new run that ignores stored history; older runs stay in the session."""
        return cls("fresh", None, max_rounds)

    def __str__(self) -> str:
        args = [repr(a) for a in (self.checkpoint_id,) if a is not None]
        if self.max_rounds is not None:
            args.append(f"max_rounds={self.max_rounds}")
        return f"ResumePolicy.{self.kind}({', '.join(args)})"
