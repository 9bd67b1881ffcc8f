"""Faults: concurrent applies, a cache deleted under a worktree.

(kill -9 at each step is tested by construction in test_crashpoints.py.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import realcases
from helpers import MODEL_FILE, git, overlay, overlay_proc, write_overlay

MODEL = "python/sglang/srt/models/my_llama.py"


def make(root: Path, upstream: Path, work: Path, marker: str = "") -> Path:
    return write_overlay(root, upstream, [
        {"name": "my-model", "kind": "files", "description": "model", "files": [MODEL]},
        {"name": "import-os", "kind": "patch", "description": "os",
         "patch": "patches/import-os.patch"},
    ], {f"overlay/{MODEL}": MODEL_FILE + marker,
        "patches/import-os.patch": realcases.three_way_patch(upstream, work)})


def test_two_applies_at_once_on_the_same_cache(tmp_path, upstream):
    work = tmp_path / "work"
    work.mkdir()
    cache = tmp_path / "cache"
    a = make(tmp_path / "a", upstream, work)
    b = make(tmp_path / "b", upstream, work, "# b\n")
    procs = [overlay_proc("-C", a, "apply", "--sglang-ref", "v0.5.3", "--json", cache=cache),
             overlay_proc("-C", b, "apply", "--sglang-ref", "v0.5.3", "--json", cache=cache),
             overlay_proc("-C", a, "apply", "--sglang-ref", "v0.5.3", "--json", cache=cache)]
    outs = [p.communicate() for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err.decode()
    trees = [__import__("json").loads(out)["tree"] for out, _ in outs]
    assert trees[0] == trees[2] != trees[1]
    assert git(a / "sglang-v0.5.3", "rev-parse", "HEAD^{tree}") == trees[0]
    assert git(b / "sglang-v0.5.3", "rev-parse", "HEAD^{tree}") == trees[1]


def test_a_worktree_whose_cache_was_deleted_is_refused_then_set_aside(tmp_path, upstream):
    work = tmp_path / "work"
    work.mkdir()
    root = make(tmp_path / "ov", upstream, work)
    cache = tmp_path / "cache"
    assert overlay("-C", root, "apply", "--no-lint", cache=cache).rc == 0
    wt = root / "sglang-v0.5.1"
    (wt / "my-notes.txt").write_text("keep me\n")
    shutil.rmtree(cache)  # the user cleared ~/.cache
    r = overlay("-C", root, "apply", "--no-lint", cache=cache)
    assert r.rc == 2 and "cache that is gone" in r.err and len(r.err.strip().splitlines()) == 1
    forced = overlay("-C", root, "apply", "--no-lint", "--force", "--json", cache=cache)
    assert forced.rc == 0, forced.err
    assert (root / "sglang-v0.5.1.orphaned-1" / "my-notes.txt").read_text() == "keep me\n"
    assert git(wt, "rev-parse", "HEAD^{tree}") == forced.json["tree"]
