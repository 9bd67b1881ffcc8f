"""Durable writes, scratch space and named crash points: one home for all three.

* ``write_bytes`` / ``write_text`` / ``write_json``: a file is written to a
  temporary name in its own directory, flushed to disk and renamed over the
  old one, so a reader (or a run after ``kill -9``) sees the old file or the
  new one, never a part.
* ``scratch``: temporary directories live in ``<cache>/tmp``, named with the
  pid of the process that made them, not in ``$TMPDIR``. A killed run's
  leftovers are found by the next run (``sweep``, at the start of every verb)
  and by ``overlay gc``, and removed once their process is gone. Results are
  moved out of scratch space only when they are complete (recorded after
  success, as pre-commit's store does).
* ``crash_point(name)``: when ``SGLANG_OVERLAY_CRASH_AT`` names the point, the
  process kills itself there with SIGKILL. Every durable step of every
  writing verb has one; ``POINTS`` lists them with what a kill there leaves,
  and the tests kill the tool at each of them (no timing involved).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import tempfile
from pathlib import Path
from typing import Iterator

CRASH_ENV = "SGLANG_OVERLAY_CRASH_AT"
SCRATCH_DIR = "tmp"
PART = ".part-"  # marks a file being copied into place (copy_file)
_PID_NAME = re.compile(r"-(\d+)-[^-]*$|-(\d+)$")

_WT = "apply, upgrade, refresh --continue"  # the verbs that make or swap a worktree
_TX = "upgrade, refresh, capture, pr"  # the verbs that write through the journal

# name -> (verbs, what a kill there leaves and what the next run does)
POINTS: dict[str, tuple[str, str]] = {
    "apply-lock-written": (
        "apply", "overlay.toml has the lock of the pinned ref (one atomic write), nothing "
        "else changed; the next run applies"),
    "worktree-new-made": (
        _WT, "the new worktree is complete in a temporary directory "
        "beside the target, which is untouched; the next run removes the temporary one"),
    "worktree-swap-recorded": (
        _WT, "the swap is recorded in the cache, nothing renamed yet; "
        "the next command touching the worktree rolls the swap forward"),
    "worktree-old-aside": (
        _WT, "the old worktree is set aside and the target is absent; "
        "the swap record rolls it forward (the new worktree goes in)"),
    "worktree-new-in": (
        _WT, "the new worktree is in place, its branch not moved yet; "
        "rolled forward"),
    "worktree-branch-moved": (
        _WT, "worktree and branch are new, the old worktree is still "
        "aside; rolled forward (it is removed)"),
    "worktree-created-detached": (
        _WT, "a first worktree is in place with a detached HEAD; rolled "
        "forward (HEAD on its branch)"),
    "conflict-worktree-made": (
        "apply, upgrade", "the resolution worktree with the conflict markers is there, the "
        "state naming it not yet; the next run replaces it and stops on the conflict "
        "again (exit 1), with the state"),
    "journal-written": (
        _TX, "every change is staged and the journal written, nothing carried out; the "
        "first command of any kind carries it out (the overlay ends up new)"),
    "journal-half-carried": (
        _TX, "the first change is carried out; the first command of any kind (read-only "
        "ones too) finishes the journal before it reads the overlay"),
    "upgrade-built": (
        "upgrade", "nothing written; the overlay is as before, the next run upgrades"),
    "upgrade-overlay-written": (
        "upgrade", "the overlay is upgraded, the worktree of the new ref not made yet; the "
        "next `overlay upgrade --to REF` makes it (no 'nothing to do')"),
    "refresh-written": (
        "refresh", "the overlay has the write-back, the branch is not rebuilt yet; the next "
        "refresh sees the overlay already builds the worktree's tree and only rebuilds the "
        "branch (no unit added twice)"),
    "continue-resolved": (
        "refresh --continue", "the resolved patch is kept in .overlay/resolved/, the "
        "overlay untouched; the next --continue starts again"),
    "continue-written": (
        "refresh --continue", "the patch is written back, the worktree not applied yet; "
        "the next --continue applies it"),
    "abort-worktree-removed": (
        "refresh --abort", "the resolution worktree is gone, the state not cleared; the "
        "next --abort clears it"),
    "capture-read": (
        "capture", "nothing written; the next run captures"),
    "init-skeleton": (
        "init", "the new overlay is complete but for overlay.toml in a hidden directory "
        "beside DIR (in an existing directory: everything but overlay.toml, written "
        "last); the next init removes it and starts again"),
    "build-exported": (
        "build", "the tree is exported to scratch space in the cache; nothing in dist/; "
        "the next run removes the scratch directory"),
    "build-wheel-copying": (
        "build", "the wheel is a part file in .overlay/ (beside --out DIR elsewhere), "
        "dist/ untouched; the next run removes it"),
    "pr-branch-written": (
        "pr", "the branch pr/<unit> is written, pr/<unit>/ and overlay.toml not yet; the "
        "next run writes them"),
}


def crash_point(name: str) -> None:
    """Die here (SIGKILL, like kill -9) when SGLANG_OVERLAY_CRASH_AT names this point."""
    assert name in POINTS, f"unregistered crash point {name}"
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


# --- files ----------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    """Replace path with data atomically (temporary file in the same directory)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")

    def fill() -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)

    _replace(tmp, path, fill)


def _replace(tmp: Path, dest: Path, fill, point: str | None = None) -> None:
    """fill() writes tmp (flushed); then tmp replaces dest. A failure leaves no tmp."""
    try:
        fill()
        if point:
            crash_point(point)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(dest.parent)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data) -> None:
    write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def copy_file(src: Path, dest: Path, point: str | None = None,
              part_dir: Path | None = None) -> None:
    """Copy src over dest atomically: a part file (beside dest, or in part_dir on
    the same file system), then a rename."""
    part = (part_dir or dest.parent) / f".{dest.name}{PART}{os.getpid()}"

    def fill() -> None:
        shutil.copyfile(src, part)
        with open(part, "rb+") as fh:
            os.fsync(fh.fileno())

    _replace(part, dest, fill, point)


# --- processes and leftovers ----------------------------------------------------------


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pid_of(name: str) -> int | None:
    """The pid a scratch or part name carries (``...-<pid>`` or ``...-<pid>-<x>``)."""
    m = _PID_NAME.search(name)
    if not m:
        return None
    return int(m.group(1) or m.group(2))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", socket.gethostname())[:40] or "host"


def sweep_dir(directory: Path, marker: str = "") -> list[Path]:
    """Remove entries of directory (whose names contain marker) that a dead process left.

    A name tagged with another machine's host name (``.on_<host>``: a cache
    shared between machines or containers) is left alone: its pid means
    nothing here."""
    removed = []
    if not directory.is_dir():
        return removed
    here = f".on_{_host()}-"
    for entry in sorted(directory.iterdir()):
        if marker and marker not in entry.name:
            continue
        if ".on_" in entry.name and here not in entry.name:
            continue
        pid = pid_of(entry.name)
        if pid is None or pid_alive(pid):
            continue
        _remove(entry)
        removed.append(entry)
    return removed


def scratch_root(cache_root: Path) -> Path:
    return Path(cache_root) / SCRATCH_DIR


def sweep(cache_root: Path) -> list[Path]:
    """Scratch directories of processes that are gone (kill -9), removed."""
    return sweep_dir(scratch_root(cache_root))


@contextlib.contextmanager
def scratch(cache_root: Path, what: str) -> Iterator[Path]:
    """A temporary directory in the cache's scratch space, removed afterwards."""
    root = scratch_root(cache_root)
    root.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{what}.on_{_host()}-{os.getpid()}-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
