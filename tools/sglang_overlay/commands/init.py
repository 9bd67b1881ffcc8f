"""`overlay init DIR`: an empty overlay, pinned and locked to an upstream ref."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import click

from .. import durable, github_ci, report, userconfig
from ..durable import crash_point
from ..errors import OK, BadInput
from ..gitutil import Git
from ..manifest import MANIFEST_NAME, load, with_lock
from ..upstream import Cache, is_url, normalize_url
from . import hold_for_command

MANIFEST_HEADER = """\
# sglang-overlay manifest: the upstream, its pinned ref and lock, and the
# ordered units (files | patch | edit) the overlay applies on top of it.
# See `overlay --help`; units are added by `overlay capture`, `overlay
# refresh`, or by hand.

"""

INIT_MARK = ".overlay-init-"
GITIGNORE = """\
# written by `overlay`: worktrees, wheels, reports, pull requests
/sglang-*/
/.sglang-*/
/.overlay/
/dist/
/reports/
/pr/
"""


def _skeleton(dest: Path) -> None:
    for sub in ("overlay", "patches"):
        (dest / sub).mkdir(exist_ok=True)
        (dest / sub / ".gitkeep").touch()
    gitignore = dest / ".gitignore"
    if not gitignore.exists():
        durable.write_text(gitignore, GITIGNORE)
    if not Git(dest).is_work_tree():
        Git(dest).init_repository()


def run(opts, directory: Path, upstream: str | None, sglang_ref: str | None,
        offline: bool, ci: str | None = None, gpu_runner: str | None = None,
        as_json: bool = False) -> int:
    dest = opts.path(directory)
    if (dest / MANIFEST_NAME).exists():
        raise BadInput(f"{dest / MANIFEST_NAME} already exists",
                       "pick another directory, or work on that overlay with -C")
    if not sglang_ref:
        raise BadInput("overlay init needs --sglang-ref REF (the upstream release to pin)",
                       "pass e.g. --sglang-ref v0.5.1")
    if gpu_runner is not None and ci is None:
        raise BadInput("--gpu-runner needs --ci github", "pass --ci github --gpu-runner LABEL")
    if gpu_runner is not None:
        github_ci.check_label(gpu_runner)
    # The manifest names --upstream (default GitHub's); the fetch goes where
    # the user's setting says ($SGLANG_OVERLAY_UPSTREAM, a [mirrors] entry).
    if upstream:
        url = normalize_url(upstream, base=opts.directory)
        stored = upstream if is_url(upstream) else url[len("file://"):]
        choice = userconfig.Choice(url, "--upstream", None)
    else:
        stored = userconfig.GITHUB_URL
        choice = userconfig.choose(None, stored, None)
        url = normalize_url(choice.url, base=choice.base or Path.cwd())
    mirror = Cache(opts.cache_dir).mirror(url)
    resolved = mirror.resolve(sglang_ref, offline=offline)  # fails before writing anything

    # The lock names a commit of the manifest's upstream: one fetched from a
    # mirror may not exist there (a different history), so it is left for the
    # first apply that fetches from the manifest's URL (or --update-lock).
    locked = url == normalize_url(stored, must_exist=False)
    manifest = with_lock(MANIFEST_HEADER, sglang_ref, resolved.commit if locked else None,
                         url=stored)
    if dest.is_dir() and any(dest.iterdir()):
        workflows = _into_existing(opts, dest, manifest, ci, gpu_runner)
    else:
        workflows = _new_directory(dest, manifest, ci, gpu_runner)
    if as_json:
        report.emit_json({
            "directory": str(dest),
            "upstream": stored,
            "fetched_from": url,
            "upstream_source": choice.source,
            "ref": sglang_ref,
            "commit": resolved.commit,
            "locked": locked,
            "workflows": [str(p) for p in workflows],
            "exit_code": OK,
        })
        return OK
    click.echo(f"initialized an empty overlay in {dest}")
    click.echo(f"  upstream {stored}")
    if choice.source != "--upstream" and url != normalize_url(stored):
        click.echo(f"  fetched  from {url} ({choice.describe()})")
    click.echo(f"  pinned   {sglang_ref} at {resolved.commit}"
               + ("" if locked else f" (not locked: fetched from a mirror; the first apply "
                                    f"from {stored}, or --update-lock, writes the lock)"))
    for p in workflows:
        click.echo(f"  wrote    {p.relative_to(dest)}")
    click.echo("next: `overlay capture --from <your fork>` or add units to "
               f"{MANIFEST_NAME}, then `overlay apply`")
    return OK


def _into_existing(opts, dest: Path, manifest: str, ci, gpu_runner) -> list[Path]:
    """Init in an existing directory (a repository, say): overlay.toml goes in
    last, so until it is there a killed init is simply run again. The workflows
    written."""
    workflows: list[Path] = []
    hold_for_command(dest, "init")
    if (dest / MANIFEST_NAME).exists():  # another init won the race
        raise BadInput(f"{dest / MANIFEST_NAME} already exists",
                       "pick another directory, or work on that overlay with -C")
    _skeleton(dest)
    crash_point("init-skeleton")
    if ci == "github":  # the workflows read the new manifest: a copy in scratch space
        with durable.scratch(Cache(opts.cache_dir).root, "init") as tmp:
            durable.write_text(tmp / MANIFEST_NAME, manifest)
            workflows = github_ci.write(dest, load(tmp, check_files=False), gpu_runner)
    durable.write_text(dest / MANIFEST_NAME, manifest)
    return workflows


def _new_directory(dest: Path, manifest: str, ci, gpu_runner) -> list[Path]:
    """Init a new directory: made complete beside it and renamed into place.
    The workflows written."""
    workflows: list[Path] = []
    dest.parent.mkdir(parents=True, exist_ok=True)
    durable.sweep_dir(dest.parent, f".{dest.name}{INIT_MARK}")
    work = dest.parent / f".{dest.name}{INIT_MARK}{os.getpid()}"
    work.mkdir()
    _skeleton(work)
    crash_point("init-skeleton")
    durable.write_text(work / MANIFEST_NAME, manifest)
    if ci == "github":
        workflows = [dest / p.relative_to(work)
                     for p in github_ci.write(work, load(work), gpu_runner)]
    try:
        if dest.is_dir():
            dest.rmdir()
        os.rename(work, dest)
    except OSError:
        shutil.rmtree(work, ignore_errors=True)
        raise BadInput(f"{dest} was filled by another process meanwhile",
                       "pick another directory") from None
    return workflows
