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

from . import durable
from .durable import crash_point
from .state import state_dir

JOURNAL = "journal.json"


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
            durable.write_bytes(staged, data, mode)
            ops.append({"op": "write", "path": rel, "staged": str(staged)})
        journal = state_dir(self.root) / JOURNAL
        durable.write_bytes(journal, json.dumps(ops).encode())
        # from here on, the change will complete
        crash_point("journal-written")
        _carry_out(self.root, ops)
        journal.unlink()
        shutil.rmtree(staging, ignore_errors=True)
        return changed

    def read_current(self, rel: str) -> bytes | None:
        p = self.root / rel
        return p.read_bytes() if p.is_file() else None


def _carry_out(root: Path, ops: list[dict]) -> None:
    for i, op in enumerate(ops):
        if i == 1:
            crash_point("journal-half-carried")
        dest = root / op["path"]
        if op["op"] == "delete":
            if dest.exists() or dest.is_symlink():
                dest.unlink()
            _prune_empty_dirs(root, dest.parent)
        else:
            staged = Path(op["staged"])
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
    ops = json.loads(journal.read_text())
    _carry_out(root, ops)
    journal.unlink()
    shutil.rmtree(root / ".overlay" / "staging", ignore_errors=True)
    return True
