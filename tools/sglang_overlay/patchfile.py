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


# git's C-style quoting of a path with special characters (core.quotePath)
_ESCAPES = {b"a": 7, b"b": 8, b"t": 9, b"n": 10, b"v": 11, b"f": 12, b"r": 13,
            b'"': 34, b"\\": 92}


def unquote(raw: bytes) -> tuple[bytes, bytes]:
    """(name, rest) of a path as git writes it: "quoted" (C escapes, octal
    bytes) or bare (up to a tab, git's end mark for names with spaces)."""
    if not raw.startswith(b'"'):
        name, _, rest = raw.partition(b"\t")
        return name, rest
    out = bytearray()
    i = 1
    while i < len(raw):
        c = raw[i:i + 1]
        if c == b'"':
            return bytes(out), raw[i + 1:]
        if c == b"\\":
            nxt = raw[i + 1:i + 2]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            octal = raw[i + 1:i + 4]
            if re.fullmatch(rb"[0-7]{3}", octal):
                out.append(int(octal, 8))
                i += 4
                continue
            raise NotAPatch(f"bad escape in the quoted file name {raw!r}")
        out += c
        i += 1
    raise NotAPatch(f"unterminated quoted file name {raw!r}")


def _strip_prefix(raw: bytes, prefix: bytes) -> str | None:
    raw = raw.rstrip(b"\n")
    if raw == b"/dev/null":
        return None
    name, _ = unquote(raw)
    if not name.startswith(prefix):
        raise NotAPatch(f"unexpected file name {raw!r}")
    return name[len(prefix) :].decode("utf-8", "surrogateescape")


def _diff_line_names(line: bytes) -> tuple[str, str] | None:
    """(old, new) path from "diff --git a/X b/Y", where the section has no
    ---/+++ lines (a mode change, a rename without changes)."""
    rest = line.rstrip(b"\n")[len(DIFF_START) :]
    if rest.startswith(b'"'):
        old, tail = unquote(rest)
        new, _ = unquote(tail.lstrip(b" "))
    elif rest.endswith(b'"'):
        old, new = rest[: rest.index(b' "')], unquote(rest[rest.index(b' "') + 1 :])[0]
    else:  # both bare: a mode change names the same path twice
        half = (len(rest) - 1) // 2
        old, new = rest[:half], rest[half + 1 :]
        if old[2:] != new[2:]:
            return None
    if not (old.startswith(b"a/") and new.startswith(b"b/")):
        return None
    return (old[2:].decode("utf-8", "surrogateescape"),
            new[2:].decode("utf-8", "surrogateescape"))


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
            hunk = Hunk(header=line.decode("utf-8", "replace").rstrip("\n"), lines=line)
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
        elif line.startswith((b"rename from ", b"copy from ")):
            current.old_path = unquote(line.rstrip(b"\n").split(b" ", 2)[2])[0].decode(
                "utf-8", "surrogateescape")
        elif line.startswith((b"rename to ", b"copy to ")):
            current.new_path = unquote(line.rstrip(b"\n").split(b" ", 2)[2])[0].decode(
                "utf-8", "surrogateescape")
    if not files:
        raise NotAPatch("no 'diff --git' section")
    for f in files:
        if f.old_path is None and f.new_path is None:
            # a pure mode change carries its names on the diff line only
            names = _diff_line_names(f.preamble.split(b"\n", 1)[0])
            if names is None:
                raise NotAPatch("a file section names no file")
            f.old_path, f.new_path = names
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
