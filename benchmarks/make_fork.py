#!/usr/bin/env python3
"""Make a synthetic SGLang fork of a given size, one commit per change.

Of N units, 60% change an existing upstream file (a small function appended
to a module under python/sglang/srt/, models excluded) and 40% add a model
module (a subclass of LlamaForCausalLM exported with EntryClass). N=250 is
issue 12's fork: 150 changed upstream files and 100 model modules.

    python benchmarks/make_fork.py UPSTREAM_GIT DEST --units 250 [--base v0.5.1]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from bench_apply import ENV, sh

MODELS = "python/sglang/srt/models/"

MODEL = '''\
from sglang.srt.models.llama import LlamaForCausalLM


class ForkModel{i}ForCausalLM(LlamaForCausalLM):
    """Fork model {i}."""


EntryClass = ForkModel{i}ForCausalLM
'''

CHANGE = '''

def _fork_change_{i}():
    """Fork change {i}."""
    return {i}
'''


def changed_files(fork: Path, n: int) -> list[str]:
    files = sh("git", "ls-files", "python/sglang/srt", cwd=fork).splitlines()
    pool = [f for f in files if f.endswith(".py") and not f.startswith(MODELS)
            and not f.endswith("__init__.py")]
    if len(pool) < n:
        raise SystemExit(f"only {len(pool)} upstream files to change, {n} asked")
    step = len(pool) / n
    return [pool[int(k * step)] for k in range(n)]


def make_fork(upstream: Path, dest: Path, units: int, base: str = "v0.5.1") -> Path:
    """A clone of upstream at base with `units` commits on top; returns dest."""
    sh("git", "clone", "-q", "--no-checkout", str(upstream), str(dest))
    sh("git", "checkout", "-q", "-b", "fork", f"refs/tags/{base}", cwd=dest)
    n_change = units * 3 // 5
    for i, rel in enumerate(changed_files(dest, n_change)):
        p = dest / rel
        p.write_text(p.read_text() + CHANGE.format(i=i))
        sh("git", "commit", "-qam", f"fork: change {rel}", cwd=dest)
    for i in range(units - n_change):
        rel = f"{MODELS}fork_model_{i}.py"
        (dest / rel).write_text(MODEL.format(i=i))
        sh("git", "add", rel, cwd=dest)
        sh("git", "commit", "-qm", f"fork: add model {i}", cwd=dest)
    return dest


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("upstream", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--units", type=int, default=250)
    parser.add_argument("--base", default="v0.5.1")
    args = parser.parse_args()
    make_fork(args.upstream, args.dest, args.units, args.base)
    print(subprocess.run(["git", "rev-list", "--count", f"{args.base}..fork"], cwd=args.dest,
                         capture_output=True, text=True, env=ENV).stdout.strip(), "commits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
