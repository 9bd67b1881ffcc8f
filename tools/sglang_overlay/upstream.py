"""The upstream side: the cache, its mirrors, fetching refs, and worktrees.

Layout of the cache (``$SGLANG_OVERLAY_CACHE``, else ``$XDG_CACHE_HOME/sglang-overlay``,
else ``~/.cache/sglang-overlay``)::

    mirrors/<name>-<hash>.git       one shallow bare mirror per upstream URL
    mirrors/<name>-<hash>.git.lock  its file lock (fetches, ref updates)
    workspaces/<name>-<hash>.git    one per overlay repository: its commits,
                                    branches and worktrees; objects are
                                    borrowed from the mirror (alternates)

Only what a ref needs is fetched: a depth-1 fetch of the ref; for a patch
that needs a 3-way merge, the blobs it was made on (by object id where the
server allows it, else a depth-1 fetch of the pinned commit); and a depth-1
fetch of the pinned commit when a files unit replaces a file that a ref other
than the pin has (was the file new at the pin?), and always in ``overlay check``.
The locks are ``flock`` locks, released by the kernel when a process dies, so
``kill -9`` never leaves a stale lock behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import git as gitpython
from filelock import FileLock

from . import durable, output
from .gitutil import Git, clear_stale_lock, is_repository, worktree_gitdir

SHA_RE = re.compile(r"^[0-9a-f]{40}$")
LOCK_TIMEOUT = 600
VERIFIED = "overlay-verified.json"
# what git says when the objects it has are damaged (not a network problem)
CORRUPT = re.compile(r"corrupt|inflate:|bad object|unable to read [0-9a-f]{40}|"
                     r"missing (blob|tree|commit) [0-9a-f]{40}")


class UpstreamError(Exception):
    """What went wrong reaching an upstream or the cache: facts only.

    The words and the fix the user reads are chosen above this layer
    (``upstream_problems.as_bad_input``); the CLI's one error handler turns
    every one of these into that line and exit 2 (bad input)."""

    def __str__(self) -> str:
        return repr(self)  # the dataclass fields: the facts


fact = dataclass(eq=False)  # exceptions stay hashable


@fact
class UpstreamMissing(UpstreamError):
    given: str  # a local path that does not exist


@fact
class NotARepository(UpstreamError):
    given: str  # a path or URL that is not a git repository


@fact
class Unreachable(UpstreamError):
    url: str
    stderr: str


@fact
class TagsUnlisted(UpstreamError):
    url: str
    stderr: str


@fact
class FetchFailed(UpstreamError):
    url: str
    refspec: str | list[str]
    stderr: str


@fact
class MirrorCorrupt(UpstreamError):
    path: Path
    stderr: str


@fact
class UnknownRef(UpstreamError):
    url: str
    ref: str  # a name, or a 40-hex commit

    @property
    def is_commit(self) -> bool:
        return bool(SHA_RE.match(self.ref))


@fact
class FetchIncomplete(UpstreamError):
    """Fetching ref succeeded but did not bring the commit it names."""

    url: str
    ref: str
    commit: str


@fact
class NotCached(UpstreamError):
    """Offline, and the cache lacks ref."""

    ref: str
    missing_mirror: Path | None = None  # the mirror's path when there is none at all

    @property
    def is_commit(self) -> bool:
        return bool(SHA_RE.match(self.ref))


def default_cache_dir() -> Path:
    env = os.environ.get("SGLANG_OVERLAY_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "sglang-overlay"


def _slug(text: str, extra: str = "") -> str:
    name = re.sub(r"[^A-Za-z0-9]+", "-", Path(urlparse(text).path or text).name)
    name = name.removesuffix("-git").strip("-")[:40] or "repo"
    digest = hashlib.sha256((text + extra).encode()).hexdigest()[:12]
    return f"{name}-{digest}"


def is_url(text: str) -> bool:
    """Whether text is a URL git fetches from (scheme://..., or scp-like user@host:path),
    as opposed to a local path."""
    return bool(re.match(r"^[a-z][a-z0-9+.-]*://", text) or re.match(r"^[\w.-]+@[\w.-]+:", text))


def normalize_url(url_or_path: str, base: Path | None = None, must_exist: bool = True) -> str:
    """A URL git can fetch from: URLs unchanged, local paths as file:// URLs.

    must_exist=False (offline: only the cache is read) accepts a local path
    that is gone; the cache keeps its mirror under the same URL.
    """
    if is_url(url_or_path):
        if url_or_path.startswith("file://") and must_exist:
            _require_local_repo(Path(url_or_path[len("file://"):]), url_or_path)
        return url_or_path
    path = Path(url_or_path).expanduser()
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    path = path.resolve()
    if must_exist:
        _require_local_repo(path, url_or_path)
    return "file://" + str(path)


def _require_local_repo(path: Path, given: str) -> None:
    if not path.exists():
        raise UpstreamMissing(given)
    if not is_repository(path):
        raise NotARepository(given)


@dataclass
class Resolved:
    ref: str
    commit: str
    refname: str | None  # the upstream ref it came from (refs/tags/...), if any


class _Progress(gitpython.RemoteProgress):
    """Fetch progress on one terminal line (only when stderr is a terminal)."""

    def __init__(self, label: str):
        super().__init__()
        self.label = label
        self.shown = False

    def update(self, op_code, cur_count, max_count=None, message=""):
        stage = {self.COUNTING: "counting", self.COMPRESSING: "compressing",
                 self.RECEIVING: "receiving", self.RESOLVING: "resolving"}.get(
            op_code & self.OP_MASK, "fetching")
        pct = f" {int(100 * cur_count / max_count):3d}%" if max_count else ""
        sys.stderr.write(f"\r{self.label}: {stage}{pct} ({int(cur_count)} objects)\033[K")
        sys.stderr.flush()
        self.shown = True

    def done(self):
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


class Mirror:
    """A shallow bare mirror of one upstream URL."""

    def __init__(self, cache: "Cache", url: str):
        self.url = url
        self.path = cache.root / "mirrors" / f"{_slug(url)}.git"
        self.lock = FileLock(str(self.path) + ".lock", timeout=LOCK_TIMEOUT)
        self.git = Git(self.path) if self.path.exists() else None

    def exists(self) -> bool:
        return (self.path / "HEAD").exists()

    def ensure(self) -> bool:
        """Create the mirror if missing (True if this call made it); a mirror
        with a corrupt pack is replaced by a fresh one, fetched again on demand."""
        if self.exists() and self._verified():
            self.git = self.git or Git(self.path)
            return False
        with self.lock:
            if self.exists():
                if self._verified():
                    self.git = Git(self.path)
                    return False
                self._discard_corrupt()
            self._create()
            return True

    def _create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for mark in (".new-", ".corrupt-"):  # killed runs' half-made or half-removed ones
            durable.sweep_dir(self.path.parent, mark)
        tmp = Path(tempfile.mkdtemp(prefix=f".new-{os.getpid()}-", dir=self.path.parent))
        g = Git(tmp)
        g.run("init", "--quiet", "--bare", str(tmp))
        g.run("config", "remote.origin.url", self.url)
        g.run("config", "gc.auto", "0")
        os.rename(tmp, self.path)
        self.git = Git(self.path)
        self._mark_verified(self._packs())

    # --- integrity -----------------------------------------------------------
    # Packs this tool fetched were checked by git while they arrived; they are
    # recorded (name, size, mtime) in VERIFIED. A pack that is not recorded, or
    # changed since, is checked with `git verify-pack` once before it is used.

    def _packs(self) -> dict[str, list[int]]:
        out = {}
        # git writes a pack's .idx last: a pack without one is still arriving
        for idx in sorted((self.path / "objects" / "pack").glob("*.idx")):
            p = idx.with_suffix(".pack")
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            out[p.name] = [st.st_size, st.st_mtime_ns]
        return out

    def _known(self) -> dict:
        try:
            data = json.loads((self.path / VERIFIED).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _mark_verified(self, packs: dict) -> None:
        marker = self.path / VERIFIED
        tmp = marker.with_name(f"{VERIFIED}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(packs, sort_keys=True))
        os.replace(tmp, marker)

    def _verified(self) -> bool:
        packs = self._packs()
        known = self._known()
        new = [name for name, st in packs.items() if known.get(name) != st]
        if not new:
            return True
        g = Git(self.path)
        for name in new:
            idx = self.path / "objects" / "pack" / name.replace(".pack", ".idx")
            if not g.result("verify-pack", str(idx)).ok:
                return False
        self._mark_verified(packs)
        return True

    def _discard_corrupt(self) -> None:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{os.getpid()}")
        os.rename(self.path, aside)
        shutil.rmtree(aside, ignore_errors=True)
        output.warn(f"overlay: the cache's mirror {self.path} had a corrupt pack; it was "
                    "removed and what is needed is fetched again")

    def discard_if_empty(self) -> None:
        """Remove a mirror this run created when the ref it was made for failed."""
        with self.lock:
            if self.exists() and not self._packs() and not any(
                    (self.path / "objects").glob("[0-9a-f][0-9a-f]")):
                shutil.rmtree(self.path, ignore_errors=True)
                self.git = None

    def has_commit(self, sha: str) -> bool:
        return self.git is not None and self.git.result(
            "cat-file", "-e", f"{sha}^{{commit}}").ok

    def ls_remote(self, ref: str) -> Resolved | None:
        """What ref names on the upstream right now (tags first, then branches)."""
        repo = gitpython.Git()
        try:
            out = repo.execute(
                ["git", "ls-remote", self.url, ref, f"{ref}^{{}}"],
                env={"GIT_TERMINAL_PROMPT": "0"},
            )
        except gitpython.GitCommandError as exc:
            stderr = (exc.stderr or "").strip().replace("\n", " ")
            if "does not appear to be a git repository" in stderr or "not a git repository" in stderr:
                raise NotARepository(self.url) from None
            raise Unreachable(self.url, stderr) from None
        refs: dict[str, str] = {}
        for line in out.splitlines():
            sha, _, name = line.partition("\t")
            refs[name] = sha
        for name in (f"refs/tags/{ref}", f"refs/heads/{ref}", ref):
            peeled = refs.get(f"{name}^{{}}")
            if peeled or name in refs:
                return Resolved(ref, peeled or refs[name], name)
        return None

    def _local_name(self, refname: str) -> str:
        if refname.startswith("refs/tags/"):
            return refname
        return "refs/overlay/" + refname.removeprefix("refs/")

    def fetch(self, what: str, dest: str | None, label: str) -> None:
        """Depth-1 fetch of a ref name or a commit sha into the mirror."""
        self._fetch_specs([f"+{what}:{dest}" if dest else what], label)

    def _fetch(self, refspec: str | list[str], progress) -> None:
        repo = gitpython.Repo(str(self.path))
        try:
            for attempt in range(3):
                try:
                    repo.remote("origin").fetch(refspec, depth=1, no_tags=True,
                                                progress=progress)
                    return
                except gitpython.GitCommandError as exc:
                    if attempt < 2 and clear_stale_lock(exc.stderr or ""):
                        continue  # a killed fetch left its lock behind
                    stderr = (exc.stderr or "").strip().replace("\n", " ")
                    if CORRUPT.search(stderr):
                        raise MirrorCorrupt(self.path, stderr) from None
                    raise FetchFailed(self.url, refspec, stderr) from None
        finally:
            repo.close()

    def list_tags(self) -> dict[str, str]:
        """Upstream's tags: name -> commit (peeled)."""
        repo = gitpython.Git()
        try:
            out = repo.execute(["git", "ls-remote", "--tags", self.url],
                               env={"GIT_TERMINAL_PROMPT": "0"})
        except gitpython.GitCommandError as exc:
            stderr = (exc.stderr or "").strip().replace("\n", " ")
            raise TagsUnlisted(self.url, stderr) from None
        tags: dict[str, str] = {}
        for line in out.splitlines():
            sha, _, name = line.partition("\t")
            name = name.removeprefix("refs/tags/")
            if name.endswith("^{}"):
                tags[name[:-3]] = sha
            else:
                tags.setdefault(name, sha)
        return tags

    def local_tags(self) -> dict[str, str]:
        """The tags the mirror already has (what --offline can use): name -> commit."""
        out = self.git.run("for-each-ref", "--format=%(refname:strip=2) %(*objectname) "
                           "%(objectname)", "refs/tags") if self.git else ""
        tags = {}
        for line in out.splitlines():
            name, *shas = line.split()
            tags[name] = shas[0]  # the peeled commit of an annotated tag comes first
        return tags

    def resolve_many(self, refs: list[str], offline: bool = False) -> list[Resolved]:
        """Resolve several refs, fetching every missing one in a single fetch."""
        if offline:
            return [self.resolve(r, offline=True) for r in refs]
        out: dict[str, Resolved] = {}
        for ref in refs:
            if SHA_RE.match(ref):
                out[ref] = Resolved(ref, ref, None)
                continue
            remote = self.ls_remote(ref)
            if remote is None:
                raise UnknownRef(self.url, ref)
            out[ref] = remote
        created = self.ensure()  # only once every ref is known to exist
        try:
            self._fetch_missing(out)
        except UpstreamError:
            if created:
                self.discard_if_empty()
            raise
        return [out[r] for r in refs]

    def _fetch_missing(self, out: dict[str, Resolved]) -> None:
        with self.lock:
            specs = sorted({
                f"+{r.refname}:{self._local_name(r.refname)}" if r.refname else r.commit
                for r in out.values() if not self.has_commit(r.commit)
            })
            if specs:
                self._fetch_specs(specs, f"fetching {len(specs)} ref" + ("s" if len(specs) != 1 else ""))
        for r in out.values():
            if not self.has_commit(r.commit):
                raise FetchIncomplete(self.url, r.ref, r.commit)

    def _fetch_specs(self, specs: list[str], label: str) -> None:
        progress = _Progress(label) if sys.stderr.isatty() else None
        before = self._packs()
        try:
            self._fetch(specs, progress)
        finally:
            if progress:
                progress.done()
        # git checked every object of the new packs as they arrived
        known = self._known()
        known.update({n: st for n, st in self._packs().items() if n not in before})
        self._mark_verified(known)

    def resolve(self, ref: str, offline: bool = False) -> Resolved:
        """The commit ref names upstream, fetched (depth 1) if the mirror lacks it.

        Nothing is created in the cache until the ref is known to exist."""
        if offline and not self.exists():
            raise NotCached(ref, self.path)
        if SHA_RE.match(ref):
            created = self.ensure()
            if not self.has_commit(ref):
                if offline:
                    raise NotCached(ref)
                try:
                    with self.lock:
                        if not self.has_commit(ref):
                            self.fetch(ref, None, f"fetching {ref[:12]}")
                    if not self.has_commit(ref):
                        raise UnknownRef(self.url, ref)
                except UpstreamError:
                    if created:
                        self.discard_if_empty()
                    raise
            return Resolved(ref, ref, None)
        if offline:
            self.ensure()
            for name in (f"refs/tags/{ref}", f"refs/overlay/heads/{ref}"):
                sha = self.git.rev(f"{name}^{{commit}}")
                if sha:
                    return Resolved(ref, sha, name)
            raise NotCached(ref)
        remote = self.ls_remote(ref)
        if remote is None:
            raise UnknownRef(self.url, ref)
        self.ensure()
        if not self.has_commit(remote.commit):
            with self.lock:
                if not self.has_commit(remote.commit):
                    self.fetch(remote.refname, self._local_name(remote.refname),
                               f"fetching {ref}")
        elif remote.refname and self.git.rev(self._local_name(remote.refname)) is None:
            with self.lock:
                self.git.run("update-ref", self._local_name(remote.refname), remote.commit)
        if not self.has_commit(remote.commit):
            raise FetchIncomplete(self.url, ref, remote.commit)
        return remote

    def ensure_objects(self, oids: list[str], label: str) -> bool:
        """Fetch exactly these objects (blobs a 3-way merge needs) if missing.

        Servers that allow fetching reachable objects by id (GitHub, and git's
        own protocol v2 upload-pack) send just those blobs; False otherwise.
        """
        self.ensure()
        missing = [o for o in oids if not self.git.has_object(o)]
        if not missing:
            return True
        with self.lock:
            missing = [o for o in missing if not self.git.has_object(o)]
            if missing:
                progress = _Progress(label) if sys.stderr.isatty() else None
                repo = gitpython.Repo(str(self.path))
                try:
                    repo.git.fetch("origin", "--no-tags", "--no-write-fetch-head", *missing)
                except gitpython.GitCommandError:
                    return False
                finally:
                    repo.close()
                    if progress:
                        progress.done()
        return all(self.git.has_object(o) for o in oids)

    def merge_base(self, a: Resolved, b: Resolved, limit: int = 8192) -> str | None:
        """The merge-base of two upstream refs, or None.

        Computed in a scratch repository that fetches both histories deeper and
        deeper until they meet, so the mirror's shallow boundaries (a release
        fetched at depth 1) never hide the common ancestor.
        """
        with durable.scratch(self.path.parents[1], "merge-base") as scratch:
            return self._merge_base(scratch, a, b, limit)

    def _merge_base(self, scratch: Path, a: Resolved, b: Resolved, limit: int) -> str | None:
        g = Git(scratch)
        g.run("init", "--quiet", "--bare", str(scratch))
        specs = [f"+{r.refname}:refs/mb/{i}" if r.refname else r.commit
                 for i, r in enumerate((a, b))]
        depth = 64
        while depth <= limit:
            repo = gitpython.Repo(str(scratch))
            try:
                repo.git.fetch(self.url, "--no-tags", f"--depth={depth}", *specs)
            except gitpython.GitCommandError:
                return None
            finally:
                repo.close()
            found = g.result("merge-base", a.commit, b.commit)
            if found.ok:
                return found.out.strip()
            depth *= 4
        return None

    def ensure_commit(self, sha: str, label: str) -> bool:
        """Fetch a commit (depth 1) if missing; False when upstream cannot give it."""
        self.ensure()
        if self.has_commit(sha):
            return True
        with self.lock:
            if self.has_commit(sha):
                return True
            try:
                self.fetch(sha, None, label)
            except UpstreamError:
                return False
        return self.has_commit(sha)


class Workspace:
    """Per-overlay bare repository: its commits, branches and worktrees.

    Objects come from the mirror through alternates, and the mirror's shallow
    list is shared by a symlink, so nothing is copied.
    """

    def __init__(self, cache: "Cache", mirror: Mirror, overlay_root: Path):
        self.mirror = mirror
        self.overlay_root = overlay_root
        key = str(overlay_root.resolve())
        self.path = cache.root / "workspaces" / f"{_slug(key, mirror.url)}.git"
        self.lock = FileLock(str(self.path) + ".lock", timeout=LOCK_TIMEOUT)
        self._git: Git | None = None

    @property
    def git(self) -> Git:
        if self._git is None:
            self.ensure()
            self._git = Git(self.path)
        return self._git

    def ensure(self) -> None:
        if (self.path / "HEAD").exists():
            return
        self.mirror.ensure()
        with self.lock:
            if (self.path / "HEAD").exists():
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            durable.sweep_dir(self.path.parent, ".new-")  # killed runs' half-made ones
            tmp = Path(tempfile.mkdtemp(prefix=f".new-{os.getpid()}-", dir=self.path.parent))
            g = Git(tmp)
            g.run("init", "--quiet", "--bare", str(tmp))
            g.run("config", "gc.auto", "0")
            g.run("config", "overlay.root", str(self.overlay_root.resolve()))
            g.run("config", "overlay.url", self.mirror.url)
            (tmp / "objects" / "info" / "alternates").write_text(
                str(self.mirror.path / "objects") + "\n")
            os.symlink(self.mirror.path / "shallow", tmp / "shallow")
            os.rename(tmp, self.path)

    # --- worktrees ---------------------------------------------------------

    def worktrees(self) -> dict[Path, dict[str, str]]:
        """Registered worktrees: path -> {'HEAD': sha, 'branch': ref, ...}."""
        if not (self.path / "HEAD").exists():
            return {}  # not created yet: no worktrees
        out = self.git.run("worktree", "list", "--porcelain")
        trees: dict[Path, dict[str, str]] = {}
        current: dict[str, str] | None = None
        for line in out.splitlines():
            if line.startswith("worktree "):
                current = {}
                trees[Path(line[len("worktree "):])] = current
            elif current is not None and line:
                key, _, value = line.partition(" ")
                current[key] = value
        return trees

    def owns(self, path: Path) -> bool:
        """Whether path is a worktree of this workspace."""
        gitdir = worktree_gitdir(path)
        if gitdir is None:
            return False
        try:
            return gitdir.resolve().parent.parent == self.path.resolve()
        except OSError:
            return False

    def orphaned(self, path: Path) -> bool:
        """A worktree of this workspace whose admin data is gone (the cache was
        deleted): git no longer works in it."""
        gitdir = worktree_gitdir(path)
        return gitdir is None or not (gitdir / "HEAD").exists()

    def add_worktree(self, path: Path, commit: str) -> None:
        self.git.run("worktree", "add", "--quiet", "--detach", str(path), commit)

    def remove_worktree(self, path: Path) -> None:
        if path.exists():
            r = self.git.result("worktree", "remove", "--force", "--force", str(path))
            if not r.ok and path.exists():
                shutil.rmtree(path, ignore_errors=True)
        self.git.result("worktree", "prune")

    def move_worktree(self, src: Path, dst: Path) -> None:
        self.git.run("worktree", "move", str(src), str(dst))

    def prune(self) -> None:
        self.git.result("worktree", "prune")


class Cache:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else default_cache_dir()

    def mirror(self, url: str) -> Mirror:
        return Mirror(self, url)

    def workspace(self, mirror: Mirror, overlay_root: Path) -> Workspace:
        return Workspace(self, mirror, overlay_root)

    def upstream_of(self, worktree: Path, overlay_root: Path) -> str | None:
        """The upstream URL a worktree of this overlay was applied from, or None.

        A worktree's .git file names its workspace, whose config records the
        overlay and the upstream it belongs to.
        """
        gitdir = worktree_gitdir(worktree)
        if gitdir is None:
            return None
        ws = gitdir.resolve().parent.parent
        if ws.parent != (self.root / "workspaces").resolve():
            return None
        g = Git(ws)
        root = g.result("config", "overlay.root").out.strip()
        if root != str(overlay_root.resolve()):
            return None
        return g.result("config", "overlay.url").out.strip() or None

