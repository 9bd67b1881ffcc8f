"""`files` units: whole files under overlay/ that add or replace upstream files."""

from __future__ import annotations

from ..manifest import Unit
from . import (
    ALREADY_UPSTREAM,
    APPLIED,
    CONFLICT,
    UPSTREAM_PROVIDES,
    Context,
    Outcome,
    file_payload,
)


def diff_summary(git, ours: str, theirs: str) -> str:
    """'+a -b' from upstream's blob to the overlay's, as `git diff --numstat`
    counts them (the same numbers a reviewer sees)."""
    a = len(git.object_bytes(theirs).splitlines())
    b = len(git.object_bytes(ours).splitlines())
    out = git.run("diff", "--numstat", theirs, ours).split()
    added, removed = (out[0], out[1]) if len(out) >= 2 else ("0", "0")
    return f"upstream's {a} lines vs ours {b} (+{added} -{removed})"


def _blocked(ctx: Context, rel: str) -> str | None:
    """Why rel cannot be written: upstream has a file where a directory must be,
    or a directory where the file must be."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts))]
    names = ctx.stage.paths_under(prefixes, rel)
    for p in prefixes:
        if p in names:
            return f"upstream has a file at {p}, where {rel} needs a directory"
    if rel + "/" in names:
        return f"upstream has a directory at {rel}"
    return None


def apply(ctx: Context, unit: Unit) -> Outcome:
    stage = ctx.stage
    for rel in ctx.manifest.unit_files(unit):
        problem = _blocked(ctx, rel)
        if problem:
            return Outcome(CONFLICT, [rel], problem)
    changed: list[str] = []
    provides: list[str] = []
    notes: list[str] = []
    for rel in ctx.manifest.unit_files(unit):
        data, mode = file_payload(ctx.manifest.files_dir(unit) / rel)
        current = stage.entry(rel)
        if current is not None and current == (mode, stage.blob_id(data)):
            continue
        if current is not None and ctx.existed_at_pin(rel) is False:
            provides.append(rel)
            notes.append((rel, diff_summary(stage.git, stage.hash(data), current[1])))
        stage.write(rel, data, mode)
        changed.append(rel)
    if not changed:
        return Outcome(ALREADY_UPSTREAM, ctx.manifest.unit_files(unit),
                       "identical to upstream's files")
    if provides:
        detail = notes[0][1] if len(notes) == 1 else "; ".join(f"{p}: {d}" for p, d in notes)
        return Outcome(UPSTREAM_PROVIDES, provides, detail)
    return Outcome(APPLIED, changed)
