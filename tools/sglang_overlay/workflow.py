"""The end of every applying verb: promote a clean build, or stop on a conflict.

apply, upgrade and `refresh --continue` all finish the same way: a build
without conflicts is linted and swapped into the target worktree; a build
with a conflict leaves the target untouched, a resolution worktree with the
markers beside it, and a state file that `overlay refresh --continue` reads.
"""

from __future__ import annotations

import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import click

from . import lint as lint_mod
from . import patchfile, state, target
from .durable import crash_point
from .engine import Build, Session
from .gitutil import Git, GitError
from .units import moves

RESOLVED_DIR = "resolved"


@dataclass
class Finished:
    """What finish() did: the build promoted to the target, or a resolution left."""

    build: Build
    worktree: Path
    branch: str
    what: str = ""  # created / updated / recommitted / unchanged (see target.promote)
    backup: str | None = None
    resolution: Path | None = None
    patch: Path | None = None  # the conflicting unit's patch file, if it is a patch unit
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
            data["guidance"] = conflict_guidance(self, self.build.ref)
        return data


def finish(session: Session, build: Build, pre: target.Preflight, operation: str,
           extra_state: dict, run_lint: bool = True) -> Finished:
    """Promote build to the target, or leave a resolution worktree and state."""
    root = session.manifest.root
    out = Finished(build, pre.target, pre.branch)
    if build.ok:
        if run_lint:
            out.findings = lint_mod.lint_build(session, build)
        out.what, out.backup = target.promote(session.workspace, pre, build.head,
                                                 build.tree, build.base)
        pending = state.load(root)
        if pending and pending.get("target") == str(pre.target):
            # marked first: a run killed while dropping it leaves a state the next
            # command recognises as done (load_pending)
            state.save(root, {**pending, "finished": True})
            drop_resolution(session, pending)
        return out
    first = build.conflicts[0]
    patch = session.patch_file(first.unit) if first.unit.kind == "patch" else None
    out.resolution = target.leave_resolution(session.workspace, pre.target, first.parent, patch)
    out.patch = patch
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
        # ... and its content as left (markers included): edits are what differs
        "resolution_tree": target.content_tree(out.resolution),
        "target": str(pre.target),
        "branch": pre.branch,
        "overrides": {k: str(v) for k, v in session.patch_overrides.items()},
    })
    return out


def load_pending(session: Session) -> dict | None:
    """The unfinished operation, if any; one a killed run had finished is cleared."""
    pending = state.load(session.manifest.root)
    if pending and pending.get("finished"):
        drop_resolution(session, pending)
        return None
    return pending


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
        left = pending.get("resolution_tree")
        edited = target.is_dirty(res) and (left is None or target.content_tree(res) != left)
        if edited or (start and target.head_of(res) != start):
            saved = target.backup(res, "dropping the resolution worktree")
        with ws.lock:
            ws.remove_worktree(res)
        crash_point("abort-worktree-removed")
    shutil.rmtree(state.state_dir(root) / RESOLVED_DIR, ignore_errors=True)
    state.clear(root)
    return saved


def explain_conflict(out: Finished, ref: str) -> None:
    first = out.build.conflicts[0]
    click.echo(f"conflict in unit '{first.unit.name}' on {ref}: {out.worktree} was not touched.")
    for line in conflict_guidance(out, ref):
        click.echo(line)


MARKER = re.compile(r"^(<<<<<<<|>>>>>>>)( |$)", re.M)
FINISH = ("then run `overlay refresh --continue`; or give up with `overlay refresh --abort`.")


def _ere(text: str) -> str:
    """text as a literal in a POSIX extended regular expression (sed -E)."""
    return re.sub(r"([.\[\]*^$+?(){}|\\])", r"\\\1", text)


def conflict_guidance(out: Finished, ref: str) -> list[str]:
    """What to do next, told from the resolution worktree as it actually is:
    conflict markers to edit, or files gone upstream and where they went."""
    res = out.resolution
    first = out.build.conflicts[0]
    if first.unit.kind != "patch":
        return [f"Unit '{first.unit.name}' is a {first.unit.kind} unit ({first.detail}): not "
                f"a text conflict to resolve in {res}. Update the unit in overlay.toml (or "
                "turn the change into a patch unit), then `overlay refresh --abort` and run "
                "the command again."]
    g = Git(res)
    changed = g.run("diff", "--name-only", "HEAD").splitlines()
    marked = [p for p in changed if (res / p).is_file()
              and MARKER.search((res / p).read_text(errors="replace"))]
    if marked:
        return [f"Resolve it in {res}: `git status` there lists the conflicted files "
                f"({', '.join(marked)}); edit them until no conflict markers are left "
                f"(committing is optional), {FINISH}"]
    parsed = None
    if out.patch is not None:
        try:
            parsed = patchfile.parse(out.patch.read_bytes())
        except (OSError, patchfile.NotAPatch):
            parsed = None
    gone = moves.gone_files(lambda p: (res / p).exists(), parsed) if parsed else []
    if not gone:
        where = "; ".join(first.hunks) or ", ".join(first.files)
        return [f"{res} has no conflict markers: the patch did not apply there ({where}).",
                f"Make its change by hand in {res} (the patch: {out.patch or first.unit.name}); "
                f"committing is optional; {FINISH}"]
    tree = g.tree_of("HEAD")
    lines = [f"{res} has no conflict markers: the patch could not be applied there, because"]
    homes = {}
    for f in gone:
        try:
            cands = moves.whereabouts(g, tree, f)
        except GitError:
            cands = []
        if cands:
            lines.append(f"  {f.old_path} is gone upstream on {ref}; its content most likely "
                         "went to:")
            lines += [f"    {c.text()}" for c in cands]
            if cands[0].renamed or len(cands) == 1:
                homes[f.old_path] = cands[0].path
        else:
            lines.append(f"  {f.old_path} is gone upstream on {ref}, and no file there is "
                         "similar to it or defines what its hunks name")
    if len(homes) == len(gone):
        script = " ".join(
            "-e " + shlex.quote(r"/^(diff --git|--- |\+\+\+ )/s#([ab])/" + _ere(old)
                                + r"( |$)#\1/" + new + r"\2#g")
            for old, new in homes.items())
        moved = ", ".join(f"{old} -> {new}" for old, new in homes.items())
        lines += [f"Next: carry the patch over to the new home ({moved}) with a 3-way merge:",
                  f"  cd {shlex.quote(str(res))} && sed -E {script} "
                  f"{shlex.quote(str(out.patch))} | git apply --3way",
                  "then edit the files it leaves conflict markers in (`git status` lists them; "
                  "move a hunk by hand where its code went elsewhere) until none are left "
                  f"(committing is optional), {FINISH}"]
    else:
        lines.append(f"Next: make the patch's change ({out.patch}) by hand in {res}, in the "
                     "file where that code lives now (git cannot tell which one of those it "
                     f"is); committing is optional; {FINISH}")
    return lines


def refuse_unfinished(pending: dict | None, force: bool | None = None) -> None:
    """An applying verb does not start over an operation stopped on a conflict
    (pending, the state file): bad input, unless force is True. force None: the
    verb has no --force to offer."""
    if pending and not force:
        fix = ("finish it with `overlay refresh --continue`, drop it with "
               "`overlay refresh --abort`, or re-run with --force" if force is not None else
               "finish it with `overlay refresh --continue` or drop it with "
               "`overlay refresh --abort`")
        from .errors import BadInput

        raise BadInput(f"an unfinished {pending['operation']} stopped on a conflict in unit "
                       f"'{pending['unit']}' (resolution worktree {pending['resolution']})", fix)
