"""`overlay gc`: remove what killed runs left behind in the cache.

Runs started with ``kill -9`` can leave scratch directories (``<cache>/tmp``),
temporary worktrees beside a target (``.sglang-<ref>.overlay-tmp-*``), a
worktree swap half-done, and worktree entries whose directories are gone.
Every verb already cleans up after the runs it meets; gc does it for the
whole cache: only what belongs to processes that are no longer running is
touched, so it is safe while other runs are at work.
"""

from __future__ import annotations

from pathlib import Path

import click

from .. import durable, report, target
from ..errors import OK
from ..gitutil import Git
from ..upstream import Cache


def run(opts, as_json) -> int:
    cache = Cache(opts.cache_dir)
    removed = [str(p) for p in durable.sweep(cache.root)]
    finished, pruned = [], []
    workspaces = cache.root / "workspaces"
    for path in sorted(workspaces.glob("*.git")) if workspaces.is_dir() else []:
        if not (path / "HEAD").exists():
            continue
        g = Git(path)
        before = _registered(g)
        root = g.config_value("overlay.root")
        url = g.config_value("overlay.url")
        ws = cache.workspace(cache.mirror(url), Path(root)) if root and url else None
        if ws is not None and ws.path == path:
            finished += [str(t) for t in target.recover_swaps(ws)]
            for wt in ws.worktrees():
                pid = durable.pid_of(wt.name)
                if target.TMP_MARK in wt.name and pid and not durable.pid_alive(pid):
                    ws.remove_worktree(wt)
                    removed.append(str(wt))
        g.prune_worktrees()
        pruned += sorted(before - _registered(g) - set(removed) - set(finished))
    if as_json:
        report.emit_json({"cache": str(cache.root), "removed": removed,
                          "finished_swaps": finished, "pruned_worktrees": pruned,
                          "exit_code": OK})
        return OK
    for p in removed:
        click.echo(f"removed {p}")
    for p in finished:
        click.echo(f"finished the interrupted worktree swap of {p}")
    for p in pruned:
        click.echo(f"pruned the entry of {p} (its directory is gone)")
    click.echo(f"{cache.root}: {len(removed)} removed, {len(finished)} swaps finished, "
               f"{len(pruned)} worktree entries pruned")
    return OK


def _registered(g: Git) -> set[str]:
    return g.worktree_paths()
