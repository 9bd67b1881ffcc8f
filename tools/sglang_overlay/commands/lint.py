"""`overlay lint`: static checks of the patched tree, before any GPU time."""

from __future__ import annotations

import time

import click

from .. import lint as lint_mod
from .. import report
from ..errors import FINDINGS, OK
from . import open_overlay


def run(opts, sglang_ref, upstream, offline, as_json) -> int:
    manifest, session = open_overlay(opts, upstream, offline)
    ref = manifest.ref_or(sglang_ref)
    base, _lock = session.resolve_pinned(ref)
    build = session.build(base)
    started = time.perf_counter()
    findings = lint_mod.lint_build(session, build)
    seconds = time.perf_counter() - started
    conflicts = build.conflicts
    errors = [f for f in findings if f.severity == "error"]
    code = FINDINGS if (errors or conflicts) else OK
    if as_json:
        report.emit_json({
            "ref": ref,
            "base": base.commit,
            "findings": [f.to_json() for f in findings],
            "conflicts": [r.to_json() for r in conflicts],
            "seconds": round(seconds, 3),
            "exit_code": code,
        })
        return code
    for r in conflicts:
        click.echo(f"{r.unit.name}: conflict on {ref}, so lint ran without it "
                   f"(run `overlay apply --sglang-ref {ref}` to resolve)")
    for f in findings:
        click.echo(f.text())
    n = len(errors)
    click.echo(f"{ref} ({base.commit[:12]}): {n} error{'s' if n != 1 else ''} "
               f"in {seconds:.2f} s" if n else
               f"{ref} ({base.commit[:12]}): lint clean in {seconds:.2f} s")
    return code
