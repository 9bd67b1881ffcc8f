#!/usr/bin/env python3
"""Benchmark `overlay lint` cold and warm, and a cold `overlay check`, in one run.

Cold means the lint facts cache (lint-facts.sqlite) is deleted; the mirror
is always warm (fetched once before timing), so the numbers are the work
after the fetch. Lint's own time is what `lint --json` reports as seconds
(the build of the patched tree is apply's work, measured by bench_apply).
Goals (issue 12): cold lint of a new release <= 0.5 s, warm lint < 0.1 s,
cold check over the tested releases <= 5 s.

Overlays: examples/custom-models (it applies on every tested release) and
this repository's own (on its pin).

    python benchmarks/bench_lint.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_apply import REPO, copy_overlay, overlay, sh

sys.path.insert(0, str(REPO / "scripts"))
import local_upstream  # noqa: E402

RELEASES = ["v" + v for v in local_upstream.DEFAULT_RELEASES]
LINTED = ["v0.5.1", "v0.5.10.post1", "v0.5.23"]


def drop_facts(cache: Path) -> None:
    for p in cache.glob("lint-facts.sqlite*"):
        p.unlink()


def lint_seconds(cache: Path, ov: Path, url: str, ref: str) -> tuple[float, float]:
    """(lint work as reported, wall time of the command)."""
    started = time.perf_counter()
    r = overlay("--cache-dir", cache, "-C", ov, "lint", "--upstream", url,
                "--sglang-ref", ref, "--json")
    wall = time.perf_counter() - started
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)["seconds"], wall


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    upstream = local_upstream.build_upstream(local_upstream.DEFAULT_RELEASES)
    url = "file://" + str(upstream)
    tmp = Path(tempfile.mkdtemp(prefix="bench-lint-"))
    try:
        ex = tmp / "example"
        shutil.copytree(REPO / "examples" / "custom-models", ex)
        sh("git", "init", "-q", cwd=ex)
        repo_ov = copy_overlay(tmp / "repo")
        cache = tmp / "cache"
        check = ["--cache-dir", cache, "-C", ex, "check", "--upstream", url, "--tags", "v*",
                 "--json"]
        warmup = overlay(*check)  # fetches every release into the mirror
        assert warmup.returncode in (0, 1), warmup.stderr
        print(f"overlay lint (median of {args.runs}; mirror warm; cold = facts cache deleted)")
        print(f"  {'overlay':9} {'ref':14} {'cold work':>10} {'warm work':>10} {'cold wall':>10}")
        rows = [(ex, "example", ref) for ref in LINTED] + [(repo_ov, "repo", "v0.5.1")]
        worst_cold = worst_warm = 0.0
        for ov, name, ref in rows:
            cold, warm, wall = [], [], []
            for _ in range(args.runs):
                drop_facts(cache)
                c, w = lint_seconds(cache, ov, url, ref)
                cold.append(c)
                wall.append(w)
                warm.append(lint_seconds(cache, ov, url, ref)[0])
            mc, mw = statistics.median(cold), statistics.median(warm)
            worst_cold, worst_warm = max(worst_cold, mc), max(worst_warm, mw)
            print(f"  {name:9} {ref:14} {mc:9.2f}s {mw:9.3f}s {statistics.median(wall):9.2f}s")
        cold_check, warm_check = [], []
        for _ in range(args.runs):
            drop_facts(cache)
            started = time.perf_counter()
            r = overlay(*check)
            cold_check.append(time.perf_counter() - started)
            assert r.returncode in (0, 1), r.stderr
            started = time.perf_counter()
            overlay(*check)
            warm_check.append(time.perf_counter() - started)
        cc, wc = statistics.median(cold_check), statistics.median(warm_check)
        print(f"overlay check of examples/custom-models over {len(RELEASES)} releases "
              "(apply + lint per ref, 2 workers)")
        print(f"  cold facts   {cc:6.2f} s   (goal <= 5 s)")
        print(f"  warm facts   {wc:6.2f} s")
        print("summary")
        print(f"  worst cold lint work  {worst_cold:6.2f} s  (goal <= 0.5 s)  "
              f"{'met' if worst_cold <= 0.5 else 'NOT met'}")
        print(f"  worst warm lint work  {worst_warm:6.3f} s  (goal < 0.1 s)  "
              f"{'met' if worst_warm < 0.1 else 'NOT met'}")
        print(f"  cold check            {cc:6.2f} s  (goal <= 5 s)  "
              f"{'met' if cc <= 5 else 'NOT met'}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
