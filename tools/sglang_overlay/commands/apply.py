"""`overlay apply`: the overlay on an upstream ref, in a worktree, atomically."""

from __future__ import annotations


import click

from .. import output, report, target, workflow
from ..errors import FINDINGS, OK
from . import open_overlay


def run(opts, sglang_ref, upstream, worktree, branch, force, no_lint, update_lock,
        offline, as_json) -> int:
    manifest, session = open_overlay(opts, upstream, offline, writes="apply")
    ref = manifest.ref_or(sglang_ref)
    pending = workflow.load_pending(session)
    workflow.refuse_unfinished(pending, force)
    dest = opts.path(worktree) if worktree else target.default_target(manifest.root, ref)
    pre = target.preflight(session.workspace, dest, branch or target.branch_for(ref), force)
    target.prepare_resolution(session.workspace, dest, force, recorded=pending is not None)
    if pending and force:
        workflow.drop_resolution(session, pending)

    base, lock = session.resolve_pinned(ref, update_lock)
    if lock.status in ("mismatch", "different-history"):
        output.warn(lock.message, loud=True)
    elif lock.status == "locked":
        output.info(lock.message)

    build = session.build(base)
    out = workflow.finish(session, build, pre, "apply", {}, run_lint=not no_lint)
    errors = [f for f in out.findings if f.severity == "error"]
    code = FINDINGS if (not build.ok or errors) else OK

    if as_json:
        report.emit_json({
            "ref": ref,
            "upstream": session.url,
            "base": base.commit,
            "upstream_source": session.upstream_choice.source,
            "lock": {"status": lock.status, "locked": lock.locked, "remote": lock.remote,
                     "message": lock.message or None},
            "units": [r.to_json() for r in build.results],
            **out.to_json(),
            "exit_code": code,
        })
        return code
    click.echo(report.table(report.UNIT_HEADERS, report.unit_rows(build.results), color_col=2))
    if out.findings:
        click.echo("")
        for f in out.findings:
            click.echo(f.text())
    click.echo("")
    if build.ok:
        what = {"recommitted": "same tree, new commits"}.get(out.what, out.what)
        click.echo(f"{dest}: {what}, branch {pre.branch} at {build.head[:12]} "
                   f"(tree {build.tree[:12]}) on {ref} ({base.commit[:12]})")
        if out.backup:
            click.echo(f"your uncommitted changes were saved as {out.backup}")
    else:
        workflow.explain_conflict(out, ref)
    return code
