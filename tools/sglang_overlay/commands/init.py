"""`overlay init DIR`: an empty overlay, pinned and locked to an upstream ref."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import OK, BadInput
from ..gitutil import Git
from ..manifest import MANIFEST_NAME, with_lock
from ..upstream import Cache, is_url, normalize_url

MANIFEST_HEADER = """\
# sglang-overlay manifest: the upstream, its pinned ref and lock, and the
# ordered units (files | patch | edit) the overlay applies on top of it.
# See `overlay --help`; units are added by `overlay capture`, `overlay
# refresh`, or by hand.

"""

GITIGNORE = """\
# written by `overlay`: worktrees, wheels, reports, pull requests
/sglang-*/
/.sglang-*/
/.overlay/
/dist/
/reports/
/pr/
"""


def run(opts, directory: Path, upstream: str, sglang_ref: str | None, offline: bool) -> int:
    dest = (opts.directory / directory).absolute()
    if (dest / MANIFEST_NAME).exists():
        raise BadInput(f"{dest / MANIFEST_NAME} already exists",
                       "pick another directory, or work on that overlay with -C")
    if not sglang_ref:
        raise BadInput("overlay init needs --sglang-ref REF (the upstream release to pin)",
                       "pass e.g. --sglang-ref v0.5.1")
    url = normalize_url(upstream)
    stored = upstream if is_url(upstream) else url[len("file://"):]
    mirror = Cache(opts.cache_dir).mirror(url)
    resolved = mirror.resolve(sglang_ref, offline=offline)  # fails before writing anything

    dest.mkdir(parents=True, exist_ok=True)
    (dest / MANIFEST_NAME).write_text(
        with_lock(MANIFEST_HEADER, sglang_ref, resolved.commit, url=stored))
    for sub in ("overlay", "patches"):
        (dest / sub).mkdir(exist_ok=True)
        (dest / sub / ".gitkeep").touch()
    gitignore = dest / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text(GITIGNORE)
    if not Git(dest).result("rev-parse", "--is-inside-work-tree").ok:
        Git(dest).run("init", "--quiet")
    click.echo(f"initialized an empty overlay in {dest}")
    click.echo(f"  upstream {stored}")
    click.echo(f"  pinned   {sglang_ref} at {resolved.commit}")
    click.echo("next: `overlay capture --from <your fork>` or add units to "
               f"{MANIFEST_NAME}, then `overlay apply`")
    return OK
