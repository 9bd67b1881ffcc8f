"""One module per verb: ``commands/<verb>.py`` has ``run(opts, **options) -> exit code``."""

from __future__ import annotations


from .. import journal
from ..engine import Session
from ..manifest import Manifest, find_root, load
from ..upstream import Cache


def open_overlay(opts, upstream: str | None = None, offline: bool = False,
                 check_files: bool = True) -> tuple[Manifest, Session]:
    """The overlay repository of -C DIR (or a parent) and a session on its upstream."""
    root = find_root(opts.directory)
    journal.recover(root)  # finish a change an interrupted run left half-done
    manifest = load(root, check_files=check_files)
    return manifest, Session(manifest, Cache(opts.cache_dir), upstream, offline,
                             base=opts.directory)
