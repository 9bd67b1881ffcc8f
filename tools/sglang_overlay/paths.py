"""Path confinement: the tool writes, deletes and reads only inside its roots.

The roots are the target worktree (and its resolution worktree), the cache,
and the overlay repository's own files (``overlay.toml``, ``CHANGELOG.md``,
``overlay/``, ``patches/``, ``.overlay/``, ``dist/``, ``reports/``, ``pr/``).
A hostile or broken repository can point those somewhere else: a committed
symlink ``overlay -> /elsewhere``, a force-added ``.overlay/journal.json``, a
patch that adds a symlink to ``/etc/hostname``. Every such layout is refused
here, with exit 2 naming the path, before anything is written.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
from pathlib import Path

from .errors import BadInput
from .gitutil import Git

# the overlay repository's directories the tool writes into
OWNED_DIRS = ("overlay", "patches", ".overlay", "dist", "reports", "pr")
# places an applied worktree must never be put
NO_WORKTREE_DIRS = ("overlay", "patches", ".overlay", ".git")
LINK_MODE = "120000"


def inside(path: Path, root: Path) -> bool:
    """Whether path, resolved, is root (resolved) or below it."""
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(path))
    return real == real_root or real_root in real.parents


def confine(path: Path, root: Path, what: str = "") -> Path:
    """path resolved; BadInput naming it when it leads out of root."""
    try:
        real = Path(os.path.realpath(path, strict=False))
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise BadInput(f"{path}: cannot be resolved ({exc})",
                       "remove the symlink loop") from None
    if not inside(real, root):
        raise BadInput(f"{path}{' (' + what + ')' if what else ''} leads outside "
                       f"{root} (to {real})",
                       "replace that symlink with a real directory or file inside it")
    return real


def check_owned_dirs(root: Path) -> None:
    """The overlay's own directories are not symlinks that lead out of it."""
    for name in OWNED_DIRS:
        p = root / name
        if p.is_symlink() and (not inside(p, root) or inside(p, root / ".git")):
            where = (f"into git's own data in {root}" if inside(p, root)
                     else f"outside the overlay repository {root}")
            raise BadInput(f"{p} is a symlink to {os.readlink(p)}, {where}",
                           f"replace it with a real directory: rm {p} && mkdir {p}")


def check_state_untracked(root: Path) -> None:
    """The tool's own records in .overlay/ are never from git: a tracked one
    (a clone's, or a hostile one) is refused before it is acted on."""
    r = Git(root).result("ls-files", "-z", "--cached", "--", ".overlay")
    tracked = [p for p in r.out.split("\0") if p] if r.ok else []
    if tracked:
        raise BadInput(
            f"{root / tracked[0]} is tracked in git: .overlay/ holds this tool's "
            "records for this checkout only and must never be committed",
            f"untrack it with `git -C {root} rm -r --cached .overlay` and commit")


def check_overlay_root(root: Path) -> None:
    """Everything refused before a verb reads or changes the overlay repository."""
    check_owned_dirs(root)
    check_state_untracked(root)


def link_escapes(path: str, target: str) -> bool:
    """Whether a symlink at tree path `path` with `target` leads out of the tree."""
    if not target or target.startswith("/"):
        return True
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    return joined == ".." or joined.startswith("../") or joined.startswith("/")


def check_tree_links(git: Git, base: str, what: str) -> None:
    """No symlink added or changed between base and git's index (GIT_INDEX_FILE)
    points out of the tree: such a link would put the host's bytes in a wheel."""
    out = git.run_bytes("diff-index", "--cached", "--raw", "-z", "--no-renames",
                        "--full-index", base)
    parts = out.split(b"\0")
    for meta, name in zip(parts[0::2], parts[1::2]):
        fields = meta.decode().lstrip(":").split()
        if len(fields) < 5 or fields[1] != LINK_MODE or fields[4].startswith("D"):
            continue
        path = name.decode("utf-8", "surrogateescape")
        target = git.object_bytes(fields[3]).decode("utf-8", "surrogateescape")
        if link_escapes(path, target):
            raise BadInput(
                f"{what} adds {path} as a symlink to {target}, outside the upstream tree",
                "add the file itself, or a relative link to a file inside the tree")


def check_exported_links(dest: Path, what: str) -> None:
    """No symlink in an exported tree leads to an existing file outside it, so
    nothing built from it (a wheel) can carry bytes from elsewhere."""
    for dirpath, dirnames, filenames in os.walk(dest):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p.is_symlink() and os.path.lexists(os.path.realpath(p)) \
                    and not inside(p, dest):
                rel = p.relative_to(dest).as_posix()
                raise BadInput(f"{rel} in {what} is a symlink to {os.readlink(p)}, outside "
                               "the exported tree",
                               "replace it with the file itself, or a relative link inside "
                               "the tree")


def check_writable(path: Path, flag: str) -> None:
    """path (or the nearest existing directory above it) accepts new files;
    otherwise exit 2 before any work is done."""
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise BadInput(f"{flag} {path}: {probe} is not a directory",
                       f"pass {flag} a directory you can write to")
    try:
        tmp = tempfile.mkdtemp(prefix=".overlay-probe-", dir=probe)
        os.rmdir(tmp)
    except OSError as exc:
        raise BadInput(f"{flag} {path}: cannot write in {probe} ({exc.strerror})",
                       f"pass {flag} a directory on a writable file system") from None


def refuse_worktree_inside(target: Path, root: Path) -> None:
    """An applied worktree inside overlay/, patches/, .overlay/ or .git would
    become overlay content (or break git): refuse it."""
    real = Path(os.path.realpath(target))
    for name in NO_WORKTREE_DIRS:
        d = Path(os.path.realpath(root / name))
        if real == d or d in real.parents:
            raise BadInput(
                f"--worktree {target} is inside {name}/ of the overlay repository",
                "pass a path outside overlay/, patches/, .overlay/ and .git, e.g. "
                "the default ./sglang-<ref>")
