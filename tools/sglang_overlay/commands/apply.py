"""`overlay apply`: the overlay on an upstream ref, in a worktree, atomically."""

from __future__ import annotations

from pathlib import Path

import click

from .. import lint as lint_mod
from .. import report, state, target
from ..errors import BadInput, FINDINGS, OK
from ..units import CONFLICT
from . import open_overlay


def run(opts, sglang_ref, upstream, worktree, branch, force, no_lint, update_lock,
        offline, as_json) -> int:
    manifest, session = open_overlay(opts, upstream, offline)
    ref = sglang_ref or manifest.ref
    if not ref:
        raise BadInput(f"{manifest.path}: upstream.ref: missing and no --sglang-ref given",
                       'pin a ref with ref = "v0.5.1" under [upstream], or pass --sglang-ref')
    dest = (Path.cwd() / worktree) if worktree else target.default_target(manifest.root, ref)
    dest = Path(dest).absolute()
    pre = target.preflight(session.workspace, dest, branch or target.branch_for(ref), force)
    target.prepare_resolution(session.workspace, dest, force)

    base, lock = session.resolve_pinned(ref, update_lock)
    if lock.status == "mismatch":
        click.secho(lock.message, err=True, fg="red", bold=True)
    elif lock.status == "locked":
        report.note(lock.message)

    build = session.build(base)
    findings = []
    result = {
        "ref": ref,
        "upstream": session.url,
        "base": base.commit,
        "lock": {"status": lock.status, "locked": lock.locked, "remote": lock.remote},
        "units": [r.to_json() for r in build.results],
    }
    if build.ok:
        if not no_lint:
            findings = lint_mod.lint_build(session, build)
        changed, saved = target.promote(session.workspace, pre, build.head, build.tree)
        result.update(worktree=str(dest), branch=pre.branch, commit=build.head,
                      tree=build.tree, changed=changed, backup=saved)
        if _state_is_for(manifest.root, dest):
            state.clear(manifest.root)
    else:
        first = build.conflicts[0]
        patch = manifest.root / first.unit.patch if first.unit.kind == "patch" else None
        where = target.leave_resolution(session.workspace, dest, first.parent, patch)
        state.save(manifest.root, {
            "operation": "apply",
            "ref": ref,
            "upstream": session.url,
            "base": base.commit,
            "unit": first.unit.name,
            "resolution": str(where),
            "target": str(dest),
            "branch": pre.branch,
        })
        result.update(resolution=str(where), conflict=first.unit.name)
    result["lint"] = [f.to_json() for f in findings]
    errors = [f for f in findings if f.severity == "error"]
    code = FINDINGS if (not build.ok or errors) else OK
    result["exit_code"] = code

    if as_json:
        report.emit_json(result)
        return code
    click.echo(report.table(report.UNIT_HEADERS, report.unit_rows(build.results), color_col=2))
    if findings:
        click.echo("")
        for f in findings:
            click.echo(f.text())
    click.echo("")
    if build.ok:
        what = "updated" if result["changed"] else "unchanged"
        click.echo(f"{dest}: {what}, branch {pre.branch} at {build.head[:12]} "
                   f"(tree {build.tree[:12]}) on {ref} ({base.commit[:12]})")
        if result.get("backup"):
            click.echo(f"your uncommitted changes were saved as {result['backup']}")
    else:
        first = build.conflicts[0]
        click.echo(f"conflict in unit '{first.unit.name}': {dest} was not touched.")
        click.echo(f"Resolve it in {result['resolution']} (`git status` there lists the "
                   "conflicted files), then run `overlay refresh --continue`; "
                   "or give up with `overlay refresh --abort`.")
    return code


def _state_is_for(root: Path, dest: Path) -> bool:
    s = state.load(root)
    return bool(s and s.get("target") == str(dest) and s.get("operation") == "apply")


__all__ = ["run", "CONFLICT"]
