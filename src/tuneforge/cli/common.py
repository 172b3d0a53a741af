"""What every command group shares: the consoles and the one error path.

Every `TuneforgeError` (and a missing or already existing file) raised anywhere below a
command ends as `error: <message>` on stderr and exit code 2, never a traceback: the root
command group catches it (`ErrorGroup`), so no command has to remember to. Anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
from pathlib import Path

import typer
from rich.console import Console
from typer.core import TyperGroup

from ..errors import TuneforgeError

console = Console()
err = Console(stderr=True, soft_wrap=True)

# besides the project's own errors: a path the user gave that is missing / already there
USER_ERRORS: tuple[type[BaseException], ...] = (TuneforgeError, FileNotFoundError, FileExistsError)


def fail(exc: BaseException | str) -> None:
    """Print the error as one message and exit 2."""
    err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
    raise typer.Exit(code=2)


def guard(fn, *args, **kwargs):
    """fn(*args, **kwargs), a user error (or a full disk) turned into `fail`."""
    try:
        return fn(*args, **kwargs)
    except USER_ERRORS as exc:
        fail(exc)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = exc.filename or "the run directory"
        # every stage writes aside and renames: what was there before this write is still whole
        fail(
            f"disk full while writing {where} — free some space and run the command again (nothing that was already written was replaced)"
        )


def run_dir(path: Path):
    """The run directory at `path`, or a clear error when it is not one."""
    from ..run import RunDir

    return guard(RunDir(path).require)


class ErrorGroup(TyperGroup):
    """The root command group: a user error from any (sub)command becomes `fail`."""

    def invoke(self, ctx):
        return guard(super().invoke, ctx)
