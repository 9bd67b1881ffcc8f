#!/usr/bin/env python3
"""How every verb's cost grows with the overlay: forks of 10, 50 and 250 units.

For each size a synthetic v0.5.1 fork is made (make_fork.py: 60% changed
upstream files, 40% new model modules, one commit each) and, side by side in
one run, on a warm mirror:

  capture  `overlay capture --from FORK`   vs  `git format-patch` of the series
  apply    `overlay apply --no-lint`       vs  worktree add + `git am --3way`
  check    `overlay check` on 3 releases   vs  bench_check's raw per-release loop
           (apply and check: medians of --runs, the two sides alternating)
  lint     `overlay lint` work (cold facts cache, then warm)

Goals (issue 12, at 250 units): capture <= 3 s, apply <= 1.5x git am,
check <= 1.5x the raw loop, lint work <= 1 s, each growing linearly.

    python benchmarks/bench_scale.py [--sizes 10,50,250] [--runs 3]
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

from bench_apply import REPO, overlay, sh
from bench_check import raw_check
from bench_lint import drop_facts
from make_fork import make_fork

sys.path.insert(0, str(REPO / "scripts"))
import local_upstream  # noqa: E402

BASE = "v0.5.1"
CHECKED = ["v0.5.1", "v0.5.1.post1", "v0.5.2"]


def timed(*args) -> tuple[float, object]:
    started = time.perf_counter()
    r = overlay(*args)
    return time.perf_counter() - started, r


def one_size(n: int, upstream: Path, url: str, tmp: Path, cache: Path, runs: int) -> dict:
    fork = make_fork(upstream, tmp / f"fork-{n}", n, BASE)
    started = time.perf_counter()
    sh("git", "format-patch", "-q", "--full-index", f"{BASE}..fork", "-o",
       str(tmp / f"series-{n}"), cwd=fork)
    fmt = time.perf_counter() - started
    ov = tmp / f"ov-{n}"
    r = overlay("--cache-dir", cache, "init", ov, "--upstream", url, "--sglang-ref", BASE)
    assert r.returncode == 0, r.stderr
    cap, r = timed("--cache-dir", cache, "-C", ov, "capture", "--from", fork, "--json")
    assert r.returncode == 0, r.stderr
    units = len(json.loads(r.stdout).get("units", []))
    sh("git", "init", "-q", cwd=ov)
    sh("git", "add", "-A", cwd=ov)
    sh("git", "commit", "-qm", "captured", cwd=ov)
    mirror = next((cache / "mirrors").glob("*.git"))
    patches = sorted(str(p) for p in (tmp / f"series-{n}").iterdir())
    check_args = ["--cache-dir", cache, "-C", ov, "check", "--json"]
    for ref in CHECKED:
        check_args += ["--sglang-ref", ref]
    apps, ams, chks, raws = [], [], [], []
    for i in range(runs):  # alternating, so both sides see the same machine
        shutil.rmtree(ov / f"sglang-{BASE}", ignore_errors=True)
        t, r = timed("--cache-dir", cache, "-C", ov, "apply", "--no-lint", "--force", "--json")
        assert r.returncode == 0, r.stderr
        apps.append(t)
        wt = tmp / f"am-{n}-{i}"
        started = time.perf_counter()
        sh("git", "--git-dir", str(mirror), "worktree", "add", "-q", "--detach", str(wt),
           f"refs/tags/{BASE}^{{commit}}")
        sh("git", "am", "-q", "--3way", *patches, cwd=wt)
        ams.append(time.perf_counter() - started)
        sh("git", "--git-dir", str(mirror), "worktree", "remove", "--force", str(wt))
        t, r = timed(*check_args)
        assert r.returncode in (0, 1), r.stderr
        chks.append(t)
        started = time.perf_counter()
        raw_check(mirror, CHECKED, ov, tmp / f"raw-{n}-{i}")
        raws.append(time.perf_counter() - started)
    app, am = statistics.median(apps), statistics.median(ams)
    chk, raw = statistics.median(chks), statistics.median(raws)
    drop_facts(cache)
    r = overlay("--cache-dir", cache, "-C", ov, "lint", "--json")
    lint_cold = json.loads(r.stdout)["seconds"]
    r = overlay("--cache-dir", cache, "-C", ov, "lint", "--json")
    lint_warm = json.loads(r.stdout)["seconds"]
    return {"units": units, "capture": cap, "format-patch": fmt, "apply": app, "am": am,
            "check": chk, "raw": raw, "lint_cold": lint_cold, "lint_warm": lint_warm}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10,50,250")
    parser.add_argument("--runs", type=int, default=3, help="medians of apply and check")
    args = parser.parse_args()
    upstream = local_upstream.build_upstream(local_upstream.DEFAULT_RELEASES)
    url = "file://" + str(upstream)
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        cache = tmp / "cache"
        rows = {}
        for n in (int(x) for x in args.sizes.split(",")):
            rows[n] = one_size(n, upstream, url, tmp, cache, args.runs)
            x = rows[n]
            print(f"{n} units ({x['units']} captured)", flush=True)
            print(f"  capture {x['capture']:7.2f} s   git format-patch {x['format-patch']:6.2f} s"
                  f"   (goal at 250: <= 3 s)")
            print(f"  apply   {x['apply']:7.2f} s   git am           {x['am']:6.2f} s"
                  f"   ratio {x['apply'] / x['am']:5.2f} (goal <= 1.5)")
            print(f"  check   {x['check']:7.2f} s   raw loop         {x['raw']:6.2f} s"
                  f"   ratio {x['check'] / x['raw']:5.2f} (goal <= 1.5, {len(CHECKED)} refs)")
            print(f"  lint    {x['lint_cold']:7.2f} s cold work, {x['lint_warm']:.2f} s warm"
                  f"   (goal <= 1 s)")
        sizes = sorted(rows)
        if len(sizes) > 1:
            lo, hi = sizes[0], sizes[-1]
            print(f"growth from {lo} to {hi} units ({hi / lo:.0f}x the units):")
            for k in ("capture", "apply", "check", "lint_cold"):
                print(f"  {k:10} {rows[hi][k] / max(rows[lo][k], 1e-6):6.1f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
