"""`overlay build`: a reproducible wheel of the patched tree.

From source (default): the overlay is applied on a temporary index, upstream's
``python/`` project of the result is exported to a temporary directory (never
a user's worktree), its version becomes ``<upstream>+overlay.<hash>``, the
embedded manifest is added as package data, and PyPA ``build`` builds it
(without isolation when this interpreter has the build requirements, with
SOURCE_DATE_EPOCH = the upstream commit's time). setuptools then writes the
canonical form by itself and its wheel is kept as built; any other result is
rewritten into that form (``wheels.WheelContents.write``).

With ``--repack WHEEL``: upstream's official wheel for that release gets the
overlay's files under its packages instead (for releases whose source needs a
native toolchain), the embedded manifest and the new version, and is written
in the same canonical form. Either way the same inputs give the same bytes.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
from packaging.utils import canonicalize_name

from .. import durable, paths, report, state, wheels
from ..durable import PART, crash_point
from ..errors import BadInput, Findings
from ..output import progress
from ..versions import same_version
from . import open_overlay


def run(opts, sglang_ref, upstream, offline, out, repack, as_json) -> int:
    t0 = time.monotonic()
    wheels.require("wheel", "wheel")
    if repack is None:
        wheels.require("build", "build")
    upstream_wheel = _upstream_wheel(opts.existing(repack, "--repack")) if repack else None

    manifest, session = open_overlay(opts, upstream, offline, writes="build")
    out_dir = opts.path(out) if out else manifest.root / "dist"
    paths.check_writable(out_dir, "--out")  # before the build, not after it
    ref = sglang_ref or manifest.ref
    progress(f"applying the overlay on {ref or '(no ref)'} ...")
    build = session.build_ref(ref)
    git = session.workspace.git
    epoch = git.commit_time(build.base)
    overlay_hash = manifest.content_hash(build.base)
    changes = wheels.changed_paths(git, build.base, build.head)

    part_dir = _part_dir(out_dir, manifest.root)
    with durable.scratch(session.cache.root, "build") as tmp:
        progress(f"exporting python/ of {build.head[:12]} ...")
        session.export(build.head, tmp / "src", ("python",))
        crash_point("build-exported")
        project = tmp / "src" / "python"
        up_version = wheels.project_version(project / "pyproject.toml", build.ref)
        version = wheels.local_version(up_version, overlay_hash)

        def embed(files: dict[str, str | None]) -> bytes:
            return wheels.dump_manifest(wheels.embedded_manifest(
                manifest=manifest, build=build, url=session.url, version=version,
                upstream_version=up_version, method=method, overlay_hash=overlay_hash,
                files=files))

        if upstream_wheel is not None:
            method, isolation, built, rewritten = "repack", None, None, True
            contents, files, skipped = _repack(upstream_wheel, project, changes, build.ref,
                                              up_version, version, embed)
        else:
            method = "source"
            contents, built, isolation, files, skipped, rewritten = _from_source(
                project, tmp, changes, version, epoch, offline, embed)

        if rewritten:
            progress("writing the wheel ...")
            final = contents.write(tmp / "final", epoch)
        else:
            final = built

        dest = out_dir / final.name
        _refuse_other_method(dest, method)
        out_dir.mkdir(parents=True, exist_ok=True)
        if part_dir is not None:
            state.state_dir(manifest.root)
        durable.copy_file(final, dest, point="build-wheel-copying", part_dir=part_dir)

    digest = wheels.sha256_file(dest)
    units = [{"name": r.unit.name, "kind": r.unit.kind, "status": r.status}
             for r in build.results]
    result = {
        "wheel": str(dest),
        "sha256": digest,
        "version": version,
        "ref": build.ref,
        "base": build.base,
        "overlay_hash": overlay_hash,
        "units": units,
        "method": method,
        "isolation": isolation,
        "upstream": session.url,
        "files": files,
        "skipped": skipped,
        "rewritten": rewritten,
        "seconds": round(time.monotonic() - t0, 2),
    }
    if as_json:
        report.emit_json(result, 0)
        return 0
    _show(result, upstream_wheel.path.name if upstream_wheel else None)
    return 0


def _part_dir(out_dir: Path, root: Path) -> Path | None:
    """Where the wheel's part file goes: .overlay/ when the wheel goes into the
    overlay (dist/), so a killed build leaves nothing there, else None (beside
    the wheel). Part files a killed build left are swept first."""
    part_dir = root / state.STATE_DIR if out_dir.resolve().is_relative_to(root.resolve()) \
        else None
    for d in (out_dir, part_dir):
        if d is not None:
            durable.sweep_dir(d, PART)
    return part_dir


def _show(result: dict, repacked: str | None) -> None:
    """The build for people: its units, what a repack left out, the wheel."""
    units, skipped, method = result["units"], result["skipped"], result["method"]
    click.echo(report.table(("UNIT", "KIND", "STATUS"),
                            [[u["name"], u["kind"], u["status"]] for u in units], color_col=2))
    click.echo("")
    for path in skipped if method == "repack" else ():
        click.echo(f"note: a repack cannot carry {path} (outside the wheel's packages); "
                   "build from source to include it")
    isolated = "no build isolation" if result["isolation"] == "none" else "isolated"
    how = "repacked from " + repacked if method == "repack" else "built from source, " + isolated
    click.echo(result["wheel"])
    click.echo(f"sha256 {result['sha256']}")
    click.echo(f"sglang {result['version']} on {result['ref']} ({result['base'][:12]}), {how}, "
               f"{result['seconds']:.1f} s")


def _digests(contents: wheels.WheelContents, inside) -> dict[str, str | None]:
    rels = [(c, wheels.relpath(c.path)) for c in inside]
    return {rel: None if c.deleted else wheels.sha256_bytes(contents.entries[rel][0])
            for c, rel in rels}


def _predicted_files(project: Path, changes) -> dict[str, str | None]:
    """The overlay's changes inside the project's top-level packages, by wheel path."""
    packages = {d.name for d in project.iterdir() if (d / "__init__.py").is_file()}
    rels = [(c, wheels.relpath(c.path)) for c in changes]
    return {rel: None if c.deleted else wheels.sha256_file(project / rel)
            for c, rel in rels if "/" in rel and rel.split("/", 1)[0] in packages}


def _refuse_other_method(dest: Path, method: str) -> None:
    """A repacked wheel and a source-built one get the same name (upstream's
    wheel is pure Python too): never let one silently replace the other."""
    if not dest.exists():
        return
    old = (wheels.read_embedded(dest) or {}).get("method")
    if old and old != method:
        what = {"source": "built from source", "repack": "repacked"}
        raise BadInput(f"{dest} exists and was {what.get(old, old)}; this wheel is "
                       f"{what.get(method, method)} and has the same name",
                       f"pass --out DIR for the {what.get(method, method)} wheel, or remove "
                       f"{dest} first")


def _check_packaged(contents: wheels.WheelContents, inside: list, project: Path):
    """The overlay's files inside a package made it into the wheel, unchanged.

    Returns (the changes the wheel carries, paths upstream's build rules leave
    out: non-Python files that are not package data). A Python module the
    overlay adds or changes must be in the wheel.
    """
    kept, left_out = [], []
    for c in inside:
        rel = wheels.relpath(c.path)
        have = contents.entries.get(rel)
        if c.deleted:
            if have is not None:
                raise Findings(f"the built wheel still has {rel}, which the overlay "
                               "deletes", "report this; the build picked up a stale file")
            kept.append(c)
        elif have is None and not rel.endswith(".py"):
            left_out.append(c.path)
        elif have is None or have[0] != (project / rel).read_bytes():
            raise Findings(
                f"the build backend did not package {c.path} as the overlay has it",
                "put it in a directory upstream's [tool.setuptools.packages.find] picks up "
                "(a valid package name), or use --repack")
        else:
            kept.append(c)
    return kept, left_out


def _upstream_wheel(path: Path) -> wheels.WheelContents:
    """--repack: upstream's sglang wheel, read (bad input when it is not one)."""
    contents = wheels.WheelContents.read(path)  # bad input fails here
    if canonicalize_name(contents.name) != wheels.PACKAGE:
        raise BadInput(f"{path}: a wheel of '{contents.name}', not of sglang",
                       "pass upstream's sglang wheel, e.g. `pip download --no-deps "
                       "--only-binary :all: sglang==<version>`")
    return contents


def _repack(contents: wheels.WheelContents, project: Path, changes, ref: str, up_version: str,
            version: str, embed):
    """Upstream's wheel with the overlay's files in its packages, the embedded
    manifest and the new version. (contents, files, skipped)."""
    name = contents.path.name
    if not same_version(contents.version, up_version):
        raise BadInput(
            f"{contents.path}: sglang {contents.version}, but {ref} is sglang {up_version}",
            f"pass the sglang=={up_version} wheel, or --sglang-ref the release "
            f"of version {contents.version}")
    inside, skipped = wheels.map_changes(contents, changes)
    progress(f"repacking {name} with {len(inside)} overlay files ...")
    for c in inside:
        rel = wheels.relpath(c.path)
        if c.deleted:
            contents.entries.pop(rel, None)
        else:
            contents.entries[rel] = ((project / rel).read_bytes(), c.permissions)
    files = _digests(contents, inside)
    contents.entries[wheels.MANIFEST_ARCNAME] = (embed(files), 0o644)
    contents.set_version(version)
    return contents, files, skipped


def _from_source(project: Path, tmp: Path, changes, version: str, epoch: int, offline: bool,
                 embed):
    """The exported project built by its backend, the embedded manifest put in as
    package data. (contents, built wheel, isolation, files, skipped, rewritten):
    rewritten is False when the backend's wheel is already canonical and kept."""
    # The manifest goes into the tree as package data, so the backend
    # packages it and its wheel is kept as it is when already canonical.
    wheels.set_project_version(project / "pyproject.toml", version,
                               package_data=wheels.MANIFEST_ARCNAME.split("/", 1))
    predicted = _predicted_files(project, changes)
    in_tree = embed(predicted)
    (project / wheels.MANIFEST_ARCNAME).write_bytes(in_tree)
    progress(f"building sglang {version} from source ...")
    built, isolation = wheels.build_from_source(project, tmp / "built", epoch, offline)
    contents = wheels.WheelContents.read(built)
    if contents.version != version:
        raise Findings(f"the build backend made version {contents.version}, "
                       f"expected {version}",
                       "report this; the backend rewrote the version")
    inside, skipped = wheels.map_changes(contents, changes)
    inside, unpackaged = _check_packaged(contents, inside, project)
    skipped += unpackaged
    files = _digests(contents, inside)
    packaged = contents.entries.get(wheels.MANIFEST_ARCNAME, (None,))[0]
    if files == predicted and packaged == in_tree and contents.written_as(built, epoch):
        return contents, built, isolation, files, skipped, False
    contents.entries[wheels.MANIFEST_ARCNAME] = (embed(files), 0o644)
    contents.set_version(version)  # drops RECORD; write() regenerates it
    return contents, built, isolation, files, skipped, True
