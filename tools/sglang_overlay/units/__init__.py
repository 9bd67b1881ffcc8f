"""Overlay units and the staging area they are applied to.

A unit is applied to a ``Stage``: a temporary index over the upstream commit
in the overlay's workspace. Nothing is checked out while units are applied;
blobs are written to the object store and the index is updated, so applying
is as fast as git's plumbing and never touches a user's files. Only the final
result is checked out, into the target worktree.

Each kind has a module with ``apply(ctx, unit) -> Outcome``:
``files`` (copy whole files), ``patch`` (git patches, with a 3-way fallback,
following files that moved upstream: ``moves``) and ``edit`` (declarative edits carried out on the syntax tree).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..gitutil import Git, GitError, Result
from ..manifest import Manifest, Unit

APPLIED = "applied"
APPLIED_3WAY = "applied-3way"
APPLIED_MOVED = "applied-moved"  # a patch that followed its files to new paths
ALREADY_UPSTREAM = "already-upstream"
UPSTREAM_PROVIDES = "upstream-provides"
CONFLICT = "conflict"
RETIRED = "retired"
LINT_ERROR = "lint-error"
OK_STATUSES = (APPLIED, APPLIED_3WAY, APPLIED_MOVED, ALREADY_UPSTREAM, UPSTREAM_PROVIDES,
               RETIRED)


@dataclass
class Outcome:
    status: str
    files: list[str] = field(default_factory=list)
    detail: str = ""
    hunks: list[str] = field(default_factory=list)
    # patch units: whether the stored patch is stale against this base
    # (applied at an offset or by 3-way), so `upgrade` regenerates it
    stale: bool = False


# What _commit_object writes exactly as git would: "<seconds> +0000" dates and
# identities without the characters git trims or rejects.
DATE = re.compile(r"^\d+ [+-]\d{4}$")
SAFE_IDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 @._-]*[A-Za-z0-9]$")

# Paths a patch touches, from its "diff --git a/X b/Y" lines (unquoted paths).
DIFF_GIT = re.compile(rb"^diff --git a/(\S+) b/(\S+)$", re.M)


class Stage:
    """A temporary index over a commit, in a workspace repository.

    The index's entries are mirrored in memory once listed (one
    `ls-files` instead of one per question): writes update the mirror, a
    patch forgets the paths it names, anything else forgets it all. Each
    unit used to cost half a dozen git processes this way.
    """

    def __init__(self, git: Git, index_file: Path, commit: str):
        self.git = git.with_env(GIT_INDEX_FILE=str(index_file))
        self.index_file = Path(index_file)
        self.dir = self.index_file.parent  # scratch space (in the cache) for helpers
        self.head = commit
        self.git.run("read-tree", commit)
        self.head_tree: str | None = None
        # without commits, the index as it was before the current unit
        self.saved: Path | None = None
        self._objects: Path | None = None
        self._entries: dict[str, tuple[str, str]] | None = None
        self._stale: set[str] = set()  # paths whose mirrored entry may be wrong
        self._dirs: set[str] | None = None

    def invalidate(self, paths: list[str] | None = None) -> None:
        """Forget what is known about paths (all of the index when None)."""
        if paths is None or self._entries is None:
            self._entries = None
            self._stale = set()
        else:
            self._stale.update(paths)
        self._dirs = None

    def _index(self) -> dict[str, tuple[str, str]]:
        if self._entries is None or len(self._stale) > 50:
            out = self.git.run_bytes("ls-files", "--stage", "-z")
            entries = {}
            for rec in out.split(b"\0"):
                meta, _, name = rec.partition(b"\t")
                if name:
                    mode, sha, _stage = meta.decode().split()
                    entries[name.decode("utf-8", "surrogateescape")] = (mode, sha)
            self._entries, self._stale = entries, set()
        return self._entries

    def _entry_from_git(self, path: str) -> tuple[str, str] | None:
        out = self.git.run("ls-files", "--stage", "--", path)
        for line in out.splitlines():
            meta, _, name = line.partition("\t")
            if name == path:
                mode, sha, _stage = meta.split()
                return mode, sha
        return None

    def entry(self, path: str) -> tuple[str, str] | None:
        """(mode, blob sha) of path in the index, or None."""
        entries = self._index()
        if path in self._stale:
            found = self._entry_from_git(path)
            self._stale.discard(path)
            if found is None:
                entries.pop(path, None)
            else:
                entries[path] = found
            return found
        return entries.get(path)

    def paths_under(self, prefixes: list[str], directory: str) -> set[str]:
        """Which of prefixes are files in the index, plus directory's name if any
        file lies under it (the questions files units ask before writing)."""
        entries = self._index()
        if self._stale:
            for p in list(self._stale):
                self.entry(p)
        if self._dirs is None:
            self._dirs = {p[:i] for p in entries for i in range(len(p)) if p[i] == "/"}
        found = {p for p in prefixes if p in entries}
        if directory in self._dirs:
            found.add(directory + "/")
        return found

    def read(self, path: str) -> bytes | None:
        e = self.entry(path)
        return self.git.object_bytes(e[1]) if e else None

    def hash(self, data: bytes) -> str:
        """Write data as a blob; its sha."""
        return self._write_object(b"blob", data) or self.git.run(
            "hash-object", "-w", "--stdin", stdin=data)

    def _write_object(self, kind: bytes, data: bytes) -> str | None:
        """Write a loose object here (what `git hash-object -w` does), sparing a
        git process per object; None when that fails (the caller asks git)."""
        raw = b"%s %d\0" % (kind, len(data)) + data
        sha = hashlib.sha1(raw).hexdigest()
        try:
            if self._objects is None:
                self._objects = self.git.cwd / self.git.run("rev-parse", "--git-path", "objects")
            path = self._objects / sha[:2] / sha[2:]
            if not path.exists():
                path.parent.mkdir(exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="tmp_obj_")
                with os.fdopen(fd, "wb") as fh:
                    fh.write(zlib.compress(raw))
                os.chmod(tmp, 0o444)
                os.replace(tmp, path)
            return sha
        except (OSError, GitError):
            return None

    @staticmethod
    def blob_id(data: bytes) -> str:
        """The blob sha git would give data, computed here (nothing written)."""
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    def write(self, path: str, data: bytes, mode: str = "100644") -> None:
        sha = self.hash(data)
        self.git.run("update-index", "--add", "--cacheinfo", f"{mode},{sha},{path}")
        if self._entries is not None:
            if path not in self._entries and self._dirs is not None:
                self._dirs.update(path[:i] for i in range(len(path)) if path[i] == "/")
            self._entries[path] = (mode, sha)
            self._stale.discard(path)

    def apply(self, patch: Path | bytes, *flags: str) -> Result:
        if isinstance(patch, bytes):
            r = self.git.result("apply", "--cached", *flags, "-", stdin=patch)
        else:
            r = self.git.result("apply", "--cached", *flags, str(patch))
        if "--check" not in flags:
            text = patch if isinstance(patch, bytes) else patch.read_bytes()
            names = [n.decode("utf-8", "surrogateescape") for pair in DIFF_GIT.findall(text)
                     for n in pair]
            self.invalidate(names if names and text.count(b"\ndiff --git ") + (
                text.startswith(b"diff --git ")) == len(names) // 2 else None)
        return r

    def unmerged(self) -> list[str]:
        out = self.git.run("ls-files", "--unmerged")
        return sorted({line.split("\t", 1)[1] for line in out.splitlines() if "\t" in line})

    def tree(self) -> str:
        return self.git.run("write-tree")

    def checkpoint(self) -> None:
        """Remember the index as it is (a file copy), for reset() without commits."""
        self.saved = self.index_file.with_name(self.index_file.name + ".saved")
        shutil.copyfile(self.index_file, self.saved)

    def reset(self, commit: str | None = None) -> None:
        """Back to commit, else to the last good state: the checkpoint or head."""
        if commit is None and self.saved is not None:
            shutil.copyfile(self.saved, self.index_file)
        else:
            self.git.run("read-tree", commit or self.head)
        self.invalidate()

    def commit(self, message: str, env: dict[str, str]) -> str | None:
        """Commit the index on top of head; None when nothing changed."""
        tree = self.tree()
        if self.head_tree is None:
            self.head_tree = self.git.tree_of(self.head)
        if tree == self.head_tree:
            return None
        sha = self._commit_object(tree, message, env) or self.git.run(
            "commit-tree", tree, "-p", self.head, "-F", "-", stdin=message.encode(), env=env)
        self.head, self.head_tree = sha, tree
        return sha

    def _commit_object(self, tree: str, message: str, env: dict[str, str]) -> str | None:
        """The commit `git commit-tree` would write, written here; None when the
        identity is not the fixed, dated one every build uses."""
        keys = ("NAME", "EMAIL", "DATE")
        who = {r: [env.get(f"GIT_{r}_{k}") for k in keys] for r in ("AUTHOR", "COMMITTER")}
        for name, email, date in who.values():
            if not (name and email and date and DATE.match(date) and SAFE_IDENT.match(name)
                    and SAFE_IDENT.match(email)):
                return None
        if "\0" in message or not message.endswith("\n"):
            return None
        a, c = who["AUTHOR"], who["COMMITTER"]
        body = (f"tree {tree}\nparent {self.head}\n"
                f"author {a[0]} <{a[1]}> {a[2]}\ncommitter {c[0]} <{c[1]}> {c[2]}\n\n"
                + message)
        return self._write_object(b"commit", body.encode("utf-8"))


def file_payload(path: Path) -> tuple[bytes, str]:
    """(contents, git mode) of an overlay file; symlinks as links."""
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        return os.readlink(path).encode(), "120000"
    mode = "100755" if st.st_mode & 0o111 else "100644"
    return path.read_bytes(), mode


@dataclass
class Context:
    """What a unit may use while it is applied."""

    manifest: Manifest
    stage: Stage
    ref: str
    # whether path existed in the pinned upstream commit (None: unknown)
    existed_at_pin: Callable[[str], bool | None]
    # make the blobs a patch was made on available for 3-way merges
    ensure_patch_base: Callable[[], bool]
    # the patch file of a patch unit (a resolved conflict may stand in for it)
    patch_file: Callable[[Unit], Path]


def apply_unit(ctx: Context, unit: Unit) -> Outcome:
    from . import edit, files, patch

    module = {"files": files, "patch": patch, "edit": edit}[unit.kind]
    return module.apply(ctx, unit)


__all__ = [
    "APPLIED", "APPLIED_3WAY", "APPLIED_MOVED", "ALREADY_UPSTREAM", "UPSTREAM_PROVIDES",
    "CONFLICT",
    "RETIRED", "LINT_ERROR", "OK_STATUSES", "Outcome", "Stage", "Context",
    "apply_unit", "file_payload", "GitError",
]
