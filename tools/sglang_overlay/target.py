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

import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import output, paths
from .errors import BadInput
from .gitutil import Git, identity_env
from .upstream import Workspace

TMP_MARK = ".overlay-tmp-"


def branch_for(ref: str) -> str:
    return "overlay/" + re.sub(r"[^A-Za-z0-9._/-]+", "-", ref).strip("/")


def default_target(root: Path, ref: str) -> Path:
    return root / ("sglang-" + re.sub(r"[^A-Za-z0-9._-]+", "-", ref))


def resolution_path(target: Path) -> Path:
    return target.with_name(target.name + "-conflict")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(ws: Workspace, target: Path) -> None:
    """Remove temporary worktrees that killed runs left beside target."""
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
        if not _pid_alive(pid) or pid == os.getpid():
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
    with tempfile.TemporaryDirectory() as tmp:
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
        g.run("update-ref", built_ref(branch), head)
        g.run("update-ref", "-d", next_ref(branch))
        return what, saved


def _put(ws: Workspace, pre: Preflight, head: str, tree: str) -> str:
    """Make target show head on its branch; what happened."""
    target, branch = pre.target, pre.branch
    g = ws.git
    if pre.exists and target.exists():
        tg = Git(target)
        current_tree = tg.run("rev-parse", "HEAD^{tree}")
        on_branch = tg.result("symbolic-ref", "-q", "HEAD").out.strip() == f"refs/heads/{branch}"
        if current_tree == tree and not pre.dirty:
            same = tg.run("rev-parse", "HEAD") == head and on_branch
            # same content: move the branch, point HEAD at it; no file changes
            g.run("update-ref", f"refs/heads/{branch}", head)
            if not on_branch:
                tg.run("symbolic-ref", "HEAD", f"refs/heads/{branch}")
            return "unchanged" if same else "recommitted"
        new = _tmp_path(target, "new")
        old = _tmp_path(target, "old")
        ws.add_worktree(new, head)
        ws.move_worktree(target, old)
        ws.move_worktree(new, target)
        Git(old).run("checkout", "--quiet", "--detach")
        g.run("update-ref", f"refs/heads/{branch}", head)
        Git(target).run("symbolic-ref", "HEAD", f"refs/heads/{branch}")
        ws.remove_worktree(old)
        return "updated"
    target.parent.mkdir(parents=True, exist_ok=True)
    new = _tmp_path(target, "new")
    ws.add_worktree(new, head)
    ws.move_worktree(new, target)
    g.run("update-ref", f"refs/heads/{branch}", head)
    Git(target).run("symbolic-ref", "HEAD", f"refs/heads/{branch}")
    return "created"


def prepare_resolution(ws: Workspace, target: Path, force: bool) -> Path:
    """Check the resolution worktree's place is free (or freeable)."""
    path = resolution_path(target)
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
    return path
