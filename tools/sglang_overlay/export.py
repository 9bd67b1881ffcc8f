"""Turning commits and tree changes back into overlay units.

Used by refresh (edits in an applied worktree), capture (an existing fork)
and upgrade (patches regenerated against a new base). Export is byte-stable:
diffs are made with fixed options, and a patch's header (its message: what,
why, upstream status) is kept byte for byte, so exporting again with no
change produces the same bytes and leaves `git status` clean.
"""

from __future__ import annotations

import re
from . import patchfile
from .gitutil import DiffEntry, Git, IDENTITY_EMAIL, IDENTITY_NAME

DIFF_OPTIONS = ("--full-index", "--binary", "--no-renames", "--no-color",
                "--no-ext-diff", "--no-textconv", "--src-prefix=a/", "--dst-prefix=b/")


def diff(git: Git, a: str, b: str, paths: list[str] | tuple[str, ...] = ()) -> bytes:
    """The diff between two commits or trees, in the form patches store."""
    args = ["diff", *DIFF_OPTIONS, a, b]
    if paths:
        args += ["--", *paths]
    return git.run_bytes(*args)


STAT_BLOCK = re.compile(rb"\n---\n((?: [^\n]*\n)+)\n$")


def with_new_diff(old_patch: bytes, new_diff: bytes, git: Git | None = None) -> bytes:
    """The patch file with its header and trailer kept and its diff replaced.

    An unchanged diff gives back the same bytes. When the diff changed and
    the header carries a diffstat (format-patch's "---" block), the stat is
    derived data and is recomputed (or dropped when no git is at hand).
    """
    header, old_diff = patchfile.split(old_patch)
    parsed = patchfile.parse(old_patch)
    if old_diff[: len(old_diff) - len(parsed.trailer)] == new_diff:
        return old_patch
    m = STAT_BLOCK.search(header)
    if m:
        stat = git.run_bytes("apply", "--stat", "--summary", "-", stdin=new_diff) if git else b""
        header = header[: m.start(1)] + stat + b"\n" if stat else header[: m.start()] + b"\n---\n"
    return patchfile.assemble(header, new_diff, parsed.trailer)


def commit_header(git: Git, commit: str) -> bytes:
    """A format-patch header (From, Date, Subject, message) for one commit."""
    out = git.run_bytes("format-patch", "-1", "--stdout", "--zero-commit", "--no-signature",
                        "--no-stat", "--full-index", "--keep-subject", commit)
    header, _ = patchfile.split(out)
    return header


def new_header(subject: str, body: str, author: str | None = None,
               date: str = "Thu, 1 Jan 1970 00:00:00 +0000") -> bytes:
    """A format-patch header written from scratch."""
    author = author or f"{IDENTITY_NAME} <{IDENTITY_EMAIL}>"
    text = (
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
        f"From: {author}\n"
        f"Date: {date}\n"
        f"Subject: [PATCH] {subject}\n"
        "\n"
        f"{body.strip()}\n"
        "\n"
    )
    return text.encode()


def slug(text: str, taken: set[str] | frozenset = frozenset()) -> str:
    """A unit name from free text, unique among taken."""
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40].strip("-") or "unit"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def changes(git: Git, a: str, b: str) -> list[DiffEntry]:
    """Every path changed between commits a and b."""
    return git.diff_raw(a, b)


def is_binary(git: Git, a: str, b: str, path: str) -> bool:
    out = git.run("diff", "--numstat", "--no-renames", a, b, "--", path)
    return out.startswith("-\t-\t")
