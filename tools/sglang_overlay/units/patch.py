"""`patch` units: git-format-patch files with full index lines.

Applied in this order of preference:
  1. plainly (``git apply``; hunks may land at an offset);
  2. if it reverse-applies, upstream already has it: ``already-upstream``;
  3. a 3-way merge against the blobs the patch was made on: ``applied-3way``;
  4. otherwise ``conflict``, naming the files and the hunks that do not apply.

When a file the patch edits is gone from the tree, the change follows it
(rename detection, then hunk relocation: ``moves``): ``applied-moved``.
"""

from __future__ import annotations

import re

from .. import patchfile
from ..manifest import Unit
from . import (
    ALREADY_UPSTREAM,
    APPLIED,
    APPLIED_3WAY,
    CONFLICT,
    Context,
    Outcome,
    moves,
)

OFFSET = re.compile(r"^Hunk #\d+ succeeded at \d+ \(offset", re.M)


def failing_hunks(ctx: Context, parsed: patchfile.Patch) -> list[str]:
    """The hunks that do not apply plainly, as 'path @@ ... @@'."""
    out = []
    for path, hunk, single in patchfile.single_hunk_patches(parsed):
        if not ctx.stage.apply(single, "--check").ok:
            out.append(f"{path} {hunk.header}")
    return out


def apply(ctx: Context, unit: Unit) -> Outcome:
    stage = ctx.stage
    path = ctx.patch_file(unit)
    parsed = patchfile.parse(path.read_bytes())
    paths = parsed.paths
    gone = moves.gone_files(lambda p: stage.entry(p) is not None, parsed)
    if gone:
        try:
            return moves.apply(ctx, parsed, gone)
        finally:
            stage.invalidate()  # moves write the index behind the stage's back

    plain = stage.apply(path, "-v")
    if plain.ok:
        offset = bool(OFFSET.search(plain.err))
        return Outcome(APPLIED, paths, "at an offset" if offset else "", stale=offset)

    if stage.apply(path, "--reverse", "--check").ok:
        return Outcome(ALREADY_UPSTREAM, paths, "the patch reverse-applies")

    hunks = failing_hunks(ctx, parsed)
    if not ctx.ensure_patch_base():
        return Outcome(CONFLICT, paths,
                       "does not apply, and the blobs it was made on are not "
                       "available for a 3-way merge", hunks)
    merged = stage.apply(path, "--3way")
    if merged.ok:
        return Outcome(APPLIED_3WAY, paths, "3-way merge", stale=True)
    conflicted = stage.unmerged() or paths
    stage.reset()
    return Outcome(CONFLICT, conflicted, "3-way merge left conflicts", hunks)
