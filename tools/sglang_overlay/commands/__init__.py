"""One module per verb: ``commands/<verb>.py`` has ``run(opts, **options) -> exit code``."""

from __future__ import annotations


from .. import journal
from ..engine import Session
from ..manifest import Manifest, find_root, load
from ..upstream import Cache


def open_manifest(opts, check_files: bool = True) -> Manifest:
    """The manifest of the overlay repository of -C DIR (or a parent), after
    finishing any change an interrupted run left half-done."""
    root = find_root(opts.directory)
    journal.recover(root)
    return load(root, check_files=check_files)


def open_overlay(opts, upstream: str | None = None, offline: bool = False,
                 check_files: bool = True) -> tuple[Manifest, Session]:
    """The overlay's manifest (open_manifest) and a session on its upstream."""
    manifest = open_manifest(opts, check_files)
    return manifest, Session(manifest, Cache(opts.cache_dir), upstream, offline)
