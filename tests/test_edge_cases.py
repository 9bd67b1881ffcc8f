"""Edge cases found in review: each one failed once."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import MODEL_FILE, copy_repo_overlay, git, overlay, overlay_snapshot, write_overlay

REPO = Path(__file__).resolve().parents[1]


def test_refresh_finds_a_worktree_applied_with_another_upstream(tmp_path, upstream,
                                                                 shared_cache):
    root = copy_repo_overlay(tmp_path / "ov")  # the manifest keeps GitHub's URL
    assert overlay("-C", root, "apply", "--upstream", upstream, cache=shared_cache).rc == 0
    wt = root / "sglang-v0.5.1"
    (wt / "README.md").write_text("note\n")
    git(wt, "commit", "-qam", "Add a note")
    r = overlay("-C", root, "refresh", "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    assert {u["name"]: u["action"] for u in r.json["units"]}["add-a-note"] == "new"


def test_capture_merge_base_does_not_depend_on_the_cache(tmp_path, upstream, shared_cache):
    """A fork of v0.5.2 while the overlay pins v0.5.1, with v0.5.2 fetched at depth 1."""
    fork = tmp_path / "fork"
    git(tmp_path, "clone", "-q", str(upstream), str(fork))
    git(fork, "checkout", "-q", "-b", "f", "v0.5.2")
    (fork / "python/sglang/srt/models/mine.py").write_text(MODEL_FILE)
    git(fork, "add", "-A")
    git(fork, "commit", "-qm", "mine")
    root = tmp_path / "ov"
    assert overlay("init", root, "--upstream", upstream, "--sglang-ref", "v0.5.1",
                   cache=shared_cache).rc == 0
    # the shared cache has v0.5.2 at depth 1 (as check or apply leave it)
    assert overlay("-C", root, "check", "--sglang-ref", "v0.5.2", cache=shared_cache).rc == 0
    r = overlay("-C", root, "capture", "--from", fork, "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    assert r.json["merge_base"] == git(upstream, "rev-parse", "v0.5.1^{commit}")
    manifest = (root / "overlay.toml").read_bytes()
    again = overlay("-C", root, "capture", "--from", fork, cache=shared_cache)
    # the overlay already rebuilds the fork: nothing captured twice, and a run
    # killed after it wrote (or simply repeated) ends well
    assert again.rc == 0 and "nothing to capture" in again.out, again.err
    assert (root / "overlay.toml").read_bytes() == manifest


def test_capture_from_a_tag_of_the_upstream(tmp_path, upstream, shared_cache):
    root = tmp_path / "ov"
    assert overlay("init", root, "--upstream", upstream, "--sglang-ref", "v0.5.1",
                   cache=shared_cache).rc == 0
    r = overlay("-C", root, "capture", "--from", "v0.5.1.post1", "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    assert r.json["merge_base"] == git(upstream, "rev-parse", "v0.5.1^{commit}")
    a = overlay("-C", root, "apply", "--no-lint", "--json", cache=shared_cache)
    assert a.json["tree"] == git(upstream, "rev-parse", "v0.5.1.post1^{tree}")


def test_lint_resolves_modules_of_namespace_packages(tmp_path, upstream, shared_cache):
    """sglang/srt/models has no __init__.py upstream."""
    path = "python/sglang/srt/models/nsmod.py"
    root = write_overlay(tmp_path / "ov", upstream, [
        {"name": "m", "kind": "files", "description": "m", "files": [path]},
    ], {f"overlay/{path}": "from sglang.srt.layers import activation\n"
                           "from sglang.srt.models import llama, nothere\n\n\n"
                           "class NsForCausalLM(llama.LlamaForCausalLM):\n    pass\n\n\n"
                           "EntryClass = NsForCausalLM\n"})
    r = overlay("-C", root, "lint", "--json", cache=shared_cache)
    assert [f["message"].split("`")[1] for f in r.json["findings"]] == [
        "from sglang.srt.models import nothere"]


def test_invalid_branch_name_is_bad_input(tmp_path, upstream, shared_cache):
    root = copy_repo_overlay(tmp_path / "ov", upstream)
    r = overlay("-C", root, "apply", "--branch", "bad..name", cache=shared_cache)
    assert r.rc == 2 and "bad..name" in r.err and not (root / "sglang-v0.5.1").exists()


def test_relative_paths_are_relative_to_dash_c(tmp_path, upstream, shared_cache, monkeypatch):
    root = copy_repo_overlay(tmp_path / "ov", upstream)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert overlay("-C", root, "apply", "--worktree", "wt", "--no-lint",
                   cache=shared_cache).rc == 0
    assert (root / "wt" / "python").is_dir() and not (elsewhere / "wt").exists()
    assert overlay("-C", root, "check", "--sglang-ref", "v0.5.1", "--markdown", "m.md",
                   cache=shared_cache).rc == 0
    assert (root / "m.md").exists() and not (elsewhere / "m.md").exists()


def test_check_builds_the_pinned_ref_on_its_locked_commit(tmp_path, upstream, shared_cache):
    moving = tmp_path / "moving.git"
    git(tmp_path, "clone", "-q", "--bare", str(upstream), str(moving))
    root = copy_repo_overlay(tmp_path / "ov", moving)
    assert overlay("-C", root, "apply", cache=shared_cache).rc == 0
    git(moving, "tag", "-f", "v0.5.1", "v0.5.2^{commit}")
    r = overlay("-C", root, "check", "--sglang-ref", "v0.5.1", "--json", cache=shared_cache)
    assert r.json["refs"][0]["commit"] == git(upstream, "rev-parse", "v0.5.1^{commit}")
    assert r.json["notes"][0].startswith("LOCK MISMATCH")


def test_check_refuses_like_apply_when_the_locked_commit_is_gone(tmp_path, upstream,
                                                                 shared_cache):
    """check and apply share one lock policy (Session.honour_lock): a pin whose
    locked commit its own upstream no longer has is bad input for both."""
    root = write_overlay(tmp_path / "ov", upstream, [], commit=False)
    manifest = root / "overlay.toml"
    gone = "0" * 39 + "1"
    manifest.write_text(manifest.read_text().replace(
        'ref = "v0.5.1"', f'ref = "v0.5.1"\ncommit = "{gone}"'))
    before = overlay_snapshot(root)
    for verb in ("apply", "check"):
        r = overlay("-C", root, verb, "--sglang-ref", "v0.5.1", cache=shared_cache)
        assert r.rc == 2, (verb, r.err)
        assert f"the locked commit {gone} can no longer be fetched" in r.err
        assert len(r.err.strip().splitlines()) == 1
    assert overlay_snapshot(root) == before


def test_test_rejects_an_undeclared_model(tmp_path, upstream, shared_cache):
    root = copy_repo_overlay(tmp_path / "ov", upstream)
    assert overlay("-C", root, "apply", "--no-lint", cache=shared_cache).rc == 0
    r = overlay("-C", root, "test", "--model", "nobody/nothing", "--dry-run", cache=shared_cache)
    assert r.rc == 2 and "nobody/nothing" in r.err
    r = overlay("-C", root, "test", "--standin-suite", REPO / "README.md", cache=shared_cache)
    assert r.rc == 2 and "--standin-suite" in r.err


def test_a_file_where_upstream_has_a_file_for_a_directory_is_a_conflict(tmp_path, upstream,
                                                                        shared_cache):
    root = write_overlay(tmp_path / "ov", upstream, [
        {"name": "x", "kind": "files", "description": "x", "files": ["README.md/x.py"]},
    ], {"overlay/README.md/x.py": "x = 1\n"})
    r = overlay("-C", root, "apply", "--json", cache=shared_cache)
    assert r.rc == 1
    assert r.json["units"][0]["status"] == "conflict"
    assert "upstream has a file at README.md" in r.json["units"][0]["detail"]


def test_refresh_refuses_an_unsquashed_fixup(tmp_path, upstream, shared_cache):
    root = copy_repo_overlay(tmp_path / "ov", upstream)
    assert overlay("-C", root, "apply", cache=shared_cache).rc == 0
    wt = root / "sglang-v0.5.1"
    (wt / "README.md").write_text("x\n")
    unit = git(wt, "log", "--format=%H", "--grep=Overlay-Unit: opt-model", "-1")
    git(wt, "commit", "-qa", f"--fixup={unit}")
    r = overlay("-C", root, "refresh", cache=shared_cache)
    assert r.rc == 2 and "autosquash" in r.err


@pytest.mark.parametrize("verb", [["upgrade", "--to", "v9"], ["pr", "--unit", "opt-model",
                                                              "--base", "v9"],
                                  ["capture", "--from", "v9"]])
def test_unknown_refs_on_every_verb_are_bad_input(verb, tmp_path, upstream, shared_cache):
    root = copy_repo_overlay(tmp_path / "ov", upstream)
    r = overlay("-C", root, *verb, cache=shared_cache)
    assert r.rc == 2 and "'v9'" in r.err and "--sglang-ref" not in r.err
