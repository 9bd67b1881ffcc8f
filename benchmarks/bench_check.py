#!/usr/bin/env python3
"""Benchmark `overlay check` over ten real releases against the raw git pipeline.

The raw pipeline does by hand what check does for each ref: a worktree of
the ref, the overlay's files copied in, each patch tried with
`git apply --check` and, when that fails, `git apply --3way`. check does that
on temporary indexes, in parallel, and lints every ref too. Both run on the
same warm mirror; medians of --runs, side by side in one run.

    python benchmarks/bench_check.py [--runs 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_apply import REPO, copy_overlay, overlay, sh

sys.path.insert(0, str(REPO / "scripts"))
import local_upstream  # noqa: E402

from sglang_overlay.manifest import load  # noqa: E402

TEN = ["v" + v for v in local_upstream.TEN_RELEASES]


def raw_check(mirror: Path, refs: list[str], ov: Path, tmp: Path) -> dict[str, float]:
    manifest = load(ov)
    per_ref = {}
    for ref in refs:
        started = time.perf_counter()
        wt = tmp / f"raw-{ref}"
        sh("git", "--git-dir", str(mirror), "worktree", "add", "-q", "--detach", str(wt),
           f"refs/tags/{ref}^{{commit}}")
        for unit in manifest.active_units:
            if unit.kind == "files":
                for rel in manifest.unit_files(unit):
                    (wt / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(ov / "overlay" / rel, wt / rel)
            elif unit.kind == "patch":
                patch = str(ov / unit.patch)
                if subprocess.run(["git", "apply", "--check", patch], cwd=wt,
                                  capture_output=True).returncode:
                    subprocess.run(["git", "apply", "--3way", patch], cwd=wt,
                                   capture_output=True)
        sh("git", "--git-dir", str(mirror), "worktree", "remove", "--force", str(wt))
        per_ref[ref] = time.perf_counter() - started
    return per_ref


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    upstream = local_upstream.build_upstream(local_upstream.DEFAULT_RELEASES)
    url = "file://" + str(upstream)
    tmp = Path(tempfile.mkdtemp(prefix="bench-check-"))
    try:
        ov = copy_overlay(tmp / "ov")
        cache = tmp / "cache"
        check_args = ["--cache-dir", cache, "-C", ov, "check", "--upstream", url]
        for ref in TEN:
            check_args += ["--sglang-ref", ref]
        cold_started = time.perf_counter()
        cold = overlay(*check_args)
        cold_seconds = time.perf_counter() - cold_started
        assert cold.returncode in (0, 1), cold.stderr
        mirror = next((cache / "mirrors").glob("*.git"))
        ours, raw, per_ref = [], [], {}
        for i in range(args.runs):
            started = time.perf_counter()
            r = overlay(*check_args, "--json")
            ours.append(time.perf_counter() - started)
            import json

            per_ref = {x["ref"]: x["seconds"] for x in json.loads(r.stdout)["refs"]}
            started = time.perf_counter()
            raw_per_ref = raw_check(mirror, TEN, ov, tmp / f"run{i}")
            raw.append(time.perf_counter() - started)
        mo, mr = statistics.median(ours), statistics.median(raw)
        print(f"overlay check over {len(TEN)} real releases (median of {args.runs}, warm mirror)")
        print(f"  {'ref':14} {'check':>8} {'raw':>8}   (check: build + lint per ref, in a worker)")
        for ref in TEN:
            print(f"  {ref:14} {per_ref[ref]:7.2f}s {raw_per_ref[ref]:7.2f}s")
        print(f"  overlay check (apply + lint, 2 workers)  {mo:6.2f} s")
        print(f"  raw git pipeline (worktree + apply)      {mr:6.2f} s")
        print(f"  ratio                                    {mo / mr:6.2f}  (goal <= 1.5)")
        print(f"  first (cold) check, fetching 10 refs     {cold_seconds:6.2f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
