"""Moving the pin to a new upstream ref: the machinery behind `overlay upgrade`
and `overlay refresh --continue` (which finishes an upgrade stopped on a conflict).

0. Moving the pin back brings back what moves forward took away (pinback.py):
   units retired after REF, and the patch and variants upgrades dropped or
   promoted for releases before the old pin, from the overlay repository's
   git history, or a refusal (exit 2) with nothing written.
1. Build the overlay on REF. A conflict stops here: a resolution worktree
   is left and `overlay refresh --continue` finishes the upgrade later.
2. Retire units upstream caught up with: `already-upstream` ones always,
   `upstream-provides` ones when the user accepts (asked on a terminal;
   --yes accepts all). The manifest records applied-upstream = the first
   release whose tree has the change (releases.py), REF when it cannot tell.
3. Regenerate every patch whose export against REF differs from the stored
   one (it needed a 3-way merge or an offset, or its base blobs moved), so it
   applies cleanly again; headers are kept.
4. Move the pin and the lock, add a CHANGELOG.md line.

Steps 2-4 are written in one transaction (journal.py) at the very end, so
an upgrade interrupted before then leaves the overlay byte-identical.
Finally the new overlay is applied to REF's worktree.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace

import click

from . import durable, export, journal, pinback, releases, report, target, workflow
from .changelog import add_line
from .durable import crash_point
from .engine import Build, Session
from .errors import FINDINGS, OK, BadInput
from .manifest import (
    MANIFEST_NAME,
    load,
    unreachable_variants,
    with_lock,
    with_unit_keys,
    with_variants_dropped,
)
from .units import ALREADY_UPSTREAM, APPLIED_MOVED, UPSTREAM_PROVIDES
from .units import Stage
from .units import edit as edits
from .upstream import Resolved
from .versions import version_key

UNFINISHED = ".overlay/upgrade.json"  # written with the upgraded overlay, removed after


def upgrade(session: Session, to_ref: str, yes: bool, as_json: bool) -> int:
    m = session.manifest
    root = m.root
    from_ref = m.ref
    left = unfinished(root)
    if left and left.get("to") == to_ref == from_ref:
        # the overlay was upgraded by a run that was killed before the worktree
        return apply_new_pin(session, left, as_json)
    dest = target.default_target(root, to_ref)
    pre = target.preflight(session.workspace, dest, target.branch_for(to_ref), force=False)
    base = session.resolve(to_ref)
    # 0. moving the pin back brings back what moves forward took away: retired
    # units, and the content upgrades dropped for releases before the old pin
    back = pinback.plan(session, m, base)
    if back:
        _ = session.overlay_commit  # of the real overlay, before the stand-in
    judged = _judge(session, back, base, from_ref, to_ref, yes)
    if not judged.build.ok:
        return _stop(session, judged.build, pre, from_ref, to_ref, yes, base, as_json,
                     judged.retire)

    # no lock when the upstream was overridden with --upstream
    lock_commit = base.commit if session.is_manifest_upstream else None
    tx, actions, regenerated = _upgraded_overlay(session, back, judged, from_ref, to_ref,
                                                 lock_commit)
    # recorded with the change itself: a run killed before the worktree is made
    # leaves the record, and the next `upgrade --to REF` makes the worktree
    record = {"from": from_ref, "to": to_ref, "base": base.commit}
    tx.write(UNFINISHED, (json.dumps(record, sort_keys=True) + "\n").encode())
    crash_point("upgrade-built")
    changed = [p for p in tx.commit() if p != UNFINISHED]
    crash_point("upgrade-overlay-written")

    # the overlay is upgraded; now show it applied on REF
    final, out, code = _finish_worktree(session, record, pre)
    first = judged.first
    if as_json:
        report.emit_json({
            "from": from_ref, "to": to_ref, "base": base.commit, "lock": lock_commit,
            "units": [{**r.to_json(), "status": judged.statuses[r.unit.name],
                       "action": actions[r.unit.name]} for r in first.results],
            "retired": list(judged.retire), "regenerated": regenerated,
            "revived": list(back.revived), "restored": back.restored,
            "changed_files": changed,
            **out.to_json(), "exit_code": code,
        })
        return code
    rows = [[r.unit.name, r.unit.kind, r.status, actions[r.unit.name]] for r in first.results]
    click.echo(report.table(("UNIT", "KIND", "ON " + to_ref, "ACTION"), rows, color_col=2))
    for f in out.findings:
        click.echo(f.text())
    click.echo("")
    verb = "moved the pin back" if back or (
        from_ref and version_key(to_ref) < version_key(from_ref)) else "upgraded"
    click.echo(f"{verb} {from_ref} -> {to_ref} ({base.commit[:12]}); "
               f"changed: {', '.join(changed) or 'nothing'}")
    click.echo(f"{dest}: branch {pre.branch} at {final.head[:12]}")
    return code


@dataclass
class _Judged:
    """The overlay built on REF (steps 1 and 2), before anything is written."""

    first: Build  # every unit applied: what upstream caught up with
    build: Build  # the units that stay; patches are regenerated against it
    retire: dict[str, str]  # unit name -> the status it is retired for
    retire_at: dict[str, str]  # unit name -> the release upstream first had it in
    patches: dict[str, bytes]  # every patch (units' and variants'), as the stand-in has them

    @property
    def statuses(self) -> dict[str, str]:
        return {r.unit.name: r.status for r in self.first.results}


def _judge(session: Session, back, base: Resolved, from_ref, to_ref: str, yes: bool) -> _Judged:
    """Build the overlay (with what moving the pin back brings back) on REF:
    which units to retire, and the build of the ones that stay."""
    with pinback.stand_in(session, back) as work:
        wm = work.manifest
        # 1. what upstream caught up with, judged with every unit applied
        first = work.build(base)
        retire: dict[str, str] = {}
        for r in first.results:
            if r.unit.retired:
                continue
            if r.status == ALREADY_UPSTREAM or (
                    r.status == UPSTREAM_PROVIDES and _accept(r.unit.name, r.files, r.detail,
                                                              to_ref, yes)):
                retire[r.unit.name] = r.status
        # the release upstream first had it in, from the trees (files units)
        retire_at = {name: _first_release(work, wm.unit(name), from_ref, to_ref)
                     for name in retire}
        # 2. the overlay as it will be: the units that stay, on REF. Patches are
        # regenerated against exactly this, and a conflict here stops the upgrade.
        staying = [replace(u, applied_upstream=retire_at[u.name]) if u.name in retire else u
                   for u in wm.units]
        build = work.build(base, units=staying) if retire else first
        if not build.ok and back:
            names = ", ".join(r.unit.name for r in build.conflicts)
            raise BadInput(f"moving the pin back to {to_ref} brings back "
                           f"{', '.join(back.names())}, but {names} then conflicts on "
                           f"{to_ref}; nothing was written",
                           f"pin a release at or after {back.earliest}, or "
                           "restore the units by hand and resolve with `overlay apply`")
        patches = {c.patch: work.patch_file(c).read_bytes()
                   for u in wm.units if u.kind == "patch" and not u.retired
                   for c in wm.all_contents(u)}
    return _Judged(first, build, retire, retire_at, patches)


def _upgraded_overlay(session: Session, back, judged: _Judged, from_ref, to_ref: str,
                      lock_commit: str | None):
    """Steps 2-4 in one transaction, not yet committed: retire, regenerate, drop
    variants, move the pin and the lock, add the CHANGELOG line. The transaction,
    each unit's action and the regenerated units."""
    tx = journal.Transaction(session.manifest.root)
    text = back.text
    for rel, data in back.files.items():
        tx.write(rel, data)
    m = back.manifest  # the units as they are back
    retire, retire_at = judged.retire, judged.retire_at
    statuses = judged.statuses
    actions: dict[str, str] = {}
    regenerated = []
    dropped_variants: list[str] = []
    for r in judged.build.results:
        u = next(x for x in m.units if x.name == r.unit.name)
        if u.retired:
            actions[u.name] = "retired earlier"
            continue
        if u.name in retire:
            text = with_unit_keys(text, u.name, applied_upstream=retire_at[u.name])
            for c in m.all_contents(u):
                if c.kind == "files":
                    for rel in m.unit_files(c):
                        tx.delete(f"{c.files_root}/{rel}")
                elif c.kind == "patch":
                    tx.delete(c.patch)
            actions[u.name] = f"retired ({retire[u.name]})"
            continue
        text, note = _drop_variants(m, u, to_ref, text, tx)
        if note:
            dropped_variants.append(f"`{u.name}` {note}")
        tail = (f"; {note}" if note else "") + (
            f"; brought back its {back.restored[u.name]}" if u.name in back.restored else "")
        if u.kind == "patch":
            v = r.unit  # the variant the build used on REF
            current = judged.patches.get(v.patch) or session.patch_file(v).read_bytes()
            g = session.workspace.git
            fresh = export.with_new_diff(current, export.diff(g, r.parent, r.commit or r.parent), g)
            if fresh != tx.read(v.patch):
                tx.write(v.patch, fresh)
                regenerated.append(u.name)
                actions[u.name] = f"regenerated ({_why(r)})" + tail
                continue
        actions[u.name] = ("kept" if statuses.get(u.name) != UPSTREAM_PROVIDES else
                           "kept (upstream provides it; pass --yes to retire)") + tail
        if u.name in back.revived:
            actions[u.name] = f"brought back (applied upstream only in {back.revived[u.name]})"
    text = with_lock(text, to_ref, lock_commit)
    tx.write(MANIFEST_NAME, text.encode())
    tx.write("CHANGELOG.md", add_line(
        (tx.read("CHANGELOG.md") or b"").decode() or None, "Changed",
        _changelog_line(from_ref, to_ref, retire_at, regenerated,
                        back.revived, dropped_variants, back.restored)).encode())
    return tx, actions, regenerated


def unfinished(root) -> dict | None:
    """The record of an upgrade whose overlay was written but whose worktree was not."""
    path = root / UNFINISHED
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("to"), str) else None


def _finish_worktree(session: Session, record: dict, pre: target.Preflight):
    """Apply the upgraded overlay to the new ref's worktree, then drop the record."""
    root = session.manifest.root
    fresh = Session(load(root), session.cache, session.url, session.offline)
    final = fresh.build(Resolved(record["to"], record["base"], None))
    out = workflow.finish(fresh, final, pre, "upgrade",
                          {"to": record["to"], "from": record.get("from")})
    (root / UNFINISHED).unlink(missing_ok=True)
    errors = [f for f in out.findings if f.severity == "error"]
    return final, out, FINDINGS if errors or not final.ok else OK


def apply_new_pin(session: Session, record: dict, as_json: bool) -> int:
    """Finish an upgrade a killed run left with the overlay written, worktree not made."""
    to_ref = record["to"]
    dest = target.default_target(session.manifest.root, to_ref)
    pre = target.preflight(session.workspace, dest, target.branch_for(to_ref), force=False)
    final, out, code = _finish_worktree(session, record, pre)
    if as_json:
        report.emit_json({"from": record.get("from"), "to": to_ref, "base": record["base"],
                          "resumed": True, "changed_files": [], **out.to_json(),
                          "exit_code": code})
        return code
    for f in out.findings:
        click.echo(f.text())
    click.echo(f"finished the interrupted upgrade {record.get('from')} -> {to_ref}: the "
               f"overlay was already upgraded")
    click.echo(f"{dest}: branch {pre.branch} at {final.head[:12]}")
    return code


def _stop(session, build, pre, from_ref, to_ref, yes, base, as_json, retire) -> int:
    """A unit conflicts on REF: leave the resolution worktree; nothing else changes."""
    out = workflow.finish(session, build, pre, "upgrade",
                          {"to": to_ref, "from": from_ref, "yes": yes}, run_lint=False)
    if as_json:
        report.emit_json({"from": from_ref, "to": to_ref, "base": base.commit,
                          "units": [r.to_json() for r in build.results],
                          "retiring": list(retire), **out.to_json(), "exit_code": FINDINGS})
        return FINDINGS
    click.echo(report.table(report.UNIT_HEADERS, report.unit_rows(build.results), color_col=2))
    click.echo("")
    if retire:
        click.echo(f"(applied without {', '.join(retire)}, which upstream {to_ref} provides)")
    workflow.explain_conflict(out, to_ref)
    click.echo(f"Nothing in {MANIFEST_NAME}, overlay/ or patches/ changed; "
               f"`overlay refresh --continue` finishes the upgrade to {to_ref}.")
    return FINDINGS


def _accept(name: str, files: list[str], detail: str, to_ref: str, yes: bool) -> bool:
    if yes:
        return True
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        return False
    # on stderr, so that stdout is only the report (--json stays parseable)
    return click.confirm(
        f"{to_ref} has its own {', '.join(files)} ({detail}). Retire unit '{name}' and use "
        "upstream's?", default=False, err=True)


def _why(r) -> str:
    if r.status == APPLIED_MOVED:
        return f"followed a move: {r.detail}"
    if r.status == "applied-3way":
        return "needed a 3-way merge"
    if r.stale:
        return "applied at an offset"
    return "its base changed"


def _first_release(session, unit, from_ref, to_ref) -> str:
    """Where upstream first had a retired unit's change, from the trees of the
    releases after the old pin: for a files unit the first with its files, for
    an edit unit the first with every entry, for a patch the first it
    reverse-applies on; REF when that cannot be told."""
    m = session.manifest
    if unit.kind == "files":
        paths = m.unit_files(unit)
        holds = lambda g, c: releases.has_paths(g, c, paths)
    elif unit.kind == "edit":
        def holds(g, c):
            return edits.already_upstream(m, unit, lambda p: g.file_at(c, p))
    else:
        patch = session.patch_file(unit)

        def holds(g, c):
            with durable.scratch(session.cache.root, "first") as tmp:
                stage = Stage(g, tmp / "index", c)
                return stage.apply(patch, "--reverse", "--check").ok
    return releases.first_release(session, holds, from_ref, to_ref) or to_ref


def _drop_variants(m, u, to_ref: str, text: str, tx) -> tuple[str, str]:
    """Drop the variants of u no release from to_ref on chooses (their files too);
    the new manifest text and what happened, for the action column."""
    dropped, promoted = unreachable_variants(u, to_ref)
    if not dropped and promoted is None:
        return text, ""
    by_from = {c.variant: c for c in m.all_contents(u) if c.variant}
    for v in dropped:
        c = by_from[v.from_ref]
        if c.kind == "patch":
            tx.delete(c.patch)
        else:
            for rel in m.unit_files(c):
                tx.delete(f"{c.files_root}/{rel}")
    parts = []
    if dropped:
        parts.append("dropped variant" + ("s" if len(dropped) > 1 else "") + " from "
                     + ", ".join(v.from_ref for v in dropped))
    if promoted is not None:
        tx.delete(u.patch)
        parts.append(f"variant from {promoted.from_ref} is now its patch")
    text = with_variants_dropped(text, u.name, [v.from_ref for v in dropped],
                                 promoted.from_ref if promoted else None)
    return text, "; ".join(parts)


def _changelog_line(from_ref, to_ref, retired: dict, regenerated, revived: dict,
                    dropped=(), restored: dict | None = None) -> str:
    back = version_key(to_ref) < version_key(from_ref) if from_ref else False
    line = (f"Moved the SGLang pin back from {from_ref} to {to_ref}" if back
            else f"Upgraded SGLang from {from_ref} to {to_ref}")
    parts = []
    if revived:
        parts.append("brought back " + ", ".join(
            f"`{n}` (applied upstream only in {at})" for n, at in revived.items()))
    if restored:
        parts.append("brought back from git history " + ", ".join(
            f"`{n}`'s {what}" for n, what in restored.items()))
    by_release: dict[str, list[str]] = {}
    for name, at in retired.items():
        by_release.setdefault(at, []).append(name)
    for at, names in by_release.items():
        parts.append("retired " + ", ".join(f"`{n}`" for n in names) +
                     f" (applied upstream in {at})")
    if regenerated:
        parts.append("regenerated " + ", ".join(f"`{n}`" for n in regenerated))
    if dropped:
        parts.append("; ".join(dropped))
    return line + (": " + "; ".join(parts) if parts else "") + "."
