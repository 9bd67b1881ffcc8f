"""Applying the overlay's units to an upstream commit.

``Session`` ties an overlay to its upstream: the mirror, the workspace, the
lock policy for the pinned ref, and the base a patch was made on.
``Session.build`` applies units in manifest order onto a temporary index,
one commit per unit that changes something, and returns a ``Build``; it
never checks anything out and never touches the user's files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import git as gitpython

from . import durable
from . import manifest as manifest_mod
from . import output, patchfile, userconfig
from .errors import BadInput, Findings
from .gitutil import identity_env
from .manifest import Manifest, Unit
from .paths import check_exported_links, check_tree_links
from .units import (
    CONFLICT,
    OK_STATUSES,
    RETIRED,
    Context,
    Outcome,
    Stage,
    apply_unit,
)
from .upstream import Cache, Resolved, UpstreamError, is_url, normalize_url
from .versions import is_release

TRAILER_UNIT = "Overlay-Unit"
TRAILER_KIND = "Overlay-Kind"
TRAILER_OVERLAY = "Overlay-Commit"
TRAILER_VARIANT = "Overlay-Variant"


@dataclass
class UnitResult:
    unit: Unit
    status: str
    files: list[str] = field(default_factory=list)
    detail: str = ""
    hunks: list[str] = field(default_factory=list)
    commit: str | None = None
    parent: str | None = None  # the commit the unit was applied on
    stale: bool = False

    def to_json(self) -> dict:
        return {
            "name": self.unit.name,
            "kind": self.unit.kind,
            "status": self.status,
            "files": self.files,
            "detail": self.detail,
            "hunks": self.hunks,
            "commit": self.commit,
            "variant": self.unit.variant,
        }


@dataclass
class Build:
    ref: str
    base: str
    head: str
    tree: str
    results: list[UnitResult]

    @property
    def conflicts(self) -> list[UnitResult]:
        return [r for r in self.results if r.status == CONFLICT]

    @property
    def ok(self) -> bool:
        return not self.conflicts


@dataclass
class LockReport:
    status: str  # "ok", "locked" (newly written), "mismatch", "different-history",
    #              "not-checked", "none"
    locked: str | None = None
    remote: str | None = None
    message: str = ""


def overlay_identity(root: Path) -> str:
    """The overlay repository's commit, marked when overlay files are uncommitted."""
    try:
        repo = gitpython.Repo(str(root), search_parent_directories=True)
    except (gitpython.InvalidGitRepositoryError, gitpython.NoSuchPathError):
        return "none"
    try:
        sha = repo.head.commit.hexsha
    except ValueError:
        return "none"
    finally:
        repo.close()
    from .gitutil import Git

    status = Git(root).run(
        "status", "--porcelain", "--", manifest_mod.MANIFEST_NAME,
        manifest_mod.OVERLAY_DIR, "patches", manifest_mod.VARIANTS_DIR,
    )
    return f"{sha} (dirty)" if status else sha


def commit_message(unit: Unit, overlay_commit: str) -> str:
    lines = unit.description.strip().splitlines() or [unit.name]
    body = "\n".join(lines[1:]).strip()
    msg = f"{unit.name}: {lines[0].strip()}\n\n"
    if body:
        msg += body + "\n\n"
    msg += (
        f"{TRAILER_UNIT}: {unit.name}\n"
        f"{TRAILER_KIND}: {unit.kind}\n"
        + (f"{TRAILER_VARIANT}: {unit.variant}\n" if unit.variant else "")
        + f"{TRAILER_OVERLAY}: {overlay_commit}\n"
    )
    return msg


class Session:
    """One overlay against one upstream, within a cache."""

    def __init__(self, manifest: Manifest, cache: Cache, upstream: str | None = None,
                 offline: bool = False, base: Path | None = None):
        """upstream is --upstream; a relative path there is relative to base
        (-C DIR; default: the current directory)."""
        self.manifest = manifest
        self.cache = cache
        self.offline = offline
        # --upstream, else $SGLANG_OVERLAY_UPSTREAM, else a [mirrors] entry of
        # the user's config, else the manifest's URL: decided here, once
        self.upstream_choice = userconfig.choose(upstream, manifest.upstream_url,
                                                 manifest.root, base)
        self.url = normalize_url(self.upstream_choice.url,
                                 base=self.upstream_choice.base or Path.cwd(),
                                 must_exist=not offline)
        manifest_url = manifest.upstream_url
        if not is_url(manifest_url):
            manifest_url = normalize_url(manifest_url, base=manifest.root, must_exist=not offline)
        self.manifest_url = manifest_url
        self.is_manifest_upstream = self.url == manifest_url
        self.mirror = cache.mirror(self.url)
        self.workspace = cache.workspace(self.mirror, manifest.root)
        self._pin: str | None = None
        self._overlay_commit: str | None = None
        # unit name -> patch file to use instead of the unit's own (a resolved
        # conflict not yet written back into patches/)
        self.patch_overrides: dict[str, Path] = {}

    def patch_file(self, unit: Unit) -> Path:
        return self.patch_overrides.get(unit.name) or self.manifest.root / unit.patch

    def _may_add_link(self, unit: Unit) -> bool:
        """Whether unit can add a symlink (the check then asks git): a patch with
        a 120000 mode, a files unit with a link among its files; edits never."""
        if unit.kind == "patch":
            return b"120000" in self.patch_file(unit).read_bytes()
        if unit.kind == "files":
            base = self.manifest.root / unit.files_root
            return any((base / rel).is_symlink() for rel in self.manifest.unit_files(unit))
        return False

    # --- refs and the lock ------------------------------------------------

    def resolve(self, ref: str) -> Resolved:
        return self.mirror.resolve(ref, offline=self.offline)

    def resolve_pinned(self, ref: str, update_lock: bool = False) -> tuple[Resolved, LockReport]:
        """Resolve ref; for the pinned ref on the manifest's upstream, honour the lock."""
        return self.honour_lock(self.resolve(ref), update_lock)

    def honour_lock(self, remote: Resolved,
                    update_lock: bool = False) -> tuple[Resolved, LockReport]:
        """The commit to build for a resolved ref: the locked one for the pinned ref.

        A pinned tag that moved upstream is built on its locked commit, with a
        loud "LOCK MISMATCH" report; --update-lock (update_lock) moves the lock.
        """
        m = self.manifest
        ref = remote.ref
        if ref != m.ref:
            return remote, LockReport("not-checked", m.commit, remote.commit, "not the pinned ref")
        if not self.is_manifest_upstream and not update_lock:
            return self._mirror_lock(ref, remote)
        if m.commit is None or update_lock:
            if m.commit != remote.commit:
                manifest_mod.write_lock(m.root, ref, remote.commit)
                durable.crash_point("apply-lock-written")
                m.commit = remote.commit
                where = "" if self.is_manifest_upstream else \
                    f" (as {self.url}, {self.upstream_choice.describe()}, has it)"
                return remote, LockReport("locked", remote.commit, remote.commit,
                                          f"locked {ref} at {remote.commit}{where}")
            return remote, LockReport("ok", m.commit, remote.commit)
        if remote.commit == m.commit:
            return remote, LockReport("ok", m.commit, remote.commit)
        # The tag moved upstream. Build on the locked commit, and say so loudly.
        message = (
            f"LOCK MISMATCH: {ref} now resolves to {remote.commit} upstream, but "
            f"{manifest_mod.MANIFEST_NAME} locks it at {m.commit}. Building on the "
            "locked commit; if upstream re-tagged on purpose, review the change and "
            "re-run with --update-lock."
        )
        if not self.mirror.ensure_commit(m.commit, f"fetching locked {m.commit[:12]}"):
            raise BadInput(
                f"{ref} moved upstream to {remote.commit} and the locked commit "
                f"{m.commit} can no longer be fetched",
                "review the new commit and re-run with --update-lock",
            )
        return (Resolved(ref, m.commit, remote.refname),
                LockReport("mismatch", m.commit, remote.commit, message))

    def _mirror_lock(self, ref: str, remote: Resolved) -> tuple[Resolved, LockReport]:
        """The lock, checked against another upstream than the manifest's.

        A mirror with GitHub's history resolves the pin to the locked commit
        (or at least has it): the lock is checked as usual. A repository with
        another history (a local upstream built from PyPI releases) has other
        commits: the lock cannot be checked there, and the user is told so.
        """
        m = self.manifest
        where = self.upstream_choice.describe()
        if m.commit is None:
            return remote, LockReport("not-checked", None, remote.commit,
                                      f"no lock in {manifest_mod.MANIFEST_NAME}")
        if remote.commit == m.commit:
            return remote, LockReport("ok", m.commit, remote.commit,
                                      f"{self.url} ({where}) has the locked commit")
        if self.mirror.ensure_commit(m.commit, f"fetching locked {m.commit[:12]}"):
            message = (
                f"LOCK MISMATCH: {ref} resolves to {remote.commit} in {self.url} ({where}), "
                f"but {manifest_mod.MANIFEST_NAME} locks it at {m.commit}. Building on "
                "the locked commit."
            )
            return (Resolved(ref, m.commit, remote.refname),
                    LockReport("mismatch", m.commit, remote.commit, message))
        message = (
            f"DIFFERENT HISTORY: {self.url} ({where}) is not a mirror of {self.manifest_url}: "
            f"its {ref} is {remote.commit} and it does not have the locked commit "
            f"{m.commit}. Building on {remote.commit[:12]}; the lock is not checked."
        )
        return remote, LockReport("different-history", m.commit, remote.commit, message)

    def pin_commit(self) -> str | None:
        """The commit the overlay's patches were made on (the pinned ref)."""
        if self._pin is not None:
            return self._pin or None
        m = self.manifest
        sha = None
        if m.commit and self.is_manifest_upstream:
            if self.mirror.ensure_commit(m.commit, f"fetching {m.ref}"):
                sha = m.commit
        if sha is None and m.ref:
            try:
                sha = self.resolve(m.ref).commit
            except UpstreamError:
                sha = None
        self._pin = sha or ""
        return sha

    @property
    def overlay_commit(self) -> str:
        if self._overlay_commit is None:
            self._overlay_commit = overlay_identity(self.manifest.root)
        return self._overlay_commit

    # --- variants -------------------------------------------------------------

    def release_of(self, base: Resolved) -> str | None:
        """The upstream release base is (its ref), or the newest one it contains."""
        if is_release(base.ref):
            return base.ref
        git = self.mirror.git
        if git is None:
            return None
        r = git.result("describe", "--tags", "--abbrev=0", "--match", "v[0-9]*", base.commit)
        tag = r.out.strip() if r.ok else ""
        return tag if tag and is_release(tag) else None

    def variant_for(self, unit: Unit, base: Resolved) -> Unit:
        """unit with the content of its variant for base (see Manifest.variant_for)."""
        if not unit.variants:
            return unit
        return self.manifest.variant_for(unit, self.release_of(base))

    # --- building -----------------------------------------------------------

    def _existed_at_pin(self, path: str, base: str) -> bool | None:
        pin = self.pin_commit()
        if pin is None:
            return None
        if pin == base:
            return True
        return self.workspace.git.result("cat-file", "-e", f"{pin}:{path}").ok

    def _ensure_patch_base(self, unit: Unit, stage: Stage) -> bool:
        parsed = patchfile.parse(self.patch_file(unit).read_bytes())
        blobs = [f.old_blob for f in parsed.files
                 if f.old_blob and set(f.old_blob) != {"0"}]
        if all(stage.git.has_object(b) for b in blobs):
            return True
        # just the preimage blobs; the whole pinned commit only if that fails
        if self.mirror.ensure_objects(blobs, f"fetching the base of {unit.name}"):
            return True
        self.pin_commit()
        return all(stage.git.has_object(b) for b in blobs)

    def build(self, base: Resolved, units: list[Unit] | None = None,
              stop_at_conflict: bool = False, commits: bool = True) -> Build:
        """Apply units (default: every active one) on base; one commit each.

        commits=False (check): only the final tree is written, and a failed
        unit is undone from a copy of the index; head stays at base.
        """
        ws = self.workspace
        ws.ensure()
        units = self.manifest.units if units is None else units
        git = ws.git
        timestamp = int(git.run("show", "-s", "--format=%ct", base.commit))
        env = identity_env(timestamp)
        results: list[UnitResult] = []
        with durable.scratch(self.cache.root, "stage") as tmp:
            stage = Stage(git, Path(tmp) / "index", base.commit)
            for unit in units:
                unit = self.variant_for(unit, base)
                if unit.retired:
                    results.append(UnitResult(unit, RETIRED, detail=f"applied upstream in {unit.applied_upstream}"))
                    continue
                ctx = Context(
                    manifest=self.manifest,
                    stage=stage,
                    ref=base.ref,
                    existed_at_pin=lambda p: self._existed_at_pin(p, base.commit),
                    ensure_patch_base=lambda u=unit: self._ensure_patch_base(u, stage),
                    patch_file=self.patch_file,
                )
                parent = stage.head
                if not commits:
                    stage.checkpoint()
                out: Outcome = apply_unit(ctx, unit)
                res = UnitResult(unit, out.status, out.files, out.detail, out.hunks,
                                 parent=parent, stale=out.stale)
                if out.status in OK_STATUSES:
                    # a link out of the tree would put the host's bytes in a wheel
                    if self._may_add_link(unit):
                        check_tree_links(stage.git, parent, f"unit '{unit.name}'")
                    if commits:
                        res.commit = stage.commit(commit_message(unit, self.overlay_commit),
                                                  env)
                else:
                    stage.reset()
                results.append(res)
                if out.status == CONFLICT and stop_at_conflict:
                    break
            tree = stage.tree()
        return Build(ref=base.ref, base=base.commit, head=stage.head, tree=tree,
                     results=results)


    def build_ref(self, ref: str | None = None) -> Build:
        """Resolve ref (default: the pin, honouring the lock) and build on it.

        Raises Findings when a unit conflicts, naming the units.
        """
        ref = self.manifest.ref_or(ref)
        base, lock = self.resolve_pinned(ref)
        if lock.status in ("mismatch", "different-history"):
            output.warn(lock.message)
        build = self.build(base)
        if not build.ok:
            names = ", ".join(r.unit.name for r in build.conflicts)
            raise Findings(f"the overlay does not apply on {ref}: conflict in {names}",
                           f"run `overlay apply --sglang-ref {ref}` to resolve it")
        return build

    def export(self, commit: str, dest: Path, paths: tuple[str, ...] = ()) -> None:
        """Write the files of commit (optionally only under paths) into dest."""
        import io
        import tarfile

        data = self.workspace.git.run_bytes("archive", "--format=tar", commit, *paths)
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(dest, filter="tar" if hasattr(tarfile, "tar_filter") else None)
        check_exported_links(dest, commit)
