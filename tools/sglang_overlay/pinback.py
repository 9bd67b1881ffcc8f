"""Moving the pin back: bring back what the moves forward took away.

Two things leave the overlay when the pin moves forward, and a pin before
them needs them again:

- A unit retires (``applied-upstream = "vX"``) when upstream has its change
  from release vX on; its files leave overlay/ (or patches/, variants/). It
  comes back as the overlay repository's git history had it when it retired
  (the parent of the commit that deleted its files, or the committed version
  when the deletion is not committed yet).
- An upgrade drops the variants no release from the new pin chooses and
  promotes the one the new pin uses to be the unit's own patch, so the
  releases before that pin lose their content. It comes back from the last
  commit of the overlay repository pinned at or before the new (older) pin:
  the unit's patch and variants as that commit had them for the releases
  before the current pin; the unit's variants, and everything from the
  current pin on, stay as they are (with_content_before in manifest.py).

When history does not have what is needed, the move is refused before
anything is written. plan() gathers it all; the verb writes it in its one
transaction.
"""

from __future__ import annotations

import contextlib
import copy
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import durable
from .errors import BadInput
from .gitutil import Git
from .manifest import (
    MANIFEST_NAME,
    OVERLAY_DIR,
    VARIANTS_DIR,
    Manifest,
    load,
    reachable,
    stored_at,
    with_content_before,
    with_unit_content,
    with_unit_keys,
    with_variant,
)
from .releases import is_release
from .versions import version_key


@dataclass
class Plan:
    """What moving the pin back brings back; nothing of it is written yet."""

    manifest: Manifest  # the overlay's, with it back (the real root)
    text: str  # overlay.toml with it back
    files: dict[str, bytes] = field(default_factory=dict)  # path -> bytes, from history
    revived: dict[str, str] = field(default_factory=dict)  # unit -> its applied-upstream
    restored: dict[str, str] = field(default_factory=dict)  # unit -> what came back
    earliest: str | None = None  # the oldest pin that needs none of it

    def __bool__(self) -> bool:
        return bool(self.revived or self.restored)

    def names(self) -> list[str]:
        return list(dict.fromkeys([*self.revived, *self.restored]))


def plan(session, manifest: Manifest, base) -> Plan:
    """What pinning base brings back. Raises BadInput (nothing written) when
    a file it needs is in neither the overlay nor its git history."""
    text = (manifest.root / MANIFEST_NAME).read_text(encoding="utf-8")
    units = {u.name: u for u in manifest.units}
    out = Plan(manifest, text)
    for name, files in revivals(session, manifest, base).items():
        out.revived[name] = units[name].applied_upstream
        out.text = with_unit_keys(out.text, name, applied_upstream=None)
        units[name] = replace(units[name], applied_upstream=None)
        out.files.update(files)
    pin, to = manifest.ref, base.ref
    earlier = (_pinned_at_or_before(manifest.root, to)
               if is_release(to) and is_release(pin) and version_key(to) < version_key(pin)
               else None)
    if earlier is not None:
        commit, old = earlier
        then = {u.name: u for u in old.units}
        for name, u in units.items():
            was = then.get(name)
            if u.retired or was is None or was.kind != u.kind or u.kind == "edit":
                continue
            new = reachable(with_content_before(u, was, pin), to)
            if (new.patch, new.variants) == (u.patch, u.variants):
                continue
            back = [c for c in manifest.all_contents(new)
                    if not _present(manifest.root, stored_at(c), out.files)]
            for c in back:
                out.files.update(_content_at(manifest.root, commit, old.ref, c, to, pin))
            out.text = with_unit_content(out.text, new)
            units[name] = new
            out.restored[name] = _what(new, back, pin)
    out.manifest = replace(manifest, units=[units[u.name] for u in manifest.units])
    ats = list(out.revived.values()) + ([pin] if out.restored else [])
    out.earliest = max(ats, key=version_key) if ats else None
    return out


def _present(root: Path, path: str, coming: dict[str, bytes]) -> bool:
    """Is a patch (or a files variant's folder) in the overlay, or coming back?"""
    return (root / path).exists() or any(p == path or p.startswith(path + "/")
                                         for p in coming)


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
    """The files of the unit's own content and its variants'."""
    out = []
    for c in (unit, *(with_variant(unit, v) for v in unit.variants)):
        if c.kind == "files":
            out += [f"{c.files_root}/{rel}" for rel in c.files]
        elif c.kind == "patch":
            out.append(c.patch)
    return out  # an edit unit is all in the manifest


def _from_history(root: Path, path: str) -> bytes | None:
    p = root / path
    if p.is_file():
        return p.read_bytes()
    git = Git(root)
    if not git.rev("HEAD"):
        return None
    last = git.result("rev-list", "-1", "HEAD", "--", path)
    commit = last.out.strip() if last.ok else ""
    if not commit:
        return None
    for rev in (commit, f"{commit}^"):  # still committed, or just deleted there
        if (data := git.file_at(rev, f"./{path}")) is not None:
            return data
    return None


def revivals(session, manifest, base) -> dict[str, dict[str, bytes]]:
    """Unit name -> {path in the overlay repository: bytes} for every retired
    unit that base is too old for (its own content and the variants base
    still reaches). Raises BadInput (nothing written) when a file is in
    neither the overlay nor its history."""
    out: dict[str, dict[str, bytes]] = {}
    for u in manifest.units:
        if not u.retired or not _needed_again(session, u, base):
            continue
        files = {}
        for path in _paths(reachable(u, base.ref)):
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


def _pinned_at_or_before(root: Path, release: str) -> tuple[str, Manifest] | None:
    """The last commit of the overlay repository whose pin is a release at or
    before release, and its manifest; None when history has none (or it does
    not parse: then there is nothing to go by)."""
    git = Git(root)
    if not git.rev("HEAD"):
        return None
    log = git.result("log", "--format=%H", "HEAD", "--", MANIFEST_NAME)
    changes = log.out.split() if log.ok else []
    for i, commit in enumerate(changes):
        old = _manifest_at(git, commit)
        if old is None or not is_release(old.ref) \
                or version_key(old.ref) > version_key(release):
            continue
        # the last commit before the pin moved on, with what was committed meanwhile
        last = git.rev(f"{changes[i - 1]}^" if i else "HEAD")
        same = _manifest_at(git, last) if last else None
        if same is not None and same.ref == old.ref:
            return last, same
        return commit, old
    return None


def _manifest_at(git: Git, commit: str) -> Manifest | None:
    got = git.result("show", f"{commit}:./{MANIFEST_NAME}", binary=True)
    if not got.ok:
        return None
    try:
        return load(git.cwd, check_files=False, text=got.out.decode("utf-8"))
    except (BadInput, UnicodeDecodeError):
        return None


def _content_at(root: Path, commit: str, old_pin: str, content, to: str,
                pin: str) -> dict[str, bytes]:
    """The files of one content of a unit (its patch, or a files variant's
    folder) as commit has them."""
    git = Git(root)
    paths = [content.patch] if content.kind == "patch" else \
        [f"{content.files_root}/{rel}" for rel in content.files]
    prefix = git.run("rev-parse", "--show-prefix").strip()
    out: dict[str, bytes] = {}
    for path in paths:
        listed = git.result("ls-tree", "-r", "--full-name", commit, "--", f"./{path}")
        blobs = [line.split("\t", 1) for line in listed.out.splitlines()] if listed.ok else []
        if not blobs:
            what = ("patch" if content.variant is None else f"variant from {content.variant}")
            raise BadInput(
                f"moving the pin back to {to} needs the {what} of unit '{content.name}' as "
                f"commit {commit[:12]} (pinned at {old_pin}) had it, but {path} is not "
                "in that commit; nothing was written",
                f"restore {path} and its entry in {MANIFEST_NAME} by hand, or pin {pin} "
                "or later")
        for meta, full in blobs:
            out[full[len(prefix):]] = git.object_bytes(meta.split()[2])
    return out


def _what(unit, back, pin: str) -> str:
    """What came back of unit, for the notes."""
    parts = []
    for c in back:
        if c.variant is not None:
            continue
        first = unit.variants[0].from_ref if unit.variants else None
        parts.append(f"patch for releases before {first}" if first else "patch")
    froms = [c.variant for c in back if c.variant is not None]
    if froms:
        parts.append(("variants" if len(froms) > 1 else "variant") + " from " + ", ".join(froms))
    return " and ".join(parts) or f"variants for the releases before {pin}"


@contextlib.contextmanager
def stand_in(session, plan: Plan):
    """The session as if the plan were carried out: the overlay's files
    (overlay/, variants/, the patches) copied to a temporary directory with
    what comes back, and its manifest. Nothing in the overlay repository is
    written."""
    if not plan:
        yield session
        return
    m = plan.manifest
    with durable.scratch(session.cache.root, "pinback") as root:
        for d in (OVERLAY_DIR, VARIANTS_DIR):
            if (m.root / d).is_dir():
                shutil.copytree(m.root / d, root / d, symlinks=True)
        for u in session.manifest.units:
            for c in session.manifest.all_contents(u):
                if c.kind == "patch" and (m.root / c.patch).is_file():
                    (root / c.patch).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(m.root / c.patch, root / c.patch)
        for path, data in plan.files.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_bytes(data)
        work = copy.copy(session)
        work.manifest = replace(m, root=root)
        yield work
