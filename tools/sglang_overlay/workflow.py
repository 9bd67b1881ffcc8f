"""The end of every applying verb: promote a clean build, or stop on a conflict.

apply, upgrade and `refresh --continue` all finish the same way: a build
without conflicts is linted and swapped into the target worktree; a build
with a conflict leaves the target untouched, a resolution worktree with the
markers beside it, and a state file that `overlay refresh --continue` reads.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import click

from . import lint as lint_mod
from . import state, target
from .engine import Build, Session

RESOLVED_DIR = "resolved"


@dataclass
class Outcome:
    build: Build
    worktree: Path
    branch: str
    what: str = ""  # created / updated / recommitted / unchanged (see target.promote)
    backup: str | None = None
    resolution: Path | None = None
    findings: list = field(default_factory=list)

    def to_json(self) -> dict:
        data = {
            "worktree": str(self.worktree),
            "branch": self.branch,
            "commit": self.build.head if self.build.ok else None,
            "tree": self.build.tree if self.build.ok else None,
            "changed": self.what not in ("", "unchanged"),
            "worktree_state": self.what or None,
            "backup": self.backup,
            "lint": [f.to_json() for f in self.findings],
        }
        if self.resolution:
            data["resolution"] = str(self.resolution)
            data["conflict"] = self.build.conflicts[0].unit.name
        return data


def finish(session: Session, build: Build, pre: target.Preflight, operation: str,
           extra_state: dict, run_lint: bool = True) -> Outcome:
    """Promote build to the target, or leave a resolution worktree and state."""
    root = session.manifest.root
    out = Outcome(build, pre.target, pre.branch)
    if build.ok:
        if run_lint:
            out.findings = lint_mod.lint_build(session, build)
        out.what, out.backup = target.promote(session.workspace, pre, build.head,
                                                 build.tree, build.base)
        pending = state.load(root)
        if pending and pending.get("target") == str(pre.target):
            drop_resolution(session, pending)
        return out
    first = build.conflicts[0]
    patch = session.patch_file(first.unit) if first.unit.kind == "patch" else None
    out.resolution = target.leave_resolution(session.workspace, pre.target, first.parent, patch)
    state.save(root, {
        **extra_state,
        "operation": operation,
        "ref": build.ref,
        "upstream": session.url,
        "base": build.base,
        "unit": first.unit.name,
        "resolution": str(out.resolution),
        # the commit the resolution worktree started at: the resolution is
        # everything on top of it, committed or not
        "resolution_base": first.parent,
        "target": str(pre.target),
        "branch": pre.branch,
        "overrides": {k: str(v) for k, v in session.patch_overrides.items()},
    })
    return out


def drop_resolution(session: Session, pending: dict) -> str | None:
    """Remove a finished or abandoned resolution worktree and the state.

    Uncommitted work in it is saved to a backup ref first; returns that ref.
    """
    root = session.manifest.root
    saved = None
    res = Path(pending["resolution"])
    ws = session.workspace
    if res.exists() and ws.owns(res):
        start = pending.get("resolution_base")
        if target.is_dirty(res) or (start and target.head_of(res) != start):
            saved = target.backup(res, "dropping the resolution worktree")
        with ws.lock:
            ws.remove_worktree(res)
    shutil.rmtree(state.state_dir(root) / RESOLVED_DIR, ignore_errors=True)
    state.clear(root)
    return saved


def explain_conflict(out: Outcome, ref: str) -> None:
    first = out.build.conflicts[0]
    click.echo(f"conflict in unit '{first.unit.name}' on {ref}: {out.worktree} was not touched.")
    click.echo(f"Resolve it in {out.resolution} (`git status` there lists the conflicted "
               "files; edit them until no conflict markers are left; committing is "
               "optional), then run `overlay refresh --continue`; or give up with "
               "`overlay refresh --abort`.")
