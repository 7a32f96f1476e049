"""The typer application: the command table and the one place where errors become one line.

Every `PersistencyError` (unknown session, bad URL, unreachable server, damaged record) and every
OS error is printed as ``error: ...`` on stderr with exit status 1, never as a traceback. Set
``PERSISTENCY_DEBUG=1`` to see the traceback of an unexpected error.
"""

from __future__ import annotations

import os
from typing import Any, NoReturn

import typer
from rich.text import Text
from typer.core import TyperGroup
from typer.exceptions import TyperException

from persistency.cli import _continue, _copy, _inspect, _prune, _verify
from persistency.cli._common import err_console
from persistency.errors import PersistencyError, StorageUnavailableError
from persistency.redaction import redact_text

__all__ = ["app", "main"]


class _Group(TyperGroup):
    """A typer group that turns the library's errors into one line on stderr and exit status 1."""

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click.Context
        try:
            return super().invoke(ctx)
        except (TyperException, typer.Exit, typer.Abort):
            raise
        except (PersistencyError, OSError) as exc:
            _fail(_describe(exc))
        except Exception as exc:
            if os.environ.get("PERSISTENCY_DEBUG"):
                raise
            _fail(f"unexpected {type(exc).__name__}: {redact_text(str(exc))} (PERSISTENCY_DEBUG=1 shows the traceback)")


def _describe(exc: BaseException) -> str:
    text = redact_text(" ".join(str(exc).split())) or type(exc).__name__
    if isinstance(exc, StorageUnavailableError | ConnectionError) and "unavailable" not in text.lower():
        text = f"storage unavailable: {text}"
    return text


def _fail(message: str) -> NoReturn:
    err_console().print(Text("error: ", style="bold red") + Text(message), soft_wrap=True)
    raise typer.Exit(1)


app = typer.Typer(
    cls=_Group,
    name="persistency",
    help=(
        "Inspect, continue, copy, prune and verify checkpointed AG2 group chats.\n"
        "Every command reads the store named by --url (default: $PERSISTENCY_URL, else ./.persistency). "
        "Tables are for people; add --json for scripts. Exit status: 0 ok, 1 error or damage found, "
        "2 bad usage."
    ),
    epilog=(
        "Examples:\n\n"
        "  persistency sessions\n"
        "  persistency show conv-42 --last 20\n"
        "  persistency show conv-42 latest\n"
        "  persistency continue conv-42 --rounds 10 --message 'Check the answer again.'\n"
        "  persistency copy ./.persistency s3://my-bucket/chats\n"
        "  persistency prune --older-than 30d --keep-last-runs 3 --dry-run\n"
        "  persistency verify --json"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="rich",
)

app.command("sessions")(_inspect.sessions)
app.command("show")(_inspect.show)
app.command("export")(_inspect.export)
app.command("continue")(_continue.continue_)
app.command("copy")(_copy.copy)
app.command("prune")(_prune.prune)
app.command("verify")(_verify.verify)


def main() -> None:
    """Entry point of the ``persistency`` console script."""
    app()
