"""Faults: kill -9 at any moment during apply, and concurrent applies."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import pytest

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


def expected_tree(tmp_path: Path, upstream: Path, work: Path, ref: str, marker: str) -> str:
    ref_root = make(tmp_path / f"reference{abs(hash(marker))}", upstream, work, marker)
    r = overlay("-C", ref_root, "apply", "--no-lint", "--sglang-ref", ref, "--json",
                cache=tmp_path / "reference-cache")
    assert r.rc == 0, r.err
    return r.json["tree"]


def assert_consistent(root: Path, ref: str, good_trees: set[str]) -> None:
    """No half-applied branch or worktree, whatever moment the kill hit."""
    target = root / f"sglang-{ref}"
    if target.exists():
        assert git(target, "rev-parse", "HEAD^{tree}") in good_trees
        assert git(target, "status", "--porcelain") == ""
        branch = git(target, "for-each-ref", "--format=%(objectname)",
                     f"refs/heads/overlay/{ref}")
        if branch:
            assert git(target, "rev-parse", f"{branch}^{{tree}}") in good_trees


@pytest.mark.parametrize("phase", ["cold", "update"])
def test_kill_9_at_any_moment_then_rerun_succeeds(phase, tmp_path, upstream):
    work = tmp_path / "work"
    work.mkdir()
    ref = "v0.5.3"  # needs a 3-way merge, so the base commit is fetched too
    cache = tmp_path / "cache"
    root = make(tmp_path / "ov", upstream, work)
    old_tree = expected_tree(tmp_path, upstream, work, ref, "")
    good = {old_tree}
    if phase == "update":
        assert overlay("-C", root, "apply", "--no-lint", "--sglang-ref", ref,
                       cache=cache).rc == 0
        (root / "overlay" / MODEL).write_text(MODEL_FILE + "# changed\n")
        good.add(expected_tree(tmp_path, upstream, work, ref, "# changed\n"))
    for delay in (0.15, 0.3, 0.45, 0.6, 0.8, 1.0, 1.3, 1.7):
        if phase == "cold":  # nothing yet: no cache, and no worktree that used one
            shutil.rmtree(cache, ignore_errors=True)
            shutil.rmtree(root / f"sglang-{ref}", ignore_errors=True)
        proc = overlay_proc("-C", root, "apply", "--no-lint", "--sglang-ref", ref, cache=cache)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert_consistent(root, ref, good)
    r = overlay("-C", root, "apply", "--no-lint", "--sglang-ref", ref, "--json", cache=cache)
    assert r.rc == 0, r.err
    final = (root / "overlay" / MODEL).read_text()
    want = old_tree if final == MODEL_FILE else (good - {old_tree}).pop()
    assert r.json["tree"] == want
    assert git(root / f"sglang-{ref}", "rev-parse", "HEAD^{tree}") == want
    assert git(root / f"sglang-{ref}", "symbolic-ref", "HEAD") == f"refs/heads/overlay/{ref}"
    assert not [p for p in root.iterdir() if ".overlay-tmp-" in p.name]


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
