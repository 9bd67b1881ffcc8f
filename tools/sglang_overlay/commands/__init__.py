"""One module per verb: ``commands/<verb>.py`` has ``run(opts, **options) -> exit code``."""

from __future__ import annotations

from pathlib import Path

from .. import journal, paths
from ..engine import Session
from ..manifest import Manifest, find_root, load
from ..upstream import Cache


def open_overlay(opts, upstream: str | None = None, offline: bool = False,
                 check_files: bool = True) -> tuple[Manifest, Session]:
    """The overlay repository of -C DIR (or a parent) and a session on its upstream."""
    root = open_root(opts)
    manifest = load(root, check_files=check_files)
    cache = Cache(opts.cache_dir)
    paths.check_writable(cache.root, "--cache-dir")
    return manifest, Session(manifest, cache, upstream, offline,
                             base=opts.directory)


def open_root(opts) -> Path:
    """The overlay repository of -C DIR (or a parent), checked and recovered.

    Its own directories must not lead out of it and its .overlay/ records must
    not come from git (both refused with exit 2 before anything is read or
    written); then a change an interrupted run left half-done is finished.
    """
    root = find_root(opts.directory)
    paths.check_overlay_root(root)
    journal.recover(root)
    return root
