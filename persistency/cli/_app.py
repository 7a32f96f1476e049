"""The typer application: the command table, the global options, and the one place where errors
become one line.

Every `PersistencyError` (unknown session, bad URL, unreachable server, damaged record) and every
OS error is printed as ``error: ...`` on stderr, never as a traceback: exit status 2 for bad usage
(a malformed URL, an unknown scheme, an invalid id), 1 for everything else. Set
``PERSISTENCY_DEBUG=1`` to see the traceback of an unexpected error.
"""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any, NoReturn

import typer
from rich.text import Text
from typer.core import TyperGroup
from typer.exceptions import TyperException

from persistency.cli import _continue, _copy, _delete, _inspect, _prune, _verify
from persistency.cli._common import err_console
from persistency.cli._connect import TIMEOUT_ENV_VAR, describe_timeout, set_timeout
from persistency.errors import (
    InvalidIdentifierError,
    MissingDependencyError,
    PersistencyError,
    ProviderConfigError,
    StorageUnavailableError,
)
from persistency.redaction import redact_text

__all__ = ["app", "main", "version_text"]


class _Group(TyperGroup):
    """A typer group that turns the library's errors into one line on stderr and an exit status."""

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click.Context
        try:
            return super().invoke(ctx)
        except (TyperException, typer.Exit, typer.Abort):
            raise
        except (PersistencyError, OSError) as exc:
            _fail(_describe(exc), 2 if _is_usage(exc) else 1)
        except Exception as exc:
            if os.environ.get("PERSISTENCY_DEBUG"):
                raise
            _fail(f"unexpected {type(exc).__name__}: {redact_text(str(exc))} (PERSISTENCY_DEBUG=1 shows the traceback)",
                  1)


def _is_usage(exc: BaseException) -> bool:
    """A URL, option or id the person typed is wrong (not a missing extra, not the store's state)."""
    if isinstance(exc, MissingDependencyError):
        return False
    return isinstance(exc, ProviderConfigError | InvalidIdentifierError)


def _describe(exc: BaseException) -> str:
    text = redact_text(" ".join(str(exc).split())) or type(exc).__name__
    if isinstance(exc, StorageUnavailableError | ConnectionError | TimeoutError):
        timed_out = describe_timeout(exc, text)
        if timed_out is not None:
            return timed_out
        if "unavailable" not in text.lower():
            text = f"storage unavailable: {text}"
    return text


def _fail(message: str, code: int) -> NoReturn:
    err_console().print(Text("error: ", style="bold red") + Text(message), soft_wrap=True)
    raise typer.Exit(code)


def version_text() -> str:
    """This library's version, the AG2 Classic distribution it runs with (read without importing it),
    and Python's: what a bug report needs."""
    from persistency import __version__

    ag2 = []
    for dist in ("ag2", "autogen"):
        try:
            ag2.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            continue
    found = ", ".join(ag2) or "none installed (pip install 'ag2-persistency[autogen]' or '[ag2]')"
    return f"ag2-persistency {__version__} (AG2 Classic: {found}; Python {platform.python_version()})"


def _version(value: bool) -> None:
    if value:
        typer.echo(version_text())
        raise typer.Exit(0)


app = typer.Typer(
    cls=_Group,
    name="persistency",
    help=(
        "Inspect, continue, copy, prune, verify and delete checkpointed AG2 group chats.\n"
        "Every command reads the store named by --url (default: $PERSISTENCY_URL, else ./.persistency). "
        "Tables are for people; add --json for scripts. Exit status: 0 ok, 1 error or damage found, "
        "2 bad usage, 130 interrupted."
    ),
    epilog=(
        "Examples:\n\n"
        "  persistency sessions\n"
        "  persistency show conv-42 --last 20\n"
        "  persistency show conv-42 latest\n"
        "  persistency continue conv-42 --rounds 10 --message 'Check the answer again.'\n"
        "  persistency copy ./.persistency s3://my-bucket/chats\n"
        "  persistency prune --older-than 30d --keep-last-runs 3 --dry-run\n"
        "  persistency verify --json\n"
        "  persistency --timeout 30 sessions --url redis://cache:6379/0"
    ),
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="rich",
)


@app.callback()
def _options(
    show_version: Annotated[
        bool, typer.Option("--version", "-V", is_eager=True, callback=_version,
                           help="Print the version (and the AG2 Classic installed) and exit.")
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", metavar="SECONDS", min=0.1, envvar=TIMEOUT_ENV_VAR, show_default=False,
                     help="Connect and read timeout for Redis and S3 (default 5, or what the URL sets)."),
    ] = None,
) -> None:
    """Options for every command."""
    set_timeout(timeout)


app.command("sessions")(_inspect.sessions)
app.command("show")(_inspect.show)
app.command("export")(_inspect.export)
app.command("continue")(_continue.continue_)
app.command("copy")(_copy.copy)
app.command("prune")(_prune.prune)
app.command("verify")(_verify.verify)
app.command("delete")(_delete.delete)


def main() -> None:
    """Entry point of the ``persistency`` console script."""
    app()
