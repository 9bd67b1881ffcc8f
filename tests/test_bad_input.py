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

    return {
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


CASES = ["unknown ref", "upstream not a git repository", "absolute path", "path climbing out",
         "symlink out of overlay/", "not a patch", "abbreviated index", "unit listed twice",
         "unit file missing", "unknown key", "wrong type", "unknown kind", "toml syntax"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, tmp_path, upstream, shared_cache):
    root = write_overlay(tmp_path / "ov", upstream, good_units(), good_files(upstream))
    breaker, args, named = breakers(upstream, tmp_path)[case]
    if breaker:
        breaker(root)
    before = tree_snapshot(root)
    r = overlay("-C", root, "apply", *args, cache=shared_cache)
    assert r.rc == 2, (r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    assert named in lines[0]
    assert "(fix: " in lines[0]
    assert r.out == ""
    assert tree_snapshot(root) == before  # no worktree, no lock, no state
    assert not (root / "sglang-v0.5.1").exists() and not (root / "sglang-v9.9.9").exists()


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
