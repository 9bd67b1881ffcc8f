"""All-or-nothing changes to the overlay repository's files.

A verb that changes several files (upgrade: the manifest, patches, retired
overlay files, CHANGELOG.md) collects the changes in a ``Transaction`` and
commits them at the end. Until then nothing in the overlay changes, so a run
that is interrupted while it works leaves the overlay as it was.

``commit`` stages new contents under .overlay/staging/, writes a journal
naming every rename and deletion, carries them out, and removes the journal.
If the process dies in that short window, ``recover`` (run at the start of
every verb) finishes the journal, so the overlay ends up entirely in the new
state, never half-way.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .errors import BadInput
from .paths import confine
from .state import state_dir

JOURNAL = "journal.json"
STAGING = ".overlay/staging"


class Transaction:
    def __init__(self, root: Path):
        self.root = root
        self.writes: dict[str, tuple[bytes, int | None]] = {}
        self.deletes: set[str] = set()

    def write(self, rel: str, data: bytes, mode: int | None = None) -> None:
        self.writes[rel] = (data, mode)
        self.deletes.discard(rel)

    def delete(self, rel: str) -> None:
        self.writes.pop(rel, None)
        self.deletes.add(rel)

    def read(self, rel: str) -> bytes | None:
        """The file as it will be after commit."""
        if rel in self.deletes:
            return None
        if rel in self.writes:
            return self.writes[rel][0]
        p = self.root / rel
        return p.read_bytes() if p.is_file() else None

    def changed(self) -> list[str]:
        return sorted(set(self.writes) | {d for d in self.deletes
                                          if (self.root / d).exists()})

    def commit(self) -> list[str]:
        """Carry out every change; the paths that changed."""
        changed = [rel for rel in self.changed()
                   if rel in self.deletes or self.read_current(rel) != self.writes[rel][0]]
        if not changed:
            return []
        staging = state_dir(self.root) / "staging"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        ops = []
        for i, rel in enumerate(changed):
            if rel in self.deletes:
                ops.append({"op": "delete", "path": rel})
                continue
            data, mode = self.writes[rel]
            staged = staging / f"{i:04d}"
            staged.write_bytes(data)
            if mode is not None:
                staged.chmod(mode)
            ops.append({"op": "write", "path": rel,
                        "staged": staged.relative_to(self.root).as_posix()})
        journal = state_dir(self.root) / JOURNAL
        tmp = journal.with_suffix(".tmp")
        check_ops(self.root, ops, str(journal))
        tmp.write_text(json.dumps(ops))
        os.replace(tmp, journal)  # from here on, the change will complete
        _carry_out(self.root, ops)
        journal.unlink()
        shutil.rmtree(staging, ignore_errors=True)
        return changed

    def read_current(self, rel: str) -> bytes | None:
        p = self.root / rel
        return p.read_bytes() if p.is_file() else None


def check_ops(root: Path, ops, where: str) -> None:
    """Act only on a journal this tool wrote: a list of delete/write ops whose
    paths are relative and stay inside the overlay root, with staged files only
    under .overlay/staging/. Anything else is refused before any op is done."""
    fix = (f"delete {where} if you did not run an overlay command that was interrupted; "
           "this tool never writes such a journal")

    def bad(problem: str):
        raise BadInput(f"{where}: {problem}", fix)

    if not isinstance(ops, list):
        bad("not a list of operations")
    for op in ops:
        if not isinstance(op, dict) or op.get("op") not in ("delete", "write") \
                or not isinstance(op.get("path"), str):
            bad(f"not an operation this tool writes: {op!r}")
        _relative_inside(root, op["path"], ".", bad)
        if op["op"] == "write":
            staged = op.get("staged")
            if not isinstance(staged, str):
                bad(f"staged file {staged!r} is not a path")
            if Path(staged).is_absolute():  # journals of earlier versions
                try:
                    staged = Path(staged).relative_to(root).as_posix()
                except ValueError:
                    bad(f"staged file {staged} is outside {root / STAGING}")
            _relative_inside(root, staged, STAGING, bad)
            if (root / staged).is_symlink():
                bad(f"staged file '{staged}' is a symlink, not a file this tool staged")


def _relative_inside(root: Path, rel: str, under: str, bad) -> None:
    p = Path(rel)
    if not rel or p.is_absolute() or ".." in p.parts:
        bad(f"path '{rel}' is not relative to the overlay repository")
    if ".git" in p.parts:
        bad(f"path '{rel}' is inside git's own data (.git)")
    if under != "." and not (rel + "/").startswith(under + "/"):
        bad(f"staged file '{rel}' is not under {under}/")
    # the leaf itself may be a link the op replaces or deletes; where it lives may not lead out
    confine((root / rel).parent, root / under if under != "." else root, f"named in {JOURNAL}")


def _carry_out(root: Path, ops: list[dict]) -> None:
    for op in ops:
        dest = root / op["path"]
        if op["op"] == "delete":
            if dest.exists() or dest.is_symlink():
                dest.unlink()
            _prune_empty_dirs(root, dest.parent)
        else:
            staged = root / op["staged"]
            if staged.exists():  # not yet moved by an earlier, interrupted run
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, dest)


def _prune_empty_dirs(root: Path, d: Path) -> None:
    """Remove directories a deletion left empty, up to overlay/ or patches/."""
    stop = {root, root / "overlay", root / "patches"}
    while d not in stop and root in d.parents and d.is_dir() and not any(d.iterdir()):
        d.rmdir()
        d = d.parent


def recover(root: Path) -> bool:
    """Finish a transaction an interrupted run left; True if there was one."""
    journal = root / ".overlay" / JOURNAL
    if not journal.exists():
        return False
    try:
        ops = json.loads(journal.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"{journal}: not a journal this tool wrote ({exc})",
                       f"delete {journal} if no overlay command was interrupted") from None
    check_ops(root, ops, str(journal))
    _carry_out(root, ops)
    journal.unlink()
    shutil.rmtree(root / ".overlay" / "staging", ignore_errors=True)
    return True
