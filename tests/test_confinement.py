"""Nothing outside the allowed roots (issue 8, section 1).

Each test builds a hostile repository layout in a temporary directory, puts a
sentinel outside the overlay repository, runs the verb, and checks the verb
exits 2 naming the offending path while the sentinel is untouched.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from helpers import MODEL_FILE, git, overlay, tree_snapshot, write_overlay

MODEL = "python/sglang/srt/models/my_llama.py"


def good(root: Path, upstream: Path) -> Path:
    from realcases import upstreamed_patch

    return write_overlay(root, upstream, [
        {"name": "my-model", "kind": "files", "description": "model", "files": [MODEL]},
        {"name": "fix", "kind": "patch", "description": "fix", "patch": "patches/fix.patch"},
    ], {f"overlay/{MODEL}": MODEL_FILE, "patches/fix.patch": upstreamed_patch(upstream)})


def outside(tmp_path: Path) -> Path:
    """A directory outside the overlay with files the tool must never touch."""
    d = tmp_path / "outside"
    (d / "sub").mkdir(parents=True)
    (d / "sentinel.txt").write_text("keep me\n")
    (d / "opt.py").write_text("# not the overlay's\n")
    return d


def refused(r, named: str) -> None:
    assert r.rc == 2, (r.rc, r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    assert named in lines[0], lines[0]
    assert "(fix: " in lines[0]


def as_symlink(root: Path, name: str, away: Path) -> None:
    """Make root/name a committed symlink to away (its content moved there)."""
    src = root / name
    if src.is_dir():
        for p in src.iterdir():
            shutil.move(str(p), away / p.name)
        src.rmdir()
    os.symlink(away, src)
    git(root, "add", "-A")
    git(root, "commit", "-qm", f"{name} is a link")


def lock(root: Path, upstream: Path) -> None:
    """Lock the pin, so a first run has no reason to write overlay.toml."""
    sha = git(upstream, "rev-parse", "v0.5.1^{commit}")
    p = root / "overlay.toml"
    p.write_text(p.read_text().replace('ref = "v0.5.1"', f'ref = "v0.5.1"\ncommit = "{sha}"'))
    git(root, "commit", "-qam", "lock")


# 1 -------------------------------------------------------------------------

def test_a_committed_journal_is_refused_and_deletes_nothing(tmp_path, upstream, shared_cache):
    away = outside(tmp_path)
    root = good(tmp_path / "ov", upstream)
    (root / ".overlay").mkdir()
    (root / ".overlay" / "journal.json").write_text(json.dumps(
        [{"op": "delete", "path": str(away / "sentinel.txt")}]))
    git(root, "add", "-f", ".overlay/journal.json")
    git(root, "commit", "-qm", "hostile journal")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(root), str(clone))
    before = tree_snapshot(away), tree_snapshot(clone)
    r = overlay("-C", clone, "lint", cache=shared_cache)
    refused(r, ".overlay/journal.json")
    assert (tree_snapshot(away), tree_snapshot(clone)) == before


def test_an_untracked_journal_naming_paths_outside_is_refused(tmp_path, upstream, shared_cache):
    away = outside(tmp_path)
    root = good(tmp_path / "ov", upstream)
    state = root / ".overlay"
    state.mkdir()
    (state / ".gitignore").write_text("*\n")
    hostile = {
        "delete absolute": [{"op": "delete", "path": str(away / "sentinel.txt")}],
        "delete climbing": [{"op": "delete", "path": "../outside/sentinel.txt"}],
        "write outside": [{"op": "write", "path": "overlay/x.py",
                           "staged": str(away / "opt.py")}],
        "write into .git": [{"op": "write", "path": ".git/hooks/post-checkout",
                             "staged": ".overlay/staging/0000"}],
        "not a journal": {"op": "delete"},
        "staged link": [{"op": "write", "path": "overlay.toml",
                         "staged": ".overlay/staging/0000"}],
    }
    (state / "staging").mkdir()
    os.symlink(away / "opt.py", state / "staging" / "0000")
    for case, ops in hostile.items():
        (state / "journal.json").write_text(json.dumps(ops))
        before = tree_snapshot(away), tree_snapshot(root)
        r = overlay("-C", root, "lint", cache=shared_cache)
        refused(r, "journal.json")
        assert (tree_snapshot(away), tree_snapshot(root)) == before, case


# 2-5 -----------------------------------------------------------------------

def test_overlay_dir_linked_outside_is_refused_by_upgrade_and_refresh(tmp_path, upstream,
                                                                      shared_cache):
    away = outside(tmp_path)
    root = good(tmp_path / "ov", upstream)
    as_symlink(root, "overlay", away)
    before = tree_snapshot(away)
    r = overlay("-C", root, "upgrade", "--to", "v0.5.3", "--yes", cache=shared_cache)
    refused(r, str(root / "overlay"))
    r = overlay("-C", root, "refresh", cache=shared_cache)
    refused(r, str(root / "overlay"))
    assert tree_snapshot(away) == before
    assert not (root / "sglang-v0.5.3").exists()


@pytest.mark.parametrize("name", ["patches", ".overlay"])
def test_owned_dir_linked_outside_is_refused_by_upgrade(name, tmp_path, upstream, shared_cache):
    away = outside(tmp_path)
    root = good(tmp_path / "ov", upstream)
    if name == ".overlay":  # never committed: a link made in the checkout
        os.symlink(away, root / name)
    else:
        as_symlink(root, name, away)
    before = tree_snapshot(away)
    r = overlay("-C", root, "upgrade", "--to", "v0.5.3", "--yes", cache=shared_cache)
    refused(r, str(root / name))
    assert tree_snapshot(away) == before and (away / "sub").is_dir()


def test_a_committed_dist_link_gets_no_wheel(tmp_path, upstream, shared_cache):
    away = outside(tmp_path)
    root = good(tmp_path / "ov", upstream)
    as_symlink(root, "dist", away)
    before = tree_snapshot(away)
    r = overlay("-C", root, "build", cache=shared_cache)
    refused(r, str(root / "dist"))
    assert tree_snapshot(away) == before


# 6 -------------------------------------------------------------------------

def link_patch(target: str) -> bytes:
    """A patch that adds python/sglang/leak.py as a symlink to target."""
    import subprocess

    blob = subprocess.run(["git", "hash-object", "--stdin"], input=target.encode(),
                          capture_output=True, check=True).stdout.decode().strip()
    return (
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
        "From: T <t@t>\nSubject: [PATCH] leak\n\n---\n"
        "diff --git a/python/sglang/leak.py b/python/sglang/leak.py\n"
        "new file mode 120000\n"
        f"index 0000000000000000000000000000000000000000..{blob}\n"
        "--- /dev/null\n+++ b/python/sglang/leak.py\n"
        "@@ -0,0 +1 @@\n"
        f"+{target}\n\\ No newline at end of file\n").encode()


def test_a_patch_adding_a_link_out_of_the_tree_builds_no_wheel(tmp_path, upstream,
                                                              shared_cache):
    away = outside(tmp_path)
    root = write_overlay(tmp_path / "ov", upstream, [
        {"name": "leak", "kind": "patch", "description": "leak", "patch": "patches/leak.patch"},
    ], {"patches/leak.patch": link_patch(str(away / "sentinel.txt"))})
    lock(root, upstream)
    before = tree_snapshot(root)
    r = overlay("-C", root, "build", cache=shared_cache)
    refused(r, "python/sglang/leak.py")
    assert "'leak'" in r.err
    assert tree_snapshot(root) == before and not (root / "dist").exists()
    # relative links that stay inside the tree are fine
    (root / "patches" / "leak.patch").write_bytes(link_patch("__init__.py"))
    r = overlay("-C", root, "apply", "--no-lint", cache=shared_cache)
    assert r.rc == 0, r.err
    assert os.readlink(root / "sglang-v0.5.1" / "python/sglang/leak.py") == "__init__.py"
