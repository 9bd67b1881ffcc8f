"""`overlay init DIR`: an empty overlay, pinned and locked to an upstream ref."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import click

from .. import durable
from ..durable import crash_point
from ..errors import OK, BadInput
from ..gitutil import Git
from ..manifest import MANIFEST_NAME
from ..upstream import Cache, normalize_url
from . import hold_for_command

MANIFEST_TEMPLATE = """\
# sglang-overlay manifest: the upstream, its pinned ref and lock, and the
# ordered units (files | patch | edit) the overlay applies on top of it.
# See `overlay --help`; units are added by `overlay capture`, `overlay
# refresh`, or by hand.

[upstream]
url = "{url}"
ref = "{ref}"
commit = "{commit}"
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
    if not Git(dest).result("rev-parse", "--is-inside-work-tree").ok:
        Git(dest).run("init", "--quiet")


def run(opts, directory: Path, upstream: str, sglang_ref: str | None, offline: bool) -> int:
    dest = (opts.directory / directory).absolute()
    if (dest / MANIFEST_NAME).exists():
        raise BadInput(f"{dest / MANIFEST_NAME} already exists",
                       "pick another directory, or work on that overlay with -C")
    if not sglang_ref:
        raise BadInput("overlay init needs --sglang-ref REF (the upstream release to pin)",
                       "pass e.g. --sglang-ref v0.5.1")
    url = normalize_url(upstream)
    stored = upstream if "://" in upstream or "@" in upstream else url[len("file://"):]
    mirror = Cache(opts.cache_dir).mirror(url)
    resolved = mirror.resolve(sglang_ref, offline=offline)  # fails before writing anything

    manifest = MANIFEST_TEMPLATE.format(url=stored, ref=sglang_ref, commit=resolved.commit)
    if dest.is_dir() and any(dest.iterdir()):
        # an existing directory (a repository, say): overlay.toml goes in last, so
        # until it is there a killed init is simply run again
        hold_for_command(dest, "init")
        if (dest / MANIFEST_NAME).exists():  # another init won the race
            raise BadInput(f"{dest / MANIFEST_NAME} already exists",
                           "pick another directory, or work on that overlay with -C")
        _skeleton(dest)
        crash_point("init-skeleton")
        durable.write_text(dest / MANIFEST_NAME, manifest)
    else:
        # a new directory is made complete beside it and renamed into place
        dest.parent.mkdir(parents=True, exist_ok=True)
        durable.sweep_dir(dest.parent, f".{dest.name}{INIT_MARK}")
        work = dest.parent / f".{dest.name}{INIT_MARK}{os.getpid()}"
        work.mkdir()
        _skeleton(work)
        crash_point("init-skeleton")
        durable.write_text(work / MANIFEST_NAME, manifest)
        try:
            if dest.is_dir():
                dest.rmdir()
            os.rename(work, dest)
        except OSError:
            shutil.rmtree(work, ignore_errors=True)
            raise BadInput(f"{dest} was filled by another process meanwhile",
                           "pick another directory") from None
    click.echo(f"initialized an empty overlay in {dest}")
    click.echo(f"  upstream {stored}")
    click.echo(f"  pinned   {sglang_ref} at {resolved.commit}")
    click.echo("next: `overlay capture --from <your fork>` or add units to "
               f"{MANIFEST_NAME}, then `overlay apply`")
    return OK
