"""`overlay ci github`: GitHub Actions workflows for the overlay repository."""

from __future__ import annotations

import click

from .. import github_ci, journal, report
from ..errors import OK
from ..manifest import find_root, load


def run_github(opts, gpu_runner: str | None, as_json: bool) -> int:
    root = find_root(opts.directory)
    journal.recover(root)
    manifest = load(root, check_files=False)  # only the models matter here
    github_ci.check_label(gpu_runner or github_ci.DEFAULT_GPU_RUNNER)  # before writing
    paths = github_ci.write(root, manifest, gpu_runner)
    shards = github_ci.shard_count(manifest)
    if as_json:
        report.emit_json({"workflows": [str(p) for p in paths],
                          "gpu_runner": gpu_runner or github_ci.DEFAULT_GPU_RUNNER,
                          "shards": shards, "exit_code": OK})
        return OK
    for p in paths:
        click.echo(f"wrote {p.relative_to(root)}")
    n = shards
    click.echo(f"GPU jobs run on runners labelled '{gpu_runner or github_ci.DEFAULT_GPU_RUNNER}', "
               f"{n} shard{'s' if n != 1 else ''} of the models; commit the files and push")
    return OK
