#!/usr/bin/env python3
"""How long `overlay build` takes next to what it wraps, measured side by side.

In one run, interleaved round by round (so load on the machine hits every
contender alike), on SGLang v0.5.1 from scripts/local_upstream.py and this
repository's own overlay:

  overlay build            `overlay build --json` (apply units, export python/,
                           PyPA build without isolation, reproducible rewrite)
  raw pip wheel            `pip wheel --no-deps --no-build-isolation` of the same
                           exported, patched python/ tree (a fresh copy each round)
  raw python -m build      `python -m build --wheel --no-isolation` of that tree
  overlay build --repack   the same overlay onto upstream's official 0.5.1 wheel

Each contender runs as its own process, as a user would run it. The goal is
overlay build / raw pip wheel <= 1.1 (medians). Also checks that every
`overlay build` round produced the same wheel bytes.

    python benchmarks/bench_build.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tools"))

import local_upstream  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT / "tools"), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
GOAL = 1.1


def sh(*args, cwd=None, env=ENV) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, check=True,
                          capture_output=True, text=True)


def timed(*args, cwd=None) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    proc = sh(*args, cwd=cwd)
    return time.perf_counter() - t, proc


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_AUTHOR_NAME": "b",
           "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}
    return sh("git", *args, cwd=cwd, env=env).stdout.strip()


def official_wheel() -> Path:
    cache = local_upstream.cache_dir() / "wheels"
    path = cache / "sglang-0.5.1-py3-none-any.whl"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        sh(sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "sglang==0.5.1", "-d", cache)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    upstream = local_upstream.build_upstream(local_upstream.DEFAULT_RELEASES)
    wheel = official_wheel()
    work = Path(tempfile.mkdtemp(prefix="bench-build-"))
    try:
        ov = work / "ov"
        ov.mkdir()
        shutil.copy2(ROOT / "overlay.toml", ov)
        shutil.copytree(ROOT / "overlay", ov / "overlay")
        shutil.copytree(ROOT / "patches", ov / "patches")
        shutil.copytree(ROOT / "variants", ov / "variants")
        git(ov, "init", "-q")
        git(ov, "add", "-A")
        git(ov, "commit", "-q", "-m", "overlay")
        cache = work / "cache"
        overlay = [sys.executable, "-m", "sglang_overlay", f"--cache-dir={cache}", "-C", ov,
                   "build", "--upstream", upstream, "--json"]

        # warm-up (fetches the mirror, fills OS caches; not measured)
        warm = json.loads(sh(*overlay, "--out", work / "warm").stdout)
        assert warm["isolation"] == "none", warm
        # the same patched tree, exported once, for the raw builds
        from sglang_overlay.cli import Options
        from sglang_overlay.commands import open_overlay

        _m, session = open_overlay(Options(directory=ov, cache_dir=cache), str(upstream))
        build = session.build_ref("v0.5.1")
        pristine = work / "tree"
        session.export(build.head, pristine, ("python",))
        sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
           "-w", work / "warm-raw", pristine / "python")

        times: dict[str, list[float]] = {k: [] for k in (
            "overlay build", "raw pip wheel", "raw python -m build", "overlay build --repack")}
        digests, repack_digests = set(), set()
        for i in range(args.rounds):
            t, proc = timed(*overlay, "--out", work / f"b{i}")
            times["overlay build"].append(t)
            digests.add(json.loads(proc.stdout)["sha256"])

            tree = work / f"raw{i}"
            shutil.copytree(pristine, tree)
            t, _ = timed(sys.executable, "-m", "pip", "wheel", "--no-deps",
                         "--no-build-isolation", "-w", work / f"w{i}", tree / "python")
            times["raw pip wheel"].append(t)

            tree2 = work / f"rawb{i}"
            shutil.copytree(pristine, tree2)
            t, _ = timed(sys.executable, "-m", "build", "--wheel", "--no-isolation",
                         "--outdir", work / f"pb{i}", tree2 / "python")
            times["raw python -m build"].append(t)

            t, proc = timed(*overlay, "--repack", wheel, "--out", work / f"r{i}")
            times["overlay build --repack"].append(t)
            repack_digests.add(json.loads(proc.stdout)["sha256"])
            print(f"round {i + 1}/{args.rounds}: " + ", ".join(
                f"{k} {v[-1]:.2f}s" for k, v in times.items()), file=sys.stderr)

        med = {k: statistics.median(v) for k, v in times.items()}
        width = max(len(k) for k in times)
        print(f"sglang v0.5.1 + this repository's overlay; {args.rounds} interleaved rounds; "
              f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}")
        print(f"{'contender'.ljust(width)}  median    min       max")
        for k, v in times.items():
            print(f"{k.ljust(width)}  {med[k]:6.2f} s  {min(v):6.2f} s  {max(v):6.2f} s")
        print("")
        ratio = med["overlay build"] / med["raw pip wheel"]
        print(f"overlay build / raw pip wheel        = {ratio:.2f}  "
              f"(goal <= {GOAL}: {'met' if ratio <= GOAL else 'NOT met'})")
        print(f"overlay build / raw python -m build  = "
              f"{med['overlay build'] / med['raw python -m build']:.2f}")
        print(f"repack / source build                = "
              f"{med['overlay build --repack'] / med['overlay build']:.2f}")
        print(f"reproducible: {len(digests)} distinct source wheel hash(es), "
              f"{len(repack_digests)} distinct repack hash(es) over {args.rounds} rounds")
        return 0 if len(digests) == 1 and len(repack_digests) == 1 else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
