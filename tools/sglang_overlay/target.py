"""The target worktree and branch: checked before the work, changed only after.

Policy in one place:
  * a target that exists must be one of this overlay's worktrees, and clean
    (``--force`` saves its changes to a backup ref first, then proceeds);
  * a finished build is checked out next to the target and swapped in with
    renames, and the branch ``overlay/<ref>`` is moved with one ref update,
    so a killed run leaves either the old target or the new one, never a
    half-applied one;
  * on a conflict the target is untouched and a resolution worktree with the
    conflict markers is left beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from . import durable, output, paths
from .durable import crash_point
from .errors import BadInput
from .gitutil import Git, identity_env, worktree_gitdir
from .upstream import Workspace

TMP_MARK = ".overlay-tmp-"
SWAPS_DIR = "overlay-swaps"  # in the workspace: swaps under way, one record each


def branch_for(ref: str) -> str:
    return "overlay/" + re.sub(r"[^A-Za-z0-9._/-]+", "-", ref).strip("/")


def default_target(root: Path, ref: str) -> Path:
    return root / ("sglang-" + re.sub(r"[^A-Za-z0-9._-]+", "-", ref))


def resolution_path(target: Path) -> Path:
    return target.with_name(target.name + "-conflict")


def clean_stale(ws: Workspace, target: Path) -> None:
    """Remove temporary worktrees that killed runs left beside target."""
    recover_swaps(ws)
    parent = target.parent
    if not parent.is_dir():
        return
    prefix = f".{target.name}{TMP_MARK}"
    for entry in parent.iterdir():
        if not entry.name.startswith(prefix):
            continue
        try:
            pid = int(entry.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if not durable.pid_alive(pid) or pid == os.getpid():
            ws.remove_worktree(entry)
            shutil.rmtree(entry, ignore_errors=True)
    # a run killed inside `git worktree move` renamed the directory but not
    # its admin link: repair it before prune would drop the admin entry
    for path in (target, resolution_path(target)):
        if (path / ".git").is_file():
            ws.git.result("worktree", "repair", str(path))
    ws.prune()


def _tmp_path(target: Path, what: str) -> Path:
    return target.parent / f".{target.name}{TMP_MARK}{what}-{os.getpid()}"


def is_dirty(path: Path) -> bool:
    return bool(Git(path).run("status", "--porcelain", "--untracked-files=normal"))


def head_of(path: Path) -> str:
    return Git(path).run("rev-parse", "HEAD")


@dataclass
class Preflight:
    target: Path
    branch: str
    exists: bool
    dirty: bool
    moved: bool = False  # HEAD has commits that apply did not make (kept with --force)


def preflight(ws: Workspace, target: Path, branch: str, force: bool) -> Preflight:
    """Refuse a target we must not touch, before any work is done (and before
    anything is created in the cache)."""
    paths.refuse_worktree_inside(target, ws.overlay_root)
    if not Git(ws.overlay_root).result("check-ref-format", "--branch", branch).ok:
        raise BadInput(f"'{branch}' is not a valid branch name",
                       "pass --branch a name git accepts, e.g. overlay/v0.5.1")
    paths.check_writable(target.parent, "--worktree")
    exists = target.exists() or target.is_symlink()
    dirty = False
    if exists:
        if not ws.owns(target):
            raise BadInput(
                f"{target} exists and is not a worktree this overlay created",
                "pass --worktree with another path, or move that directory away",
            )
        if ws.orphaned(target):
            if not force:
                raise BadInput(
                    f"{target} is a worktree whose git data was in a cache that is gone",
                    "move it away, or re-run with --force (it is moved aside, not deleted)")
            aside = set_aside(target)
            output.warn(f"overlay: moved the orphaned worktree {target} to {aside}")
            exists = False
    if exists:
        dirty = is_dirty(target)
        if dirty and not force:
            raise BadInput(
                f"{target} has uncommitted changes",
                "commit or stash them, write them back with `overlay refresh`, or "
                "re-run with --force (your changes are saved to a backup ref first)",
            )
        # what apply put there: the last finished promotion, or the one a killed
        # run was in the middle of
        known = {ws.git.rev(built_ref(branch)), ws.git.rev(next_ref(branch))} - {None}
        head = Git(target).rev("HEAD")
        built = ws.git.rev(built_ref(branch)) or ""
        moved = bool(known and head and head not in known)
        if moved and not force:
            count = Git(target).result("rev-list", "--count", f"{built}..{head}").out.strip()
            raise BadInput(
                f"{target} has commits that overlay apply did not make "
                f"({count or 'some'} on top of {built[:12]}, or a different HEAD)",
                "write them back into the overlay with `overlay refresh`, or re-run "
                "with --force (they are saved to a backup ref first)",
            )
    else:
        moved = False
    for path, info in ws.worktrees().items():
        if info.get("branch") == f"refs/heads/{branch}" and path.resolve() != target.resolve() \
                and path.exists() and TMP_MARK not in path.name:
            raise BadInput(
                f"branch {branch} is checked out in another worktree, {path}",
                f"pass --worktree {path} to update that one, or remove it with "
                f"`git worktree remove {path}`",
            )
    return Preflight(target, branch, exists, dirty, moved)


def workspace_cache(worktree: Path) -> Path:
    """The cache a worktree's git data lives in (<cache>/workspaces/<ws>/worktrees/<name>)."""
    gitdir = worktree_gitdir(worktree)
    if gitdir is None:
        raise ValueError(f"{worktree} is not a linked git worktree")
    return gitdir.parents[3]


def set_aside(path: Path) -> Path:
    """Rename path to an unused <name>.orphaned-<n> beside it; the new path."""
    n = 1
    while (aside := path.with_name(f"{path.name}.orphaned-{n}")).exists():
        n += 1
    path.rename(aside)
    return aside


def content_tree(path: Path) -> str:
    """The tree of everything in a worktree (untracked files too), as it is now."""
    g = Git(path)
    with durable.scratch(workspace_cache(path), "backup") as tmp:
        index = str(Path(tmp) / "index")
        gi = g.with_env(GIT_INDEX_FILE=index)
        gi.run("read-tree", "HEAD")
        gi.run("add", "-A", ".")
        return gi.run("write-tree")


def backup(path: Path, label: str) -> str:
    """Save every change in a worktree (untracked files too) as a commit; its ref."""
    g = Git(path)
    tree = content_tree(path)
    env = identity_env(int(time.time()))
    sha = g.run("commit-tree", tree, "-p", "HEAD", "-m",
                f"overlay: backup of {path} before {label}", env=env)
    ref = f"refs/overlay-backups/{int(time.time())}-{sha[:12]}"
    g.run("update-ref", ref, sha)
    return ref


def base_ref(branch: str) -> str:
    """Where the upstream commit a branch was built on is recorded."""
    return f"refs/overlay-base/{branch}"


def built_ref(branch: str) -> str:
    """Where the commit apply last put on a branch is recorded, so that commits
    made by hand on top are noticed before they could be replaced."""
    return f"refs/overlay-built/{branch}"


def next_ref(branch: str) -> str:
    """The commit a promotion under way is putting there (see built_ref)."""
    return f"refs/overlay-next/{branch}"


def promote(ws: Workspace, pre: Preflight, head: str, tree: str,
            base: str) -> tuple[str, str | None]:
    """Make target and branch show head. (what happened, backup ref or None).

    What happened: "created", "updated" (files changed), "recommitted" (same
    tree, new commits: e.g. the overlay repository moved on) or "unchanged".
    """
    target, branch = pre.target, pre.branch
    g = ws.git
    with ws.lock:
        g.run("update-ref", base_ref(branch), base)
        clean_stale(ws, target)
        saved = None
        if pre.exists and (pre.dirty or pre.moved):
            saved = backup(target, "overlay replaced this worktree")
        g.run("update-ref", next_ref(branch), head)
        what = _put(ws, pre, head, tree)
        _finished(ws, branch, head)
        return what, saved


def _finished(ws: Workspace, branch: str, head: str) -> None:
    ws.git.run("update-ref", built_ref(branch), head)
    ws.git.result("update-ref", "-d", next_ref(branch))


def _put(ws: Workspace, pre: Preflight, head: str, tree: str) -> str:
    """Make target show head on its branch; what happened.

    A new worktree is made beside the target first; the swap (renames, then
    the branch) is recorded in the workspace before it starts, so a run
    killed half-way is rolled forward by the next one (``recover_swaps``).
    """
    target, branch = pre.target, pre.branch
    g = ws.git
    if pre.exists and target.exists():
        tg = Git(target)
        current_tree = tg.tree_of("HEAD")
        on_branch = tg.current_branch() == branch
        if current_tree == tree and not pre.dirty:
            same = tg.run("rev-parse", "HEAD") == head and on_branch
            # same content: move the branch, point HEAD at it; no file changes
            g.run("update-ref", f"refs/heads/{branch}", head)
            if not on_branch:
                tg.run("symbolic-ref", "HEAD", f"refs/heads/{branch}")
            return "unchanged" if same else "recommitted"
        old = _tmp_path(target, "old")
        new, record = _new_beside(ws, target, branch, head, old)
        ws.move_worktree(target, old)
        crash_point("worktree-old-aside")
        ws.move_worktree(new, target)
        crash_point("worktree-new-in")
        Git(old).run("checkout", "--quiet", "--detach")
        _check_out_branch(g, target, branch, head)
        crash_point("worktree-branch-moved")
        ws.remove_worktree(old)
        record.unlink()
        return "updated"
    target.parent.mkdir(parents=True, exist_ok=True)
    new, record = _new_beside(ws, target, branch, head, None)
    ws.move_worktree(new, target)
    crash_point("worktree-created-detached")
    _check_out_branch(g, target, branch, head)
    record.unlink()
    return "created"


def _new_beside(ws: Workspace, target: Path, branch: str, head: str,
                old: Path | None) -> tuple[Path, Path]:
    """The new worktree at head, checked out beside target, and the swap record
    that lets a killed run finish (or undo) putting it in target's place."""
    new = _tmp_path(target, "new")
    ws.add_worktree(new, head)
    crash_point("worktree-new-made")
    record = _record_swap(ws, target, branch, head, new, old)
    crash_point("worktree-swap-recorded")
    return new, record


def _check_out_branch(g: Git, target: Path, branch: str, head: str) -> None:
    """Move the branch to head and put target's HEAD on it."""
    g.run("update-ref", f"refs/heads/{branch}", head)
    Git(target).run("symbolic-ref", "HEAD", f"refs/heads/{branch}")


def _swap_path(ws: Workspace, target: Path) -> Path:
    key = hashlib.sha256(str(target.absolute()).encode()).hexdigest()[:16]
    return ws.path / SWAPS_DIR / f"{key}.json"


def _record_swap(ws: Workspace, target: Path, branch: str, head: str, new: Path,
                 old: Path | None) -> Path:
    path = _swap_path(ws, target)
    path.parent.mkdir(exist_ok=True)
    durable.write_json(path, {"target": str(target.absolute()), "branch": branch,
                              "head": head, "new": str(new),
                              "old": str(old) if old else None})
    return path


def recover_swaps(ws: Workspace) -> list[Path]:
    """Roll forward every worktree swap a killed run left half-done; the targets.

    The new worktree was complete before the swap was recorded, so forward is
    always possible: the old worktree goes aside, the new one in, the branch
    moves to it, the old one is removed.
    """
    d = ws.path / SWAPS_DIR
    if not d.is_dir():
        return []
    done = []
    with ws.lock:
        for path in sorted(d.glob("*.json")):
            try:
                rec = json.loads(path.read_text())
                target, new, branch, head = (Path(rec["target"]), Path(rec["new"]),
                                             rec["branch"], rec["head"])
                old = Path(rec["old"]) if rec.get("old") else None
            except (OSError, ValueError, KeyError, TypeError):
                path.unlink()  # a record cut short is never acted on
                continue
            for p in (target, new, old):
                if p is not None and (p / ".git").is_file():
                    ws.git.result("worktree", "repair", str(p))
            if new.exists():
                if target.exists() and old is not None and not old.exists():
                    ws.move_worktree(target, old)
                if not target.exists():
                    ws.move_worktree(new, target)
            if target.exists() and ws.owns(target):
                ws.git.run("update-ref", f"refs/heads/{branch}", head)
                Git(target).run("symbolic-ref", "HEAD", f"refs/heads/{branch}")
                if old is not None and old.exists():
                    ws.remove_worktree(old)
                _finished(ws, branch, head)
                done.append(target)
            path.unlink()
    return done


def prepare_resolution(ws: Workspace, target: Path, force: bool,
                       recorded: bool = True) -> Path:
    """Check the resolution worktree's place is free (or freeable).

    recorded: whether a state file names an unfinished operation. Without one,
    a resolution worktree is what a run killed before it wrote the state left:
    it is replaced (its changes, if any, saved to a backup ref first).
    """
    path = resolution_path(target)
    if path.exists() and not recorded and ws.owns(path) and not ws.orphaned(path):
        return path  # leave_resolution replaces it
    if path.exists():
        if not ws.owns(path):
            raise BadInput(f"{path} exists and is not a resolution worktree of this overlay",
                           "move that directory away")
        if ws.orphaned(path):
            if not force:
                raise BadInput(f"{path} is a resolution worktree whose cache is gone",
                               "move it away, or re-run with --force (it is moved aside)")
            set_aside(path)
            return path
        if not force:
            raise BadInput(
                f"a resolution worktree from an earlier run is at {path}",
                "finish it with `overlay refresh --continue`, drop it with "
                "`overlay refresh --abort`, or re-run with --force",
            )
    return path


def leave_resolution(ws: Workspace, target: Path, commit: str, patch: Path | None) -> Path:
    """A worktree at commit with the unit's conflict markers; its path."""
    path = resolution_path(target)
    with ws.lock:
        clean_stale(ws, target)
        if path.exists():
            if is_dirty(path):
                backup(path, "a new resolution worktree")
            ws.remove_worktree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        new = _tmp_path(target, "conflict")
        ws.add_worktree(new, commit)
        if patch is not None:
            Git(new).result("apply", "--3way", str(patch))
        ws.move_worktree(new, path)
    crash_point("conflict-worktree-made")
    return path
