"""One writer per overlay repository.

Every verb that writes to an overlay repository (apply, upgrade, refresh,
capture, build, pr, init, ci github) holds an exclusive ``flock`` on
``<overlay>/.overlay/lock`` for its whole run; its pid is written to
``.overlay/lock.pid``. A second writer says which process it waits for, waits
up to ``SGLANG_OVERLAY_LOCK_TIMEOUT`` seconds (default 600) and then exits 2
naming the holder. Read-only verbs (lint, check) never wait. The kernel
releases a flock when its process dies, so ``kill -9`` leaves no stale lock.
A run that fails (bad input: nothing written) removes the lock file and the
``.overlay/`` it made for the lock, so it leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from pathlib import Path

from .errors import BadInput

LOCK_NAME = "lock"
PID_NAME = "lock.pid"
TIMEOUT_ENV = "SGLANG_OVERLAY_LOCK_TIMEOUT"
DEFAULT_TIMEOUT = 600.0
POLL = 0.2

_held: dict[str, "RepoLock"] = {}


def _timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None or raw == "":
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise BadInput(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds",
                       f"set {TIMEOUT_ENV} to e.g. 600, or unset it") from None
    return max(0.0, value)


def holder(root: Path) -> str:
    """Who holds the lock, as .overlay/lock.pid says ('pid N (verb)')."""
    try:
        text = (root / ".overlay" / PID_NAME).read_text().split()
    except OSError:
        return "another process"
    if not text or not text[0].isdigit():
        return "another process"
    return f"process {text[0]}" + (f" ({' '.join(text[1:])})" if len(text) > 1 else "")


class RepoLock:
    def __init__(self, root: Path, verb: str):
        self.root = root
        self.dir = root / ".overlay"
        self.path = self.dir / LOCK_NAME
        self.verb = verb
        self.fd: int | None = None
        self.created_dir = False
        self.created_file = False
        self.depth = 0

    def _open(self) -> int:
        if self.dir.is_symlink():
            raise BadInput(f"{self.dir} is a symlink", "remove it; .overlay/ is the tool's own "
                           "directory")
        if not self.dir.exists():
            self.dir.mkdir()
            (self.dir / ".gitignore").write_text("*\n")
            self.created_dir = True
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                self.created_file = True
                return fd
            except FileExistsError:
                pass
            try:
                fd = os.open(self.path, os.O_RDWR)
                self.created_file = False
                return fd
            except FileNotFoundError:  # its maker just removed it: make it
                continue

    def _try(self, fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        # the holder before us may have removed the file: lock the one on disk
        try:
            same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            fcntl.flock(fd, fcntl.LOCK_UN)
        return same

    def acquire(self, wait: bool = True) -> bool:
        timeout = _timeout()
        deadline = None
        said = False
        while True:
            fd = self._open()
            if self._try(fd):
                self.fd = fd
                break
            os.close(fd)
            if not wait:
                return False
            now = time.monotonic()
            if deadline is None:
                deadline = now + timeout
            if now >= deadline:
                raise BadInput(
                    f"{self.root} is locked by {holder(self.root)}, which is writing to it",
                    f"wait for it to finish (or stop it), then run this again; "
                    f"{TIMEOUT_ENV} sets how long to wait")
            if not said:
                print(f"overlay: waiting for {holder(self.root)}, which holds the lock on "
                      f"{self.root} ...", file=sys.stderr, flush=True)
                said = True
            time.sleep(POLL)
        tmp = self.dir / f".{PID_NAME}.tmp-{os.getpid()}"
        tmp.write_text(f"{os.getpid()} {self.verb}\n")
        os.replace(tmp, self.dir / PID_NAME)
        return True

    def release(self, failed: bool = False) -> None:
        """failed: the run wrote nothing (bad input, or a reader), so it leaves
        nothing: still holding the lock, it removes the lock file and the
        .overlay/ it made for it (waiters notice their file is gone and retry)."""
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            (self.dir / PID_NAME).unlink()
        if failed and self.created_file:
            with contextlib.suppress(OSError):
                self.path.unlink()
        if failed and self.created_dir:
            left = {p.name for p in self.dir.iterdir()} if self.dir.is_dir() else set()
            if left <= {".gitignore"}:
                with contextlib.suppress(OSError):
                    (self.dir / ".gitignore").unlink()
                    self.dir.rmdir()
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


@contextlib.contextmanager
def hold(root: Path, verb: str):
    """Hold the overlay repository's lock (re-entrant within one process)."""
    key = str(root.resolve())
    if key in _held:
        yield _held[key]
        return
    lock = RepoLock(root, verb)
    lock.acquire()
    _held[key] = lock
    failed = True
    try:
        yield lock
        # closed by a command context that is unwinding an error (click closes its
        # resources without passing the exception on): that run failed too
        failed = sys.exc_info()[0] is not None
    finally:
        _held.pop(key, None)
        lock.release(failed)


def is_held(root: Path) -> bool:
    return str(root.resolve()) in _held


@contextlib.contextmanager
def try_hold(root: Path):
    """For read-only verbs: the lock if it is free right now (yields True), else
    nothing (yields False: a writer is at work and will finish its own changes)."""
    key = str(root.resolve())
    if key in _held:
        yield True
        return
    if not (root / ".overlay").is_dir():
        yield True  # nothing to recover, nothing to race with
        return
    lock = RepoLock(root, "read")
    got = lock.acquire(wait=False)
    if got:
        _held[key] = lock
    try:
        yield got
    finally:
        if got:
            _held.pop(key, None)
            lock.release(failed=True)  # a reader wrote nothing: no lock file of its own
