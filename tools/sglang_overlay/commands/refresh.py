"""`overlay refresh`: write work done in an applied worktree back into the overlay.

Plain ``refresh`` reads the commits of the worktree on top of its upstream
base, one per unit (each carries an ``Overlay-Unit:`` trailer):
  * a files unit's commit writes its files back to overlay/;
  * a patch unit's commit becomes the patch's new diff (its header is kept);
  * an edit unit changed by hand is reported: edits are declarations;
  * a commit without the trailer becomes a new unit (files when it only
    adds files, patch otherwise).
To change a unit, amend its commit (``git commit --fixup`` and ``git rebase
-i --autosquash``); uncommitted changes are refused.

``--continue`` finishes an apply or upgrade that stopped on a conflict, from
the files resolved in its resolution worktree; ``--abort`` drops it.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from .. import durable, export, journal, paths, report, state, target, upgrading, workflow
from ..durable import crash_point
from ..errors import FINDINGS, OK, BadInput
from ..gitutil import Git
from ..manifest import MANIFEST_NAME, with_unit, with_unit_keys
from ..units import edit as edits
from ..upstream import Resolved
from . import open_overlay

MARKER = re.compile(r"^(<<<<<<<|>>>>>>>)( |$)", re.M)


def run(opts, worktree, continue_, abort, as_json) -> int:
    if continue_ and abort:
        raise BadInput("--continue and --abort exclude each other", "pass one of them")
    if continue_ or abort:
        manifest, session = open_overlay(opts, writes="refresh")
        pending = workflow.load_pending(session)
        if not pending:
            raise BadInput("there is no apply or upgrade stopped on a conflict",
                           "run `overlay apply` or `overlay upgrade` first")
        manifest, session = open_overlay(opts, pending["upstream"], writes="refresh")
        # resolved patches are read only from where --continue puts them
        resolved = manifest.root / state.STATE_DIR / workflow.RESOLVED_DIR
        session.patch_overrides = {k: paths.confine(Path(v), resolved, "a resolved patch")
                                   for k, v in pending.get("overrides", {}).items()}
        if abort:
            saved = workflow.drop_resolution(session, pending)
            if as_json:
                report.emit_json({"aborted": pending["operation"], "backup": saved}, OK)
            else:
                click.echo(f"dropped the unfinished {pending['operation']} "
                           f"(resolution worktree {pending['resolution']})")
                if saved:
                    click.echo(f"your edits there were saved as {saved}")
            return OK
        return _continue(session, pending, as_json)
    manifest, session = open_overlay(opts, writes="refresh")
    wt = opts.path(worktree) if worktree else target.default_target(manifest.root, manifest.ref)
    url = session.cache.upstream_of(wt, manifest.root)
    if url and url != session.url:  # it was applied with --upstream
        manifest, session = open_overlay(opts, url, writes="refresh")
    return _refresh(session, wt, as_json)


# --- --continue -----------------------------------------------------------------


def _continue(session, pending: dict, as_json: bool) -> int:
    m = session.manifest
    unit = session.variant_for(m.unit(pending["unit"]),
                               Resolved(pending["ref"], pending["base"], None))
    res = Path(pending["resolution"])
    if not res.is_dir() or not session.workspace.owns(res):
        raise BadInput(f"the resolution worktree {res} is gone",
                       "drop the unfinished operation with `overlay refresh --abort`")
    if unit.kind != "patch":
        raise BadInput(
            f"unit '{unit.name}' is a {unit.kind} unit: its conflict is a missing anchor, "
            "not a text conflict to resolve in a worktree",
            "update the unit in overlay.toml (or turn the change into a patch unit), then "
            "`overlay refresh --abort` and run the command again")
    g = Git(res)
    # the resolution: everything on top of where the worktree started,
    # whether the user committed it or not
    head = pending.get("resolution_base") or g.head()
    tree = target.content_tree(g.cwd)
    for path in g.changed_paths(head, tree):
        p = res / path
        if p.is_file():
            m_ = MARKER.search(p.read_text(errors="replace"))
            if m_:
                line = p.read_text(errors="replace")[: m_.start()].count("\n") + 1
                raise BadInput(f"{p}:{line} still has a conflict marker",
                               "finish resolving the file, then run "
                               "`overlay refresh --continue` again")
    new_diff = export.diff(session.workspace.git, head, tree)
    if not new_diff.strip():
        raise BadInput(f"the resolution leaves nothing of unit '{unit.name}'",
                       "if upstream already does what it did, `overlay refresh --abort` and "
                       f"set applied-upstream = \"{pending['ref']}\" on the unit")
    resolved = export.with_new_diff(session.patch_file(unit).read_bytes(), new_diff, g)
    rdir = state.state_dir(m.root) / workflow.RESOLVED_DIR
    rdir.mkdir(parents=True, exist_ok=True)
    path = rdir / f"{unit.name}.patch"
    durable.write_bytes(path, resolved)
    session.patch_overrides[unit.name] = path
    crash_point("continue-resolved")

    if pending["operation"] == "upgrade":
        return upgrading.upgrade(session, pending["to"], bool(pending.get("yes")), as_json)

    # an apply: the resolution becomes the unit's patch now, then apply again
    tx = journal.Transaction(m.root)
    at = Resolved(pending["ref"], pending["base"], None)
    for name, p in session.patch_overrides.items():
        tx.write(session.variant_for(m.unit(name), at).patch, Path(p).read_bytes())
    written = tx.commit()
    crash_point("continue-written")
    session.patch_overrides = {}
    dest = Path(pending["target"])
    pre = target.preflight(session.workspace, dest, pending["branch"], force=False)
    build = session.build(Resolved(pending["ref"], pending["base"], None))
    out = workflow.finish(session, build, pre, "apply", {})
    code = FINDINGS if not build.ok or any(f.severity == "error" for f in out.findings) else OK
    if as_json:
        report.emit_json({"continued": "apply", "written": written,
                          "units": [r.to_json() for r in build.results],
                          **out.to_json(), "exit_code": code})
        return code
    click.echo(report.table(report.UNIT_HEADERS, report.unit_rows(build.results), color_col=2))
    click.echo("")
    click.echo(f"wrote {', '.join(written) or 'nothing'}")
    if build.ok:
        click.echo(f"{dest}: branch {pre.branch} at {build.head[:12]}")
    else:
        workflow.explain_conflict(out, pending["ref"])
    return code


# --- plain refresh ------------------------------------------------------------


def _trailer(g: Git, commit: str) -> str | None:
    return g.first_trailer(commit, "Overlay-Unit")


def _message(g: Git, commit: str) -> str:
    body = g.commit_message(commit)
    lines = [l for l in body.splitlines() if not re.match(r"^Overlay-[A-Za-z]+: ", l)]
    return "\n".join(lines).strip()


def _refresh(session, wt: Path, as_json: bool) -> int:
    m = session.manifest
    root = m.root
    if not wt.is_dir() or not session.workspace.owns(wt):
        raise BadInput(f"{wt} is not a worktree this overlay applied",
                       "pass --worktree with the worktree `overlay apply` made")
    g = Git(wt)
    branch = g.current_branch()
    base = session.workspace.git.rev(target.base_ref(branch)) if branch else None
    if not base:
        raise BadInput(f"{wt} is not on a branch `overlay apply` made",
                       f"check out its overlay/<ref> branch in {wt}")
    if target.is_dirty(wt):
        raise BadInput(
            f"{wt} has uncommitted changes",
            "commit them: a new commit becomes a new unit; to change a unit, amend its "
            f"commit (git commit --fixup <commit> && git rebase -i --autosquash {base[:12]})")
    commits = g.first_parent_commits(base)
    for c in commits:
        subject = g.commit_subject(c)
        if subject.startswith(("fixup! ", "squash! ", "amend! ")):
            raise BadInput(f"{wt}: commit {c[:12]} '{subject}' is not squashed yet",
                           f"run `git rebase -i --autosquash {base[:12]}` in {wt} first")
    if commits and _already_written_back(session, g, branch, base):
        # an earlier refresh wrote these commits back and was stopped before it
        # rebuilt the branch: only the branch is left to do (nothing is added twice)
        _reapply(session, wt, branch, base)
        if as_json:
            report.emit_json({"worktree": str(wt), "base": base, "written": [], "units": [],
                              "findings": [], "rebuilt": True, "exit_code": OK})
        else:
            click.echo("the overlay already has every commit of the worktree (an earlier "
                       "refresh was interrupted); rebuilt the branch from it\n"
                       "wrote nothing")
        return OK
    tx = journal.Transaction(root)
    text = (root / MANIFEST_NAME).read_text()
    names = {u.name for u in m.units}
    rows, findings = [], []
    for c in commits:
        parent = g.parent_of(c)
        name = _trailer(g, c)
        unit = next((u for u in m.units if u.name == name and not u.retired), None)
        if unit is not None:  # the variant the worktree was built with
            unit = session.variant_for(unit, Resolved(base, base, None))
        if unit is None:
            text, row = _new_unit(g, tx, text, names, parent, c)
        elif unit.kind == "files":
            text, row = _files_back(g, tx, text, m, unit, parent, c)
        elif unit.kind == "patch":
            tx.write(unit.patch, export.with_new_diff((root / unit.patch).read_bytes(),
                                                      export.diff(g, parent, c), g))
            row = [unit.name, "patch", "", [unit.patch]]
        else:
            problem = _edit_changed_by_hand(g, m, unit, parent, c)
            if problem:
                findings.append(f"{unit.name}: {problem}")
            row = [unit.name, "edit", "by hand" if problem else "unchanged", []]
        rows.append(row)
    tx.write(MANIFEST_NAME, text.encode())
    written = tx.commit()
    crash_point("refresh-written")
    if written and not findings:
        _reapply(session, wt, branch, base)
    for row in rows:
        if not row[2]:  # an existing unit: did writing it back change anything?
            row[2] = "updated" if set(row[3]) & set(written) else "unchanged"
    code = FINDINGS if findings else OK
    if as_json:
        report.emit_json({"worktree": str(wt), "base": base, "written": written,
                          "units": [dict(zip(("name", "kind", "action", "files"), r))
                                    for r in rows],
                          "findings": findings, "exit_code": code})
        return code
    click.echo(report.table(("UNIT", "KIND", "ACTION", "FILES"),
                            [r[:3] + [", ".join(r[3])] for r in rows]))
    for f in findings:
        click.echo(f)
    click.echo(f"\nwrote {', '.join(written) or 'nothing (the overlay already matches)'}")
    return code


def _already_written_back(session, g: Git, branch: str, base: str) -> bool:
    """The worktree has commits apply did not make, yet the overlay as it is
    builds exactly its tree: they are written back already."""
    head = g.head()
    if head == session.workspace.git.rev(target.built_ref(branch)):
        return False
    build = session.build(Resolved(base, base, None))
    return build.ok and build.tree == g.tree_of("HEAD")


def _reapply(session, wt: Path, branch: str, base: str) -> None:
    """Rebuild the worktree's branch from the refreshed overlay.

    Everything in the worktree was written back, so the tree stays the same
    and no file changes; the commits become the overlay's own again (with
    their Overlay-Unit trailers), and a second refresh finds nothing new.
    """
    from ..manifest import load
    from ..engine import Session

    fresh = Session(load(session.manifest.root), session.cache, session.url,
                    session.offline)
    ref = session.workspace.git.commit_of(base)
    build = fresh.build(Resolved(ref, base, None))
    if build.ok:
        # the worktree's commits were just written back; they are replaced by
        # the overlay's own (a backup ref keeps them, as with --force)
        pre = target.preflight(fresh.workspace, wt, branch, force=True)
        target.promote(fresh.workspace, pre, build.head, build.tree, build.base)


def _files_back(g, tx, text, m, unit, parent, c):
    listed = set(m.unit_files(unit))
    files = list(unit.files)
    touched = []
    for ch in export.changes(g, parent, c):
        dest = f"{unit.files_root}/{ch.path}"
        if ch.status == "D":
            if ch.path in unit.files:
                files.remove(ch.path)
            tx.delete(dest)
        else:
            tx.write(dest, g.object_bytes(ch.new_blob), ch.permissions)
            if ch.path not in listed:
                files.append(ch.path)
        touched.append(dest)
    if files != list(unit.files) and not unit.variant:
        text = with_unit_keys(text, unit.name, files=files)
    return text, [unit.name, "files", "", touched]


def _new_unit(g, tx, text, names, parent, c):
    message = _message(g, c)
    subject = message.splitlines()[0] if message else c[:12]
    name = export.slug(subject, names)
    names.add(name)
    chs = export.changes(g, parent, c)
    if chs and all(ch.status == "A" and ch.new_mode in ("100644", "100755") for ch in chs):
        for ch in chs:
            tx.write(f"overlay/{ch.path}", g.object_bytes(ch.new_blob), ch.permissions)
        fields = {"name": name, "kind": "files", "description": message or subject,
                  "files": [ch.path for ch in chs], "forwarded": "no"}
        row = [name, "files", "new", [f"overlay/{ch.path}" for ch in chs]]
    else:
        patch = f"patches/{name}.patch"
        tx.write(patch, export.commit_header(g, c) + export.diff(g, parent, c))
        fields = {"name": name, "kind": "patch", "description": message or subject,
                  "patch": patch, "forwarded": "no"}
        row = [name, "patch", "new", [patch]]
    return with_unit(text, fields), row


def _edit_changed_by_hand(g, m, unit, parent, c) -> str | None:
    """Why commit c's change to an edit unit's files is not the edit itself, or None."""
    try:
        steps = dict(edits.plan_on(m, unit, lambda path: g.file_at(parent, path)))
    except edits.MissingAnchor:
        steps = {}
    for ch in export.changes(g, parent, c):
        before = g.object_bytes(ch.old_blob).decode() if ch.status != "A" else ""
        after = g.object_bytes(ch.new_blob).decode() if ch.status != "D" else ""
        try:
            expected = steps[ch.path](before).text if ch.path in steps else None
        except (edits.MissingAnchor, SyntaxError):
            expected = None
        if after != expected:
            return (f"{ch.path} was changed by hand; an edit unit is a declaration, so "
                    "make the change in overlay.toml or in a new commit (a new patch unit)")
    return None
