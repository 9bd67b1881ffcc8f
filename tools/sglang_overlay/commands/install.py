"""`overlay install`: put the built wheel into an environment with its pip.

Default wheel: the newest one in ``<overlay>/dist/`` whose embedded manifest
says it was built from the current overlay for the pinned ref (the content
hash is recomputed; no network). pip's output is streamed on a terminal and
otherwise shown only when it fails.

``--no-deps``: ``pip install --no-deps --force-reinstall WHEEL``.
Otherwise ``pip install WHEEL`` first (installs what is missing and leaves
satisfied dependencies alone; ``--force-reinstall`` there would reinstall the
whole dependency tree, torch included), then ``pip install --no-deps
--force-reinstall WHEEL`` so the wheel's files are exactly in place even when
the same version was installed before.
"""

from __future__ import annotations

import subprocess
import time

import click

from .. import output, report, wheels
from ..errors import BadInput
from ..interpreters import interpreter
from ..manifest import load
from . import open_root


GPU_EXTRAS = ("srt",)  # upstream's extra with torch and the kernels, where it has one


def run(opts, python, no_deps, wheel, as_json, gpu_deps: bool = False) -> int:
    if gpu_deps and no_deps:
        raise BadInput("--gpu-deps and --no-deps contradict each other", "pass one of them")
    t0 = time.monotonic()
    py = interpreter(python, opts.directory)
    if wheel is not None:
        path = opts.existing(wheel, "--wheel")
        if not path.name.endswith(".whl"):
            raise BadInput(f"{wheel}: not a wheel (the name does not end in .whl)",
                           "pass the .whl file `overlay build` printed")
    else:
        root = open_root(opts)  # checked, and an interrupted change finished
        manifest = load(root)
        dist = manifest.root / "dist"
        found = wheels.find_built(manifest, dist)
        if not found:
            raise BadInput(
                f"no wheel in {dist} was built from the current overlay for "
                f"{manifest.ref or 'the pinned ref'}",
                "run `overlay build` first, or pass --wheel FILE")
        path = found[0]

    extras = [e for e in GPU_EXTRAS if e in wheels.provided_extras(path)] if gpu_deps else []
    base = [py, "-m", "pip", "install", "--disable-pip-version-check"]
    steps = [base + ["--no-deps", "--force-reinstall", str(path)]]
    if not no_deps:
        steps.insert(0, base + [f"{path}[{','.join(extras)}]" if extras else str(path)])
    for cmd in steps:
        _pip(cmd, py)

    embedded = wheels.read_embedded(path)
    version = embedded.get("version") if embedded else path.name.split("-")[1]
    result = {
        "wheel": str(path),
        "sha256": wheels.sha256_file(path),
        "version": version,
        "python": py,
        "no_deps": bool(no_deps),
        "extras": extras,
        "overlay_build": embedded is not None,
        "commands": [" ".join(c) for c in steps],
        "seconds": round(time.monotonic() - t0, 2),
    }
    if as_json:
        report.emit_json(result, 0)
        return 0
    click.echo(f"installed sglang {version} into {py}")
    click.echo(f"from {path}")
    if embedded is None:
        click.echo("note: this wheel has no embedded overlay manifest; "
                   "`overlay verify` will report it as not an overlay build")
    return 0


def _pip(cmd: list[str], py: str) -> None:
    if output.is_terminal():
        # stream for people watching; keep stdout clean for --json
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        lines = []
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace")
            lines.append(line)
            output.passthrough(line)
        rc = proc.wait()
        out = "".join(lines)
    else:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        rc, out = proc.returncode, proc.stdout.decode("utf-8", "replace")
    if rc == 0:
        return
    if not output.is_terminal():
        output.passthrough(out)
    last = next((ln.strip() for ln in reversed(out.splitlines()) if ln.strip()), "no output")
    if "No module named pip" in out:
        raise BadInput(f"{py} has no pip", f"run `{py} -m ensurepip`, then install again")
    raise BadInput(f"pip install failed: {last}",
                   "read pip's output above; --no-deps skips dependencies")

