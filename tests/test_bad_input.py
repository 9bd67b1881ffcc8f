"""Bad input: one line on stderr naming the file, key or ref and the fix,
exit 2, and nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import MODEL_FILE, overlay, tree_snapshot, write_overlay

MODEL = "python/sglang/srt/models/my_llama.py"


def good_units():
    return [
        {"name": "my-model", "kind": "files", "description": "model", "files": [MODEL]},
        {"name": "fix", "kind": "patch", "description": "fix", "patch": "patches/fix.patch"},
    ]


def good_files(upstream: Path) -> dict:
    from realcases import upstreamed_patch

    return {f"overlay/{MODEL}": MODEL_FILE, "patches/fix.patch": upstreamed_patch(upstream)}


def breakers(upstream: Path, tmp: Path):
    """name -> (how to break a good overlay, extra CLI args, text the line must name)."""
    not_git = tmp / "not-a-repo"
    not_git.mkdir()

    def edit_toml(old, new):
        def f(root):
            p = root / "overlay.toml"
            text = p.read_text()
            assert old in text
            p.write_text(text.replace(old, new, 1))
        return f

    def symlink(root):
        os.symlink("/etc/passwd", root / "overlay" / "python" / "passwd")

    def not_a_patch(root):
        (root / "patches" / "fix.patch").write_text("this is not a patch\n")

    def abbreviated(root):
        p = root / "patches" / "fix.patch"
        lines = p.read_text().splitlines(keepends=True)
        p.write_text("".join(
            line[:6] + line[6:13] + ".." + line.split("..")[1][:7] + line[line.rindex(" "):]
            if line.startswith("index ") else line for line in lines))

    def listed_twice(root):
        p = root / "overlay.toml"
        p.write_text(p.read_text() + '\n[[unit]]\nname = "fix"\nkind = "patch"\n'
                     'description = "again"\npatch = "patches/fix.patch"\n')

    def missing_file(root):
        (root / "overlay" / MODEL).unlink()

    def symlink_loop(root):
        os.symlink("loop.py", root / "overlay" / "python" / "sglang" / "loop.py")
        edit_toml(f'files = ["{MODEL}"]',
                  f'files = ["{MODEL}", "python/sglang/loop.py"]')(root)

    def not_utf8(root):
        p = root / "overlay.toml"
        p.write_bytes(p.read_bytes().replace(b"[upstream]", b"# caf\xe9\n[upstream]", 1))

    def patch_under_git(root):
        (root / "patches" / "fix.patch").write_bytes(GIT_HOOK_PATCH)

    def files_in_git(rel):
        def f(root):
            p = root / "overlay" / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("echo owned\n")
            edit_toml(f'files = ["{MODEL}"]', f'files = ["{MODEL}", "{rel}"]')(root)
        return f

    def in_the_way(root):
        (root / "sglang-v0.5.1").mkdir()
        (root / "sglang-v0.5.1" / "mine.txt").write_text("not a worktree\n")

    return {
        # issue 8, items 13-19
        "symlink loop in a files unit": (symlink_loop, [], "overlay/python/sglang/loop.py"),
        "overlay.toml not UTF-8": (not_utf8, [], "overlay.toml: line 1: not UTF-8"),
        "files under .git/": (files_in_git(".git/hooks/post-checkout"), [],
                              ".git/hooks/post-checkout"),
        "files under a nested .git/": (files_in_git("python/.git/config"), [],
                                       "python/.git/config"),
        "patch under .git/": (patch_under_git, [], ".git/hooks/post-checkout"),
        "worktree on a read-only file system": (None, ["--worktree", "/proc/overlay-test/wt"],
                                                "/proc"),
        "worktree inside overlay/": (None, ["--worktree", "overlay/wt"], "inside overlay/"),
        "worktree inside patches/": (None, ["--worktree", "patches/wt"], "inside patches/"),
        "worktree inside .overlay/": (None, ["--worktree", ".overlay/wt"], "inside .overlay/"),
        "worktree inside .git": (None, ["--worktree", ".git/wt"], "inside .git/"),
        "bad --branch": (None, ["--branch", "no..dots"], "no..dots"),
        "a directory in the way": (in_the_way, [], "sglang-v0.5.1"),
        # earlier ones
        "unknown ref": (None, ["--sglang-ref", "v9.9.9"], "v9.9.9"),
        "upstream not a git repository": (None, ["--upstream", str(not_git)], str(not_git)),
        "absolute path": (edit_toml(f'files = ["{MODEL}"]', 'files = ["/etc/passwd"]'), [],
                          "/etc/passwd"),
        "path climbing out": (edit_toml('patch = "patches/fix.patch"', 'patch = "../fix.patch"'),
                              [], "../fix.patch"),
        "symlink out of overlay/": (symlink, [], "overlay/python/passwd"),
        "not a patch": (not_a_patch, [], "patches/fix.patch"),
        "abbreviated index": (abbreviated, [], "full index"),
        "unit listed twice": (listed_twice, [], "'fix'"),
        "unit file missing": (missing_file, [], f"overlay/{MODEL}"),
        "unknown key": (edit_toml('kind = "files"', 'kind = "files"\ncolour = "red"'), [],
                        "colour"),
        "wrong type": (edit_toml(f'files = ["{MODEL}"]', f'files = "{MODEL}"'), [],
                       "'my-model'.files"),
        "unknown kind": (edit_toml('kind = "patch"', 'kind = "pach"'), [], "pach"),
        "toml syntax": (edit_toml("[upstream]", "[upstream"), [], "overlay.toml"),
    }


GIT_HOOK_PATCH = (
    b"From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
    b"From: T <t@t>\nSubject: [PATCH] hook\n\n---\n"
    b"diff --git a/.git/hooks/post-checkout b/.git/hooks/post-checkout\n"
    b"new file mode 100755\n"
    b"index 0000000000000000000000000000000000000000..d0d9a4d8a3e1e0e8e1d5f1b2e39ce2c7f1a0b1c2\n"
    b"--- /dev/null\n+++ b/.git/hooks/post-checkout\n@@ -0,0 +1 @@\n+echo owned\n")

NEW_CASES = ["symlink loop in a files unit", "overlay.toml not UTF-8", "files under .git/",
             "files under a nested .git/", "patch under .git/",
             "worktree on a read-only file system", "worktree inside overlay/",
             "worktree inside patches/", "worktree inside .overlay/", "worktree inside .git",
             "bad --branch", "a directory in the way"]
CASES = NEW_CASES + ["unknown ref", "upstream not a git repository", "absolute path", "path climbing out",
         "symlink out of overlay/", "not a patch", "abbreviated index", "unit listed twice",
         "unit file missing", "unknown key", "wrong type", "unknown kind", "toml syntax"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, tmp_path, upstream):
    root = write_overlay(tmp_path / "ov", upstream, good_units(), good_files(upstream))
    breaker, args, named = breakers(upstream, tmp_path)[case]
    if breaker:
        breaker(root)
    before = tree_snapshot(root)
    cache = tmp_path / "cache"  # refused before the cache is needed: it stays absent
    r = overlay("-C", root, "apply", *args, cache=cache)
    assert not cache.exists(), sorted(str(p.relative_to(cache)) for p in cache.rglob("*"))
    assert r.rc == 2, (r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    assert named in lines[0]
    assert "(fix: " in lines[0]
    assert r.out == ""
    assert tree_snapshot(root) == before  # no worktree, no lock, no state
    assert not (root / "sglang-v0.5.1" / ".git").exists() and not (root / "sglang-v9.9.9").exists()


def test_the_good_overlay_used_above_applies(tmp_path, upstream, shared_cache):
    root = write_overlay(tmp_path / "ov", upstream, good_units(), good_files(upstream))
    r = overlay("-C", root, "apply", "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    # so each breaker above is what makes its case bad input
    assert {u["name"]: u["status"] for u in r.json["units"]} == {
        "my-model": "applied", "fix": "applied"}
    assert (root / "sglang-v0.5.1" / MODEL).read_text() == MODEL_FILE


def test_usage_error_is_exit_2(tmp_path):
    r = overlay("apply", "--no-such-flag")
    assert r.rc == 2
    r = overlay("-C", tmp_path, "apply")
    assert r.rc == 2 and "overlay.toml" in r.err and "fix:" in r.err


def test_a_read_only_cache_is_refused_before_any_work(tmp_path, upstream):
    root = write_overlay(tmp_path / "ov", upstream, good_units(), good_files(upstream))
    before = tree_snapshot(root)
    for verb in (["apply"], ["lint"], ["check"], ["build"]):
        r = overlay("--cache-dir=/proc/overlay-test/cache", "-C", root, *verb)
        assert r.rc == 2, (verb, r.err)
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and "--cache-dir" in lines[0] and "/proc" in lines[0], r.err
    assert tree_snapshot(root) == before


def test_a_corrupt_pack_in_the_mirror_is_named_and_repaired(tmp_path, upstream):
    cache = tmp_path / "cache"
    first = write_overlay(tmp_path / "one", upstream, good_units(), good_files(upstream))
    assert overlay("-C", first, "apply", "--no-lint", cache=cache).rc == 0

    def corrupt() -> Path:
        packs = sorted((cache / "mirrors").glob("*.git/objects/pack/*.pack"),
                       key=lambda p: p.stat().st_size)
        data = bytearray(packs[-1].read_bytes())
        middle = len(data) // 2
        data[middle:middle + 64] = bytes(64)
        packs[-1].write_bytes(bytes(data))
        return packs[-1].parents[2]

    mirror = corrupt()
    second = write_overlay(tmp_path / "two", upstream, good_units(), good_files(upstream))
    r = overlay("-C", second, "apply", "--no-lint", cache=cache)
    assert r.rc == 0, r.err
    assert str(mirror) in r.err and "corrupt" in r.err
    assert (second / "sglang-v0.5.1" / MODEL).read_text() == MODEL_FILE
    r = overlay("-C", first, "apply", "--no-lint", cache=cache)  # works on the repaired mirror
    assert r.rc == 0 and r.err == "", r.err
    # check (which used to say "check the network") repairs it the same way
    corrupt()
    r = overlay("-C", first, "check", "--sglang-ref", "v0.5.1", "--jobs", "1", cache=cache)
    assert r.rc == 0, r.err
    assert str(mirror) in r.err and "corrupt" in r.err


def test_an_unknown_ref_leaves_nothing_in_the_cache_under_any_verb(tmp_path, upstream):
    root = write_overlay(tmp_path / "ov", upstream, good_units(), good_files(upstream))
    before = tree_snapshot(root)
    cache = tmp_path / "cache"
    for verb in (["lint", "--sglang-ref", "v9.9.9"], ["check", "--sglang-ref", "v9.9.9"],
                 ["build", "--sglang-ref", "v9.9.9"], ["upgrade", "--to", "v9.9.9", "--yes"],
                 ["capture", "--from", str(upstream), "--base", "v9.9.9"],
                 ["pr", "--unit", "my-model", "--base", "v9.9.9"]):
        r = overlay("-C", root, *verb, cache=cache)
        assert r.rc == 2 and "v9.9.9" in r.err and len(r.err.strip().splitlines()) == 1, \
            (verb, r.err)
        assert not cache.exists(), (verb, sorted(p.name for p in cache.rglob("*")))
    assert tree_snapshot(root) == before


def test_build_refuses_an_unwritable_out_before_building(tmp_path, upstream):
    root = write_overlay(tmp_path / "ov", upstream, good_units(), good_files(upstream))
    (root / "dist").write_text("a file, not a directory\n")
    cache = tmp_path / "cache"
    before = tree_snapshot(root)
    for args in ([], ["--out", "/proc/overlay-test/dist"]):
        r = overlay("-C", root, "build", *args, cache=cache)
        assert r.rc == 2 and len(r.err.strip().splitlines()) == 1, r.err
        assert ("dist" in r.err) and "--out" in r.err
    assert tree_snapshot(root) == before and not cache.exists()


def test_a_damaged_state_record_is_named_not_a_crash(tmp_path, upstream):
    root = write_overlay(tmp_path / "ov", upstream, good_units(), good_files(upstream))
    (root / ".overlay").mkdir()
    (root / ".overlay" / ".gitignore").write_text("*\n")
    for content in (b"{not json", b"\xff\xfe", b'["a list"]'):
        (root / ".overlay" / "state.json").write_bytes(content)
        before = tree_snapshot(root)
        for verb in (["apply"], ["refresh", "--abort"], ["upgrade", "--to", "v0.5.3"]):
            r = overlay("-C", root, *verb, cache=tmp_path / "cache")
            assert r.rc == 2 and len(r.err.strip().splitlines()) == 1, (verb, r.err)
            assert ".overlay/state.json" in r.err and "(fix: delete" in r.err
        assert tree_snapshot(root) == before
