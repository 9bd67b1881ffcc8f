"""Thin wrapper over gitpython's command runner.

Every local operation runs with an isolated configuration (no system or
global config: no hooks, no autocrlf, no signing, no pager), a fixed locale
and, when asked, fixed identity and dates, so results are the same on every
machine. Network operations (fetch, ls-remote) use gitpython directly with the
user's own configuration, so credentials and proxies still work.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import git as gitpython

ISOLATED_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_ADVICE": "0",
    "LC_ALL": "C",
}
IDENTITY_NAME = "sglang-overlay"
IDENTITY_EMAIL = "sglang-overlay@users.noreply.invalid"
LOCK_EXISTS = re.compile(r"Unable to create '([^']+\.lock)': File exists")
STALE_AFTER = 1.0  # seconds a git lock file nobody holds may stay unchanged before it is stale
HOLDER_WAIT = 600.0  # seconds to wait for a live process to release a git lock


class GitError(Exception):
    def __init__(self, args: tuple, rc: int, stderr: str):
        self.args_ = args
        self.rc = rc
        self.stderr = stderr.strip()
        super().__init__(f"git {' '.join(args)} failed ({rc}): {self.stderr}")


@dataclass
class Result:
    rc: int
    out: str
    err: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


def identity_env(timestamp: int, author: tuple[str, str] | None = None) -> dict[str, str]:
    """Author and committer (name, email; default the tool's own), dated at timestamp (UTC)."""
    name, email = author or (IDENTITY_NAME, IDENTITY_EMAIL)
    date = f"{int(timestamp)} +0000"
    return {
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_AUTHOR_DATE": date,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
        "GIT_COMMITTER_DATE": date,
    }


@dataclass(frozen=True)
class DiffEntry:
    """One path changed between two trees, as `git diff --raw` reports it."""

    status: str  # A, M, D, T
    path: str
    old_mode: str
    new_mode: str
    old_blob: str
    new_blob: str

    @property
    def deleted(self) -> bool:
        return self.status == "D"

    @property
    def mode_only(self) -> bool:
        return self.status == "M" and self.old_blob == self.new_blob

    @property
    def permissions(self) -> int:
        """The new file's permission bits (0o755 executable, else 0o644)."""
        return 0o755 if self.new_mode == "100755" else 0o644


class Git:
    """Runs git in cwd (a work tree or a git dir) with an isolated config."""

    def __init__(self, cwd: Path, env: dict[str, str] | None = None,
                 isolated: bool = True):
        self.cwd = Path(cwd)
        self.env = {**(ISOLATED_ENV if isolated else {}), **(env or {})}
        self._cmd = gitpython.Git(str(self.cwd))
        self._cmd.update_environment(**self.env)

    def with_env(self, **env: str) -> "Git":
        return Git(self.cwd, {**self.env, **env}, isolated=False)

    def result(self, *args: str, stdin: bytes | None = None,
               env: dict[str, str] | None = None, binary: bool = False) -> Result:
        kwargs = dict(with_extended_output=True, with_exceptions=False,
                      stdout_as_string=not binary, strip_newline_in_stdout=False,
                      env=env)
        if stdin is not None:
            with tempfile.TemporaryFile() as fh:
                fh.write(stdin)
                fh.seek(0)
                rc, out, err = self._cmd.execute(["git", *args], istream=fh, **kwargs)
        else:
            rc, out, err = self._cmd.execute(["git", *args], **kwargs)
        if isinstance(err, bytes):
            err = err.decode("utf-8", "replace")
        return Result(rc, out, err)

    def run(self, *args: str, stdin: bytes | None = None,
            env: dict[str, str] | None = None) -> str:
        r = self.result(*args, stdin=stdin, env=env)
        for _ in range(3):
            if r.ok or not clear_stale_lock(r.err):
                break
            r = self.result(*args, stdin=stdin, env=env)
        if not r.ok:
            raise GitError(args, r.rc, r.err)
        return r.out.strip()

    def run_bytes(self, *args: str, stdin: bytes | None = None) -> bytes:
        r = self.result(*args, stdin=stdin, binary=True)
        if not r.ok:
            raise GitError(args, r.rc, r.err)
        return r.out

    def object_bytes(self, oid: str) -> bytes:
        """Contents of a blob, through one long-lived `git cat-file --batch`."""
        return self._cmd.get_object_data(oid)[3]

    def has_object(self, oid: str) -> bool:
        return self.result("cat-file", "-e", oid).ok

    def file_at(self, commit: str, path: str) -> bytes | None:
        """The bytes of path in commit's tree; None when it has no such file."""
        r = self.result("cat-file", "blob", f"{commit}:{path}", binary=True)
        return r.out if r.ok else None

    def rev(self, rev: str) -> str | None:
        r = self.result("rev-parse", "--verify", "--quiet", rev)
        return r.out.strip() if r.ok else None

    def tree_of(self, rev: str) -> str:
        """The tree rev's commit records."""
        return self.run("rev-parse", f"{rev}^{{tree}}")

    def current_branch(self) -> str | None:
        """The branch checked out in this work tree (its short name); None when detached."""
        return self.result("symbolic-ref", "-q", "HEAD").out.strip().removeprefix(
            "refs/heads/") or None

    def diff_raw(self, a: str, b: str, paths: tuple[str, ...] | list[str] = ()) -> list[DiffEntry]:
        """The paths that differ between trees a and b (renames split), in git's order."""
        args = ["diff", "--raw", "-z", "--no-renames", "--full-index", "--no-abbrev", a, b]
        if paths:
            args += ["--", *paths]
        parts = self.run_bytes(*args).split(b"\0")
        entries = []
        for meta, path in zip(parts[::2], parts[1::2]):
            if not meta.startswith(b":"):
                continue
            old_mode, new_mode, old_blob, new_blob, status = meta[1:].decode().split()
            entries.append(DiffEntry(status[0], path.decode("utf-8", "surrogateescape"),
                                     old_mode, new_mode, old_blob, new_blob))
        return entries

    def head(self) -> str:
        """The commit HEAD points at."""
        return self.run("rev-parse", "HEAD")

    def parent_of(self, commit: str) -> str:
        """commit's first parent."""
        return self.run("rev-parse", f"{commit}^")

    def commit_of(self, rev: str) -> str:
        """The commit rev names (a tag peeled)."""
        return self.run("log", "-1", "--format=%H", rev)

    def changed_paths(self, a: str, b: str) -> list[str]:
        """The paths that differ between a and b (trees or commits), in git's order."""
        return self.run("diff", "--name-only", a, b).splitlines()

    def first_parent_commits(self, base: str, head: str = "HEAD") -> list[str]:
        """The commits base..head along first parents, oldest first."""
        return self.run("rev-list", "--reverse", "--first-parent", f"{base}..{head}").split()

    def commit_subject(self, commit: str) -> str:
        return self.run("log", "-1", "--format=%s", commit)

    def commit_message(self, commit: str) -> str:
        """commit's full message (subject, body and trailers)."""
        return self.run("log", "-1", "--format=%B", commit)

    def first_trailer(self, commit: str, key: str) -> str | None:
        """The value of commit's first `key:` trailer; None when it has none."""
        out = self.run("log", "-1",
                       f"--format=%(trailers:key={key},valueonly,separator=%x2C)",
                       commit).strip()
        return out.split(",")[0].strip() or None

    def is_work_tree(self) -> bool:
        """cwd is inside a git work tree."""
        return self.result("rev-parse", "--is-inside-work-tree").ok

    def has_changes(self) -> bool:
        """The work tree or index differs from HEAD, or has untracked files."""
        return bool(self.run("status", "--porcelain"))

    def fetch_head_of(self, checkout: Path, ref: str) -> str:
        """Fetch checkout's HEAD (no tags) into ref here: the commit fetched."""
        self.run("fetch", "--quiet", "--no-tags", str(checkout), f"+HEAD:{ref}")
        return self.run("rev-parse", ref)

    def merge_base(self, a: str, b: str) -> str | None:
        """The merge-base of a and b; None when there is none (or an object is missing)."""
        r = self.result("merge-base", a, b)
        return r.out.strip() if r.ok else None

    def path_history(self, base: str, head: str) -> dict[str, tuple[list[str], str, str]]:
        """path -> (subjects of base..head's commits touching it, newest first; the newest
        one's author `name <email>` and RFC 2822 date), from one `git log`."""
        out = self.run_bytes("log", "--no-renames", "--name-only", "-z",
                             "--format=%x01%s%x02%an <%ae>%x02%aD%x02", f"{base}..{head}")
        found: dict[str, list] = {}
        for record in out.decode("utf-8", "surrogateescape").split("\x01")[1:]:
            subject, author, date, names = record.split("\x02", 3)
            for path in (p.strip("\n") for p in names.split("\0")):
                if path:
                    entry = found.setdefault(path, [[], author, date])
                    entry[0].append(subject)
        return {p: (s, a, d) for p, (s, a, d) in found.items()}

    def binary_paths(self, a: str, b: str) -> set[str]:
        """Paths git sees as binary between a and b (one --numstat)."""
        out = self.run_bytes("diff", "--numstat", "-z", "--no-renames", a, b)
        parts = out.decode("utf-8", "surrogateescape").split("\0")
        return {p.split("\t", 2)[2] for p in parts if p.startswith("-\t-\t")}

    def init_repository(self) -> None:
        """Make cwd a new git repository."""
        self.run("init", "--quiet")

    def config_value(self, key: str) -> str:
        """key's value in this repository's configuration; "" when unset."""
        return self.result("config", key).out.strip()

    def worktree_paths(self) -> set[str]:
        """The work trees this repository has registered (their directories may be gone)."""
        out = self.result("worktree", "list", "--porcelain").out
        return {line[len("worktree "):] for line in out.splitlines()
                if line.startswith("worktree ")}

    def prune_worktrees(self) -> None:
        """Drop the registrations of work trees whose directories are gone."""
        self.result("worktree", "prune")

    def set_ref(self, ref: str, sha: str) -> None:
        self.run("update-ref", ref, sha)

    def blob_id(self, commit: str, path: str) -> str:
        """The blob path has in commit's tree."""
        return self.run("rev-parse", f"{commit}:{path}")

    # --- a series of commits (what `overlay pr` sends): facts, no policy -------------

    def commit_time(self, commit: str) -> int:
        """The committer date of commit, in seconds since the epoch."""
        return int(self.run("show", "-s", "--format=%ct", commit))

    def numstat(self, base: str, head: str, paths: list[str] | tuple[str, ...] = (),
                ) -> list[tuple[str, int | None, int | None, str]]:
        """(path, lines added, lines removed, status letter) per file base..head changes
        (among paths, if given); None counts for a binary file."""
        only = ["--", *paths] if paths else []
        status = {}
        for line in self.run("diff", "--name-status", "--no-renames", base, head,
                             *only).splitlines():
            st, _, path = line.partition("\t")
            status[path] = st
        out = []
        for line in self.run("diff", "--numstat", "--no-renames", base, head,
                             *only).splitlines():
            a, d, path = line.split("\t", 2)
            out.append((path, None if a == "-" else int(a), None if d == "-" else int(d),
                        status.get(path, "M")))
        return out

    def format_patch(self, base: str, head: str, out_dir: Path) -> dict[str, bytes]:
        """`git format-patch` of base..head written into out_dir (an empty scratch
        directory): file name -> bytes, in series order."""
        self.run("format-patch", "--quiet", "--no-signature", "--full-index",
                 "-o", str(out_dir), f"{base}..{head}")
        return {name: (out_dir / name).read_bytes() for name in sorted(os.listdir(out_dir))}

    def push_branch(self, url: str, head: str, branch: str) -> str | None:
        """Force-push head to url's branch, with the user's own git configuration
        (credentials, proxies) and never a prompt: None, or git's last line of error."""
        g = Git(self.cwd, env={"GIT_TERMINAL_PROMPT": "0"}, isolated=False)
        r = g.result("push", "--force", "--quiet", url, f"{head}:refs/heads/{branch}")
        return None if r.ok else (r.err.strip().splitlines() or ["no output"])[-1]

    # --- a scratch work tree (where `overlay pr` replays units): facts, no policy -----

    def binary_diff(self, a: str, b: str) -> bytes:
        """The full-index binary patch from a to b (what apply_3way takes)."""
        return self.run_bytes("diff", "--binary", "--full-index", a, b)

    def apply_3way(self, patch: bytes) -> Result:
        """Apply patch to the index and work tree, falling back to a three-way merge."""
        return self.result("apply", "--index", "--3way", "-", stdin=patch)

    def stage_all(self) -> None:
        """Stage every change in the work tree (new, modified and deleted files)."""
        self.run("add", "-A", ".")

    def staged_paths(self, diff_filter: str | None = None) -> list[str]:
        """The paths the index changes against HEAD (only statuses in diff_filter, if given)."""
        only = [f"--diff-filter={diff_filter}"] if diff_filter else []
        return self.run("diff", "--cached", "--name-only", *only, "HEAD").splitlines()

    def staged_lines(self, paths: list[str]) -> dict[str, set[int]]:
        """The lines of each staged file that differ from HEAD (all of a new file's)."""
        out: dict[str, set[int]] = {p: set() for p in paths}
        cur = None
        for line in self.run("diff", "--cached", "-U0", "--no-renames", "HEAD", "--",
                             *paths).splitlines():
            if line.startswith("+++ "):
                cur = line[6:] if line.startswith("+++ b/") else None
                continue
            m = re.match(r"^@@ -\S+ \+(\d+)(?:,(\d+))? @@", line)
            if m and cur in out:
                start, n = int(m.group(1)), int(m.group(2) or 1)
                out[cur].update(range(start, start + n))
        return out

    def commit_staged(self, message: str, env: dict[str, str]) -> str:
        """Commit the index with message (hooks skipped) under env's identity: the new sha."""
        self.run("commit", "--quiet", "--no-verify", "-F", "-", stdin=message.encode(), env=env)
        return self.run("rev-parse", "HEAD")

    def close(self) -> None:
        self._cmd.clear_cache()


def user_identity(repo: Path) -> tuple[str, str] | None:
    """The user's own (name, email) as git configures them for repo, or None."""
    g = Git(repo, isolated=False)
    name = g.result("config", "user.name")
    email = g.result("config", "user.email")
    if name.ok and email.ok and name.out.strip() and email.out.strip():
        return name.out.strip(), email.out.strip()
    return None


def is_repository(path: Path) -> bool:
    """Whether path exists and git finds a repository there."""
    return path.exists() and Git(path).result("rev-parse", "--git-dir").ok


def remote_url(repo: Path, name: str) -> str | None:
    """The URL the user's git configuration gives remote name in repo, or None."""
    r = Git(repo, isolated=False).result("config", "--get", f"remote.{name}.url")
    return r.out.strip() if r.ok and r.out.strip() else None


def worktree_gitdir(worktree: Path) -> Path | None:
    """The git dir a linked worktree's `.git` file names (`gitdir: PATH`), or None
    when worktree has no such file."""
    gitfile = worktree / ".git"
    try:
        text = gitfile.read_text().strip() if gitfile.is_file() else ""
    except OSError:
        return None
    return Path(text[len("gitdir: "):]) if text.startswith("gitdir: ") else None


def clear_stale_lock(stderr: str, wait_for_holder: float | None = None) -> bool:
    """Remove a git lock file that a killed git process left behind.

    git refuses to run when its lock file exists. While a process has the lock
    open (git holds it open while it writes; on Linux, where /proc tells), it
    is waited for, up to wait_for_holder seconds (HOLDER_WAIT). A lock nobody
    holds is stale once it has stayed unchanged for STALE_AFTER seconds: git
    closes a ref lock only just before renaming it into place, a window of
    microseconds, and a git still working changes or removes it meanwhile.
    True when the caller should retry; False when it must give up (not a lock
    error, or a live process kept the lock).
    """
    m = LOCK_EXISTS.search(stderr or "")
    if not m:
        return False
    lock = Path(m.group(1))
    start = time.monotonic()
    give_up = start + (HOLDER_WAIT if wait_for_holder is None else wait_for_holder)
    quiet_until = start + STALE_AFTER
    before = None
    while True:
        try:
            now = lock.stat()
        except FileNotFoundError:
            return True  # released: retry
        t = time.monotonic()
        if held_open(lock):
            if t >= give_up:
                return False
            quiet_until = t + STALE_AFTER
        elif before is not None and (now.st_ino, now.st_mtime_ns) != before:
            quiet_until = t + STALE_AFTER  # somebody is working: wait for them
        elif t >= quiet_until:
            break
        before = (now.st_ino, now.st_mtime_ns)
        time.sleep(0.1)
    try:
        lock.unlink()
    except FileNotFoundError:
        pass
    return True


def held_open(path: Path) -> bool:
    """Whether any process has path open (Linux /proc; False where it cannot tell)."""
    proc = Path("/proc")
    if not (proc / "self" / "fd").is_dir():
        return False
    target = os.path.realpath(path)
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(proc / pid / "fd")
        except OSError:  # gone, or not ours to read
            continue
        for fd in fds:
            try:
                if os.readlink(proc / pid / "fd" / fd) == target:
                    return True
            except OSError:
                continue
    return False
