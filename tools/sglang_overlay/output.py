"""The messages a verb writes beside its report, all on stderr.

stdout carries only the report (a table, markdown or --json); everything
else goes through here: warnings, progress for people at a terminal, and the
output of tools the verb ran (pip, a build backend). Fatal errors are not
written here: a verb raises an OverlayError (errors.py) and ``cli.main`` writes
its one line and maps it to the exit code.
"""

from __future__ import annotations

import sys

import click


def is_terminal() -> bool:
    return sys.stderr.isatty()


def info(message: str) -> None:
    """A line worth knowing (what the verb did besides its report)."""
    click.echo(message, err=True)


def warn(message: str, loud: bool = False) -> None:
    """A line the user must see (loud: in bold red at a terminal)."""
    if loud:
        click.secho(message, err=True, fg="red", bold=True)
    else:
        click.echo(message, err=True)


def progress(message: str) -> None:
    """A progress line, only for people at a terminal."""
    if is_terminal():
        click.echo(message, err=True)


def passthrough(text: str) -> None:
    """Output of a tool the verb ran, as it came (lines keep their own newlines)."""
    sys.stderr.write(text)
    sys.stderr.flush()
