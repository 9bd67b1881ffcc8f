#!/usr/bin/env python3
"""Benchmark `overlay apply` against the raw git pipeline doing the same work.

Prints, side by side in one run:

1. warm apply: `overlay apply --no-lint` into a new worktree, with the
   mirror already filled, against the raw pipeline on the same mirror
   (git worktree add, copy the overlay files, git apply --3way each patch,
   commit each unit); goal ratio <= 1.5. Also the no-op re-apply and lint.
2. cold apply from a file:// upstream: objects fetched into an empty cache
   against a depth-1 fetch of the ref alone; goal ratio <= 1.2.

Uses this repository's own overlay and the local upstream built from PyPI
releases (scripts/local_upstream.py).

    python benchmarks/bench_apply.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "tools"))

import local_upstream  # noqa: E402

from sglang_overlay.manifest import load  # noqa: E402

ENV = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
       "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b",
       "GIT_COMMITTER_EMAIL": "b@b"}


def sh(*args, cwd=None) -> str:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, env=ENV,
                          text=True).stdout.strip()


def overlay(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sglang_overlay", *map(str, args)],
                          capture_output=True, text=True,
                          env={**ENV, "PYTHONPATH": str(REPO / "tools")})


def copy_overlay(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in ("overlay.toml", "overlay", "patches", "variants"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest / name)
    sh("git", "init", "-q", cwd=dest)
    sh("git", "add", "-A", cwd=dest)
    sh("git", "commit", "-qm", "overlay", cwd=dest)
    return dest


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def raw_pipeline(mirror: Path, commit: str, dest: Path, ov: Path) -> None:
    """What a person would script by hand: worktree, copy, apply --3way, commit."""
    manifest = load(ov)
    sh("git", "--git-dir", str(mirror), "worktree", "add", "-q", "--detach", str(dest), commit)
    for unit in manifest.active_units:
        if unit.kind == "files":
            for rel in manifest.unit_files(unit):
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ov / "overlay" / rel, dest / rel)
                sh("git", "add", rel, cwd=dest)
        elif unit.kind == "patch":
            sh("git", "apply", "--3way", str(ov / unit.patch), cwd=dest)
        else:
            continue  # edits have no raw-git equivalent; the overlay does more work
        sh("git", "commit", "-qm", unit.name, cwd=dest)


def count_objects(git_dir: Path) -> int:
    out = sh("git", "--git-dir", str(git_dir), "count-objects", "-v")
    fields = dict(line.split(": ") for line in out.splitlines())
    return int(fields["count"]) + int(fields["in-pack"])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    upstream = local_upstream.build_upstream(local_upstream.DEFAULT_RELEASES)
    url = "file://" + str(upstream)
    tmp = Path(tempfile.mkdtemp(prefix="bench-apply-"))
    try:
        ov = copy_overlay(tmp / "ov")
        cache = tmp / "cache"
        # --- cold: objects fetched --------------------------------------
        print("cold apply from a file:// upstream (objects in the cache vs a depth-1 fetch)")
        print(f"{'ref':10} {'overlay':>9} {'depth-1':>9} {'ratio':>7}  {'seconds':>8}")
        for ref in ("v0.5.1", "v0.5.3"):
            c = tmp / f"cold-{ref}"
            t = timed(lambda: overlay("--cache-dir", c, "-C", ov, "apply", "--upstream", url,
                                      "--sglang-ref", ref, "--no-lint",
                                      "--worktree", tmp / f"cold-wt-{ref}"))
            ours = sum(count_objects(m) for m in (c / "mirrors").glob("*.git"))
            bare = tmp / f"depth1-{ref}.git"
            sh("git", "init", "-q", "--bare", str(bare))
            sh("git", "--git-dir", str(bare), "fetch", "-q", "--depth", "1", url,
               f"refs/tags/{ref}:refs/tags/{ref}")
            theirs = count_objects(bare)
            note = ("  (upstream has opt.py here: telling upstream-provides from a deliberate"
                    " replacement needs the pinned v0.5.1 tree)") if ref != "v0.5.1" else ""
            print(f"{ref:10} {ours:9d} {theirs:9d} {ours / theirs:7.2f}  {t:8.2f}{note}")
        # --- warm: same work as the raw pipeline ---------------------------
        r = overlay("--cache-dir", cache, "-C", ov, "apply", "--upstream", url, "--no-lint",
                    "--worktree", tmp / "warmup")
        assert r.returncode == 0, r.stderr
        mirror = next((cache / "mirrors").glob("*.git"))
        commit = sh("git", "--git-dir", str(mirror), "rev-parse", "refs/tags/v0.5.1^{commit}")
        ours, raw = [], []
        for i in range(args.runs):
            ours.append(timed(lambda: overlay("--cache-dir", cache, "-C", ov, "apply",
                                              "--upstream", url, "--no-lint",
                                              "--worktree", tmp / f"ours-{i}")))
            raw.append(timed(lambda: raw_pipeline(mirror, commit, tmp / f"raw-{i}", ov)))
        noop = [timed(lambda: overlay("--cache-dir", cache, "-C", ov, "apply", "--upstream",
                                      url, "--no-lint", "--worktree", tmp / "ours-0"))
                for _ in range(args.runs)]
        lint = [timed(lambda: overlay("--cache-dir", cache, "-C", ov, "lint", "--upstream",
                                      url)) for _ in range(args.runs)]
        mo, mr = statistics.median(ours), statistics.median(raw)
        print()
        print(f"warm apply, median of {args.runs} (new worktree each run)")
        print(f"  overlay apply --no-lint   {mo:6.3f} s")
        print(f"  raw git pipeline          {mr:6.3f} s")
        print(f"  ratio                     {mo / mr:6.2f}  (goal <= 1.5)")
        print(f"  re-apply, nothing to do   {statistics.median(noop):6.3f} s")
        print(f"  overlay lint (warm)       {statistics.median(lint):6.3f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
