"""Read and write git-format-patch files.

A patch unit's file has two parts: a header the user owns (the mail header
and message: what, why, upstream status) and the diff, which the tool
regenerates. ``split`` keeps the header byte-for-byte so a re-export changes
only what the diff changed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

FULL_SHA = re.compile(rb"^[0-9a-f]{40}$")
HUNK = re.compile(rb"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
DIFF_START = b"diff --git "


class NotAPatch(ValueError):
    pass


@dataclass
class Hunk:
    header: str  # the "@@ -a,b +c,d @@ context" line
    old_start: int
    old_len: int
    lines: bytes  # the hunk header line and its body

    @property
    def function(self) -> str:
        """The context git wrote after the second "@@" (the enclosing def or
        class, as git's funcname rule found it), or ""."""
        parts = self.header.split("@@", 2)
        return parts[2].strip() if len(parts) == 3 else ""

    def old_side(self) -> list[str]:
        """The hunk's context and removed lines, without their prefix."""
        body = self.lines.split(b"\n", 1)[1] if b"\n" in self.lines else b""
        return [line[1:].decode("utf-8", "replace") for line in body.splitlines()
                if line[:1] in (b" ", b"-")]


@dataclass
class FileDiff:
    old_path: str | None  # None when the file is created
    new_path: str | None  # None when the file is deleted
    old_blob: str | None
    new_blob: str | None
    preamble: bytes  # "diff --git" up to the first hunk
    hunks: list[Hunk] = field(default_factory=list)
    binary: bool = False

    @property
    def path(self) -> str:
        return self.new_path or self.old_path or ""


@dataclass
class Patch:
    header: bytes  # everything before the first "diff --git"
    files: list[FileDiff]
    trailer: bytes  # a format-patch signature ("-- \n2.39.5\n"), if any

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.files]


def split(data: bytes) -> tuple[bytes, bytes]:
    """(header, diff) of a patch file; the diff starts at the first "diff --git"."""
    if data.startswith(DIFF_START):
        return b"", data
    idx = data.find(b"\n" + DIFF_START)
    if idx < 0:
        raise NotAPatch("no 'diff --git' section")
    return data[: idx + 1], data[idx + 1 :]


def _strip_prefix(raw: bytes, prefix: bytes) -> str | None:
    raw = raw.rstrip(b"\n")
    if raw == b"/dev/null":
        return None
    if raw.startswith(b'"'):
        raise NotAPatch("quoted file names are not supported")
    if not raw.startswith(prefix):
        raise NotAPatch(f"unexpected file name {raw!r}")
    return raw[len(prefix) :].decode("utf-8", "surrogateescape")


def parse(data: bytes) -> Patch:
    """Parse a git patch; raise NotAPatch when it is not one."""
    header, diff = split(data)
    trailer = b""
    sig = diff.rfind(b"\n-- \n")
    if sig >= 0:
        trailer = diff[sig + 1 :]
        diff = diff[: sig + 1]
    files: list[FileDiff] = []
    current: FileDiff | None = None
    hunk: Hunk | None = None
    for line in diff.splitlines(keepends=True):
        if line.startswith(DIFF_START):
            current = FileDiff(None, None, None, None, preamble=line)
            files.append(current)
            hunk = None
            continue
        if current is None:
            raise NotAPatch("content before the first 'diff --git'")
        m = HUNK.match(line)
        if m:
            hunk = Hunk(
                header=line.decode("utf-8", "replace").rstrip("\n"),
                old_start=int(m.group(1)),
                old_len=int(m.group(2) or 1),
                lines=line,
            )
            current.hunks.append(hunk)
            continue
        if hunk is not None:
            hunk.lines += line
            continue
        current.preamble += line
        if line.startswith(b"index "):
            blobs = line.split()[1]
            old, _, new = blobs.partition(b"..")
            current.old_blob = old.decode()
            current.new_blob = new.decode()
        elif line.startswith(b"--- "):
            current.old_path = _strip_prefix(line[4:], b"a/")
        elif line.startswith(b"+++ "):
            current.new_path = _strip_prefix(line[4:], b"b/")
        elif line.startswith(b"GIT binary patch") or line.startswith(b"Binary files"):
            current.binary = True
        elif line.startswith((b"new file mode", b"deleted file mode", b"old mode",
                              b"new mode", b"similarity", b"rename ", b"copy ",
                              b"dissimilarity")):
            pass
    if not files:
        raise NotAPatch("no 'diff --git' section")
    for f in files:
        if f.old_path is None and f.new_path is None:
            # a pure mode change or rename carries its names on the diff line
            names = f.preamble.split(b"\n", 1)[0][len(DIFF_START) :].split(b" b/")
            if len(names) == 2 and names[0].startswith(b"a/"):
                f.old_path = names[0][2:].decode("utf-8", "surrogateescape")
                f.new_path = names[1].decode("utf-8", "surrogateescape")
            else:
                raise NotAPatch("a file section names no file")
    return Patch(header=header, files=files, trailer=trailer)


def abbreviated_index(patch: Patch) -> list[str]:
    """Paths whose index line is missing or abbreviated (3-way needs full ones)."""
    bad = []
    for f in patch.files:
        if not (f.hunks or f.binary):
            continue  # mode-only or rename-only: nothing to merge
        if not f.old_blob or not FULL_SHA.match(f.old_blob.encode()):
            bad.append(f.path)
    return bad


def single_hunk_patches(patch: Patch) -> list[tuple[str, Hunk, bytes]]:
    """One small patch per hunk, to find out which hunks apply."""
    out = []
    for f in patch.files:
        for h in f.hunks:
            out.append((f.path, h, f.preamble + h.lines))
    return out


def assemble(header: bytes, diff: bytes, trailer: bytes = b"") -> bytes:
    """A patch file from a kept header and a regenerated diff."""
    if header and not header.endswith(b"\n"):
        header += b"\n"
    return header + diff + trailer
