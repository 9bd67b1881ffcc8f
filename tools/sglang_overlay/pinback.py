"""Moving the pin back before a unit retired: bring the unit back.

A unit retires (``applied-upstream = "vX"``) when upstream has its change
from release vX on; its files leave overlay/ (or patches/). Pinning a release
before vX again needs the unit again, so it comes back: its files as the
overlay repository's git history had them when the unit retired (the parent
of the commit that deleted them, or the committed version when the deletion
is not committed yet). When history does not have them, the move is refused
before anything is written.
"""

from __future__ import annotations

import contextlib
import copy
import shutil
from dataclasses import replace
from pathlib import Path

from . import durable
from .errors import BadInput
from .gitutil import Git
from .manifest import OVERLAY_DIR
from .releases import is_release
from .versions import version_key


def _needed_again(session, unit, base) -> bool:
    at = unit.applied_upstream
    if is_release(at) and is_release(base.ref):
        return version_key(base.ref) < version_key(at)
    if unit.kind == "files":  # no release order to go by: ask the tree
        git = session.workspace.git
        return not all(git.result("cat-file", "-e", f"{base.commit}:{rel}").ok
                       for rel in unit.files)
    return False


def _paths(unit) -> list[str]:
    if unit.kind == "files":
        return [f"{OVERLAY_DIR}/{rel}" for rel in unit.files]
    if unit.kind == "patch":
        return [unit.patch]
    return []  # an edit unit is all in the manifest


def _from_history(root: Path, path: str) -> bytes | None:
    p = root / path
    if p.is_file():
        return p.read_bytes()
    git = Git(root)
    if not git.result("rev-parse", "--verify", "--quiet", "HEAD").ok:
        return None
    last = git.result("rev-list", "-1", "HEAD", "--", path)
    commit = last.out.strip() if last.ok else ""
    if not commit:
        return None
    for rev in (commit, f"{commit}^"):  # still committed, or just deleted there
        if git.result("cat-file", "-e", f"{rev}:{path}").ok:
            return git.run_bytes("show", f"{rev}:{path}")
    return None


def revivals(session, manifest, base) -> dict[str, dict[str, bytes]]:
    """Unit name -> {path in the overlay repository: bytes} for every retired
    unit that base is too old for. Raises BadInput (nothing written) when a
    file is in neither the overlay nor its history."""
    out: dict[str, dict[str, bytes]] = {}
    for u in manifest.units:
        if not u.retired or not _needed_again(session, u, base):
            continue
        files = {}
        for path in _paths(u):
            data = _from_history(manifest.root, path)
            if data is None:
                raise BadInput(
                    f"unit '{u.name}' retired as applied upstream in {u.applied_upstream}, "
                    f"so {base.ref} needs it back, but {path} is not in the overlay "
                    "repository's git history; nothing was written",
                    f"restore {path} and remove applied-upstream from unit '{u.name}', "
                    f"or pin {u.applied_upstream} or later")
            files[path] = data
        out[u.name] = files
    return out


def earliest(manifest, names) -> str:
    """The oldest release a pin can move back to while these units stay retired."""
    ats = [manifest.unit(n).applied_upstream for n in names]
    return max(ats, key=version_key)


@contextlib.contextmanager
def stand_in(session, revived: dict[str, dict[str, bytes]]):
    """The session as if the revived units were back: a copy of overlay/ and
    the patches in the cache's scratch space, the units active again. Nothing
    in the overlay repository is written."""
    if not revived:
        yield session
        return
    m = session.manifest
    with durable.scratch(session.cache.root, "pinback") as root:
        if m.overlay_dir.is_dir():
            shutil.copytree(m.overlay_dir, root / OVERLAY_DIR, symlinks=True)
        for u in m.units:
            if u.kind == "patch" and not u.retired and (m.root / u.patch).is_file():
                (root / u.patch).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(m.root / u.patch, root / u.patch)
        for files in revived.values():
            for path, data in files.items():
                (root / path).parent.mkdir(parents=True, exist_ok=True)
                (root / path).write_bytes(data)
        units = [replace(u, applied_upstream=None) if u.name in revived else u
                 for u in m.units]
        work = copy.copy(session)
        work.manifest = replace(m, root=root, units=units)
        yield work
