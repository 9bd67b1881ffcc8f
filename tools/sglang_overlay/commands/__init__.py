"""One module per verb: ``commands/<verb>.py`` has ``run(opts, **options) -> exit code``."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from .. import durable, journal, paths, repolock, target
from ..engine import Session
from ..manifest import Manifest, find_root, load
from ..upstream import Cache


def open_overlay(opts, upstream: str | None = None, offline: bool = False,
                 check_files: bool = True, writes: str | None = None,
                 ) -> tuple[Manifest, Session]:
    """The overlay repository of -C DIR (or a parent) and a session on its upstream.

    writes: the verb, when it writes to the overlay repository: it then holds
    the repository's lock (repolock.py) until the command ends. Read-only verbs
    do not wait for a writer.
    """
    root = open_root(opts, writes)
    manifest = load(root, check_files=check_files)
    cache = Cache(opts.cache_dir)
    paths.check_writable(cache.root, "--cache-dir")
    session = Session(manifest, cache, upstream, offline, base=opts.directory)
    swept = durable.sweep(session.cache.root)
    if (session.workspace.path / "HEAD").exists():
        if swept:  # a killed run's scratch worktree (overlay pr) is gone: drop its entry
            session.workspace.prune()
        if writes:
            target.recover_swaps(session.workspace)
    return manifest, session


def open_root(opts, writes: str | None = None) -> Path:
    """The overlay repository of -C DIR (or a parent), checked, locked and recovered.

    Its own directories must not lead out of it and its .overlay/ records must
    not come from git (both refused with exit 2 before anything is read or
    written). A writer (writes: its verb) then takes the repository's lock;
    then a change an interrupted run left half-done is finished (by a reader
    only when no writer is at work: that one finishes its own change).
    """
    root = find_root(opts.directory)
    paths.check_overlay_root(root)
    journal.check(root)  # a journal not this tool's is refused before the lock file
    if writes:
        hold_for_command(root, writes)
        recover(root)
    else:
        with repolock.try_hold(root) as free:
            if free:
                recover(root)
    return root


def recover(root: Path) -> None:
    """Finish what an interrupted run left half-done in the overlay repository."""
    journal.recover(root)


def hold_for_command(root: Path, verb: str) -> None:
    """Take the repository's lock until the current command ends."""
    if repolock.is_held(root):
        return
    ctx = click.get_current_context(silent=True)
    cm = repolock.hold(root, verb)
    if ctx is not None:
        ctx.with_resource(cm)
    else:  # called outside the CLI: hold it for the rest of the process
        _kept.enter_context(cm)


_kept = contextlib.ExitStack()
