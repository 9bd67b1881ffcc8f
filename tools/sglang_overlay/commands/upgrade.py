"""`overlay upgrade --to REF`: move the pin to a new upstream ref.

1. Build the overlay on REF. A conflict stops here: a resolution worktree
   is left and `overlay refresh --continue` finishes the upgrade later.
2. Retire units upstream caught up with: `already-upstream` ones always,
   `upstream-provides` ones when the user accepts (asked on a terminal;
   --yes accepts all). The manifest records applied-upstream = REF.
3. Regenerate every patch whose export against REF differs from the stored
   one (it needed a 3-way merge or an offset, or its base blobs moved), so it
   applies cleanly again; headers are kept.
4. Move the pin and the lock, add a CHANGELOG.md line.

Steps 2-4 are written in one transaction (journal.py) at the very end, so
an upgrade interrupted before then leaves the overlay byte-identical.
Finally the new overlay is applied to REF's worktree.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import click

from .. import export, journal, report, state, target, workflow
from ..changelog import add_line
from ..engine import Session
from ..errors import FINDINGS, OK, BadInput
from ..manifest import (
    MANIFEST_NAME,
    load,
    unreachable_variants,
    with_lock,
    with_unit_keys,
    with_variants_dropped,
)
from ..units import ALREADY_UPSTREAM, APPLIED_MOVED, UPSTREAM_PROVIDES
from . import open_overlay


def run(opts, to_ref, yes, upstream, offline, as_json) -> int:
    manifest, session = open_overlay(opts, upstream, offline)
    pending = state.load(manifest.root)
    if pending:
        raise BadInput(
            f"an unfinished {pending['operation']} stopped on a conflict in unit "
            f"'{pending['unit']}' (resolution worktree {pending['resolution']})",
            "finish it with `overlay refresh --continue` or drop it with "
            "`overlay refresh --abort`",
        )
    if to_ref == manifest.ref:
        message = f"already pinned at {to_ref}; nothing to do"
        if as_json:
            report.emit_json({"from": to_ref, "to": to_ref, "changed_files": [],
                              "message": message, "exit_code": OK})
        else:
            click.echo(message)
        return OK
    return upgrade(session, to_ref, yes, as_json)


def upgrade(session: Session, to_ref: str, yes: bool, as_json: bool) -> int:
    m = session.manifest
    root = m.root
    from_ref = m.ref
    dest = target.default_target(root, to_ref)
    pre = target.preflight(session.workspace, dest, target.branch_for(to_ref), force=False)
    base = session.resolve(to_ref)
    # 1. what upstream caught up with, judged with every unit applied
    first = session.build(base)
    retire: dict[str, str] = {}
    for r in first.results:
        if r.unit.retired:
            continue
        if r.status == ALREADY_UPSTREAM or (
                r.status == UPSTREAM_PROVIDES and _accept(r.unit.name, r.files, r.detail,
                                                          to_ref, yes)):
            retire[r.unit.name] = r.status
    # 2. the overlay as it will be: the units that stay, on REF. Patches are
    # regenerated against exactly this, and a conflict here stops the upgrade.
    staying = [replace(u, applied_upstream=to_ref) if u.name in retire else u
               for u in m.units]
    build = session.build(base, units=staying) if retire else first
    if not build.ok:
        return _stop(session, build, pre, from_ref, to_ref, yes, base, as_json, retire)

    tx = journal.Transaction(root)
    text = (root / MANIFEST_NAME).read_text()
    actions: dict[str, str] = {}
    regenerated = []
    dropped_variants: list[str] = []
    statuses = {r.unit.name: r.status for r in first.results}
    for r in build.results:
        u = next(x for x in m.units if x.name == r.unit.name)
        if u.retired:
            actions[u.name] = "retired earlier"
            continue
        if u.name in retire:
            text = with_unit_keys(text, u.name, applied_upstream=to_ref)
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
        if u.kind == "patch":
            v = r.unit  # the variant the build used on REF
            current = session.patch_file(v).read_bytes()
            g = session.workspace.git
            fresh = export.with_new_diff(current, export.diff(g, r.parent, r.commit or r.parent), g)
            if fresh != (root / v.patch).read_bytes():
                tx.write(v.patch, fresh)
                regenerated.append(u.name)
                actions[u.name] = f"regenerated ({_why(r)})" + (f"; {note}" if note else "")
                continue
        actions[u.name] = ("kept" if statuses.get(u.name) != UPSTREAM_PROVIDES else
                           "kept (upstream provides it; pass --yes to retire)") + \
            (f"; {note}" if note else "")
    retired = list(retire)
    lock_commit = base.commit if session.is_manifest_upstream else None
    text = with_lock(text, to_ref, lock_commit) if lock_commit else _pin_only(text, to_ref)
    tx.write(MANIFEST_NAME, text.encode())
    tx.write("CHANGELOG.md", add_line(
        (tx.read("CHANGELOG.md") or b"").decode() or None, "Changed",
        _changelog_line(from_ref, to_ref, retired, regenerated, dropped_variants)).encode())
    changed = tx.commit()

    # the overlay is upgraded; now show it applied on REF
    fresh_manifest = load(root)
    fresh = Session(fresh_manifest, session.cache, session.url, session.offline)
    final = fresh.build(base)
    out = workflow.finish(fresh, final, pre, "upgrade", {"to": to_ref, "from": from_ref})
    errors = [f for f in out.findings if f.severity == "error"]
    code = FINDINGS if errors or not final.ok else OK
    result = {
        "from": from_ref, "to": to_ref, "base": base.commit, "lock": lock_commit,
        "units": [{**r.to_json(), "status": statuses[r.unit.name],
                   "action": actions[r.unit.name]} for r in first.results],
        "retired": retired, "regenerated": regenerated, "changed_files": changed,
        **out.to_json(), "exit_code": code,
    }
    if as_json:
        report.emit_json(result)
        return code
    rows = [[r.unit.name, r.unit.kind, r.status, actions[r.unit.name]] for r in first.results]
    click.echo(report.table(("UNIT", "KIND", "ON " + to_ref, "ACTION"), rows, color_col=2))
    for f in out.findings:
        click.echo(f.text())
    click.echo("")
    click.echo(f"upgraded {from_ref} -> {to_ref} ({base.commit[:12]}); "
               f"changed: {', '.join(changed) or 'nothing'}")
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
    return click.confirm(
        f"{to_ref} has its own {', '.join(files)} ({detail}). Retire unit '{name}' and use "
        "upstream's?", default=False)


def _why(r) -> str:
    if r.status == APPLIED_MOVED:
        return f"followed a move: {r.detail}"
    if r.status == "applied-3way":
        return "needed a 3-way merge"
    if r.stale:
        return "applied at an offset"
    return "its base changed"


def _pin_only(text: str, ref: str) -> str:
    """Move the pin without a lock (the upstream was overridden with --upstream)."""
    import tomlkit

    doc = tomlkit.parse(text)
    doc["upstream"]["ref"] = ref
    doc["upstream"].pop("commit", None)
    return tomlkit.dumps(doc)


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


def _changelog_line(from_ref, to_ref, retired, regenerated, dropped=()) -> str:
    line = f"Upgraded SGLang from {from_ref} to {to_ref}"
    parts = []
    if retired:
        parts.append("retired " + ", ".join(f"`{n}`" for n in retired) +
                     f" (applied upstream in {to_ref})")
    if regenerated:
        parts.append("regenerated " + ", ".join(f"`{n}`" for n in regenerated))
    if dropped:
        parts.append("; ".join(dropped))
    return line + (": " + "; ".join(parts) if parts else "") + "."
