"""`overlay check`: a dry run of apply + lint on several refs, as a matrix.

Rows are units, columns are refs; a cell is applied, applied-3way,
upstream-provides, already-upstream, conflict or lint-error. Every ref is
fetched in one fetch, then built and linted in parallel worker processes on
temporary indexes in the cache: nothing the user owns is touched (not even
the lock in overlay.toml).
"""

from __future__ import annotations

import fnmatch
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import click

from .. import lint as lint_mod
from .. import releases, report
from ..engine import Session
from ..errors import FINDINGS, OK, BadInput
from ..manifest import load
from ..units import APPLIED_MOVED, CONFLICT, LINT_ERROR, RETIRED, UPSTREAM_PROVIDES
from ..upstream import Cache, Resolved
from ..versions import version_key
from . import open_overlay


def _check_one(root: str, cache_dir: str | None, url: str, offline: bool,
               ref: str, commit: str) -> dict:
    """Build and lint one ref (runs in a worker process)."""
    started = time.perf_counter()
    manifest = load(Path(root))
    session = Session(manifest, Cache(Path(cache_dir) if cache_dir else None), url, offline)
    build = session.build(Resolved(ref, commit, None), commits=False)
    findings = lint_mod.lint_build(session, build)
    cells = {}
    for r in build.results:
        cell = {"status": r.status, "files": r.files, "detail": r.detail, "hunks": r.hunks,
                # what the build said, before lint's verdict
                "applied": r.status, "applied_detail": r.detail, "variant": r.unit.variant}
        mine = [f for f in findings if f.unit == r.unit.name and f.severity == "error"]
        if mine and r.status not in (CONFLICT, RETIRED):
            cell.update(status=LINT_ERROR, detail="; ".join(f.text() for f in mine))
        cells[r.unit.name] = cell
    return {
        "ref": ref,
        "commit": commit,
        "cells": cells,
        "lint": [f.to_json() for f in findings],
        "seconds": round(time.perf_counter() - started, 3),
    }


def _refs(session: Session, explicit: tuple[str, ...], tags: str | None) -> list[str]:
    refs = list(explicit)
    if tags:
        matching = [t for t in session.mirror.list_tags() if fnmatch.fnmatchcase(t, tags)]
        if not matching:
            raise BadInput(f"no upstream tag matches '{tags}'",
                           "check the pattern, e.g. --tags 'v0.5.*'")
        refs += sorted(matching, key=version_key)
    if not refs:
        refs = [session.manifest.ref] if session.manifest.ref else []
        stable = [t for t in session.mirror.list_tags()
                  if fnmatch.fnmatchcase(t, "v[0-9]*") and "rc" not in t]
        if stable:
            newest = max(stable, key=version_key)
            if newest not in refs:
                refs.append(newest)
    if not refs:
        raise BadInput("no ref to check", "pass --sglang-ref REF or --tags GLOB")
    return list(dict.fromkeys(refs))


def run(opts, sglang_refs, tags, upstream, offline, markdown, jobs, as_json) -> int:
    manifest, session = open_overlay(opts, upstream, offline)
    started = time.perf_counter()
    refs = _refs(session, sglang_refs, tags)
    resolved = session.mirror.resolve_many(refs, offline=offline)
    lock_notes = []
    for i, r in enumerate(resolved):
        # the pinned ref is checked on its locked commit, as apply builds it
        if not manifest.commit:
            break  # nothing locked (check never writes the lock)
        resolved[i], lock = session.honour_lock(r)
        if lock.status in ("mismatch", "different-history"):
            lock_notes.append(lock.message)
    session.workspace.ensure()
    session.pin_commit()  # 3-way bases and "was it new at the pin" need it
    jobs = jobs or os.cpu_count() or 1
    args = [(str(manifest.root), str(opts.cache_dir) if opts.cache_dir else None,
             session.url, offline, r.ref, r.commit) for r in resolved]
    if jobs > 1 and len(args) > 1:
        with ProcessPoolExecutor(max_workers=min(jobs, len(args))) as pool:
            columns = list(pool.map(_check_one, *zip(*args)))
    else:
        columns = [_check_one(*a) for a in args]
    seconds = time.perf_counter() - started

    notes = lock_notes + _notes(session, manifest, columns)
    bad = any(c["status"] in (CONFLICT, LINT_ERROR)
              for col in columns for c in col["cells"].values())
    code = FINDINGS if bad else OK
    headers = ["UNIT", *[c["ref"] for c in columns]]
    rows = [[u.name, *[_cell_text(col["cells"][u.name]) for col in columns]]
            for u in manifest.units]
    if markdown:
        _write_markdown(opts.path(markdown), manifest, headers, rows, notes, columns)
    if as_json:
        report.emit_json({
            "refs": [{"ref": c["ref"], "commit": c["commit"], "seconds": c["seconds"]}
                     for c in columns],
            "units": [{"name": u.name, "kind": u.kind,
                       "cells": {col["ref"]: col["cells"][u.name] for col in columns}}
                      for u in manifest.units],
            "lint": {col["ref"]: col["lint"] for col in columns},
            "notes": notes,
            "seconds": round(seconds, 3),
            "exit_code": code,
        })
        return code
    click.echo(report.table(headers, rows, color_col=None))
    if notes:
        click.echo("")
        for n in notes:
            click.echo(n)
    per_ref = ", ".join(f"{c['ref']} {c['seconds']:.2f}s" for c in columns)
    click.echo(f"\nchecked {report.plural(len(columns), 'ref')} in {seconds:.2f} s ({per_ref})")
    return code


def _provides_from(session, manifest, columns, i: int, files: list[str]) -> str:
    """The first release whose tree has files, between the last column before
    i where upstream did not provide them (or the pin) and column i."""
    ref = columns[i]["ref"]
    before = [c["ref"] for c in columns[:i] if releases.is_release(c["ref"])
              and releases.is_release(ref) and version_key(c["ref"]) < version_key(ref)]
    if manifest.ref and releases.is_release(manifest.ref) and releases.is_release(ref) \
            and version_key(manifest.ref) < version_key(ref):
        before.append(manifest.ref)
    after = max(before, key=version_key) if before else None
    holds = lambda g, c: releases.has_paths(g, c, files)
    return releases.first_release(session, holds, after, ref) or ref


def _cell_text(cell: dict) -> str:
    """The status, and the variant that applied when it is not the unit's own content."""
    return cell["status"] + (f" (variant {cell['variant']})" if cell.get("variant") else "")


def _variant_notes(u, columns: list[dict]) -> list[str]:
    """Which of the unit's contents applied on which refs, when it has variants."""
    if not u.variants:
        return []
    used: dict[str, list[str]] = {}
    for col in columns:
        cell = col["cells"][u.name]
        if cell["status"] != RETIRED:
            used.setdefault(cell.get("variant") or "", []).append(col["ref"])
    parts = [(f"variant from {v}" if v else "its own patch" if u.kind == "patch"
              else "its own files") + " on " + ", ".join(refs) for v, refs in used.items()]
    return [f"{u.name}: " + "; ".join(parts)] if parts else []


def _notes(session, manifest, columns: list[dict]) -> list[str]:
    """Which variants applied, where upstream caught up, and what conflicts."""
    notes = []
    for u in manifest.units:
        notes += _variant_notes(u, columns)
        for i, col in enumerate(columns):
            cell = col["cells"][u.name]
            # the build's status: a lint error in the cell must not hide it
            if cell.get("applied", cell["status"]) == UPSTREAM_PROVIDES:
                first = _provides_from(session, manifest, columns, i, cell["files"])
                notes.append(f"{u.name}: upstream provides {', '.join(cell['files'])} "
                             f"from {first} on ({cell.get('applied_detail', cell['detail'])})")
                break
        first_move = next((col for col in columns
                           if col["cells"][u.name]["status"] == APPLIED_MOVED), None)
        if first_move:
            notes.append(f"{u.name}: follows a move from {first_move['ref']} on: "
                         f"{first_move['cells'][u.name]['detail']}")
        first_conflict = next((col for col in columns
                               if col["cells"][u.name]["status"] == CONFLICT), None)
        if first_conflict:
            cell = first_conflict["cells"][u.name]
            where = "; ".join(cell["hunks"]) or ", ".join(cell["files"])
            notes.append(f"{u.name}: conflict from {first_conflict['ref']} on: {where}"
                         f" ({cell['detail']})")
        first_lint = next((col for col in columns
                           if col["cells"][u.name]["status"] == LINT_ERROR), None)
        if first_lint:
            notes.append(f"{u.name}: lint errors on {first_lint['ref']}: "
                         f"{first_lint['cells'][u.name]['detail']}")
    return notes


def _write_markdown(path: Path, manifest, headers, rows, notes, columns) -> None:
    lines = ["# Overlay compatibility with upstream SGLang\n",
             f"Units of `{manifest.root.name}` (rows) on upstream refs (columns), "
             "from `overlay check`.\n",
             report.markdown_table(headers, rows)]
    if notes:
        lines.append("\n".join(f"- {n}" for n in notes) + "\n")
    lines.append("Commits: " + ", ".join(f"{c['ref']} `{c['commit'][:12]}`" for c in columns)
                 + "\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
