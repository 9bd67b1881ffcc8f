"""`overlay refresh` (writing worktree edits back) and `overlay capture` (a fork)."""

from __future__ import annotations

import pytest

from helpers import (amend, copy_repo_overlay, git, manifest_units, overlay,
                     overlay_snapshot)
from sglang_overlay.units import edit

PS = "python/sglang/srt/distributed/parallel_state.py"
PATCH = "patches/parallel-state-reuse.patch"


def applied(tmp_path, upstream, cache):
    root = copy_repo_overlay(tmp_path / "ov", upstream)
    r = overlay("-C", root, "apply", "--json", cache=cache)
    assert r.rc == 0, r.err
    git(root, "add", "-A")
    git(root, "commit", "-qm", "lock")
    return root, root / "sglang-v0.5.1", r.json


def test_refresh_with_no_change_is_byte_stable(tmp_path, upstream, shared_cache):
    root, wt, _ = applied(tmp_path, upstream, shared_cache)
    r = overlay("-C", root, "refresh", "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    assert r.json["written"] == []
    assert {u["action"] for u in r.json["units"]} == {"unchanged"}
    assert git(root, "status", "--porcelain") == ""


def test_refresh_writes_amended_units_and_new_commits_back(tmp_path, upstream, shared_cache):
    root, wt, first = applied(tmp_path, upstream, shared_cache)
    old_patch = (root / PATCH).read_bytes()

    def more_logging():
        p = wt / PS
        p.write_text(p.read_text().replace(
            'logger.info("Reusing the initialized world group")',
            'logger.info("Reusing the initialized world group")  # noqa'))

    amend(wt, "parallel-state-reuse", more_logging)

    def opt_docstring():
        p = wt / "python/sglang/srt/models/opt.py"
        p.write_text(p.read_text().replace('"""Inference-only OPT model', '"""Native OPT model'))

    amend(wt, "opt-model", opt_docstring)
    (wt / "python/sglang/srt/models/extra_model.py").write_text("EntryClass = []\n")
    git(wt, "add", "-A")
    git(wt, "commit", "-qm", "Add an extra model module")
    (wt / "python/sglang/srt/utils.py").write_text(
        (wt / "python/sglang/srt/utils.py").read_text() + "\n# a local note\n")
    git(wt, "commit", "-qam", "utils: keep a local note\n\nWhy it matters.")
    r = overlay("-C", root, "refresh", "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    actions = {u["name"]: u["action"] for u in r.json["units"]}
    assert actions == {"opt-model": "updated", "reuse-distributed-test": "unchanged",
                       "parallel-state-reuse": "updated",
                       "expert-location-reset": "unchanged", "opt-test-case": "unchanged",
                       "add-an-extra-model-module": "new", "utils-keep-a-local-note": "new"}
    new_patch = (root / PATCH).read_bytes()
    assert b'world group")  # noqa' in new_patch
    # the header (what, why, status) is kept byte for byte
    assert new_patch[: new_patch.index(b"diff --git")] == old_patch[: old_patch.index(b"diff --git")]
    assert '"""Native OPT model' in (root / "overlay/python/sglang/srt/models/opt.py").read_text()
    assert (root / "overlay/python/sglang/srt/models/extra_model.py").exists()
    note = (root / "patches/utils-keep-a-local-note.patch").read_text()
    assert "Subject: utils: keep a local note" in note and "Why it matters." in note
    units = manifest_units(root)
    assert units["utils-keep-a-local-note"]["kind"] == "patch"
    assert units["utils-keep-a-local-note"]["patch"] == "patches/utils-keep-a-local-note.patch"
    assert units["add-an-extra-model-module"]["kind"] == "files"
    assert units["add-an-extra-model-module"]["files"] == [
        "python/sglang/srt/models/extra_model.py"]
    # the worktree is the overlay's again: refreshing twice writes nothing
    git(root, "add", "-A")
    git(root, "commit", "-qm", "refreshed")
    again = overlay("-C", root, "refresh", "--json", cache=shared_cache)
    assert again.rc == 0 and again.json["written"] == []
    assert git(root, "status", "--porcelain") == ""
    assert git(wt, "rev-parse", "HEAD^{tree}") == overlay(
        "-C", root, "apply", "--json", cache=shared_cache).json["tree"]


def test_refresh_refuses_uncommitted_changes_and_hand_edited_edits(tmp_path, upstream,
                                                                   shared_cache):
    root, wt, _ = applied(tmp_path, upstream, shared_cache)
    suite = wt / "test/srt/models/test_generation_models.py"
    suite.write_text(suite.read_text() + "\n# local\n")
    dirty = overlay("-C", root, "refresh", cache=shared_cache)
    assert dirty.rc == 2 and "uncommitted changes" in dirty.err
    amend(wt, "opt-test-case", lambda: None)
    r = overlay("-C", root, "refresh", "--json", cache=shared_cache)
    assert r.rc == 1
    assert any("opt-test-case" in f and "by hand" in f for f in r.json["findings"])


def make_fork(tmp_path, upstream, extras: bool):
    """A fork made by editing a real release tree: a new model file, a change to
    parallel_state.py and an architecture added to the multimodal list."""
    fork = tmp_path / "fork"
    git(tmp_path, "clone", "-q", str(upstream), str(fork))
    git(fork, "checkout", "-q", "-b", "my-fork", "v0.5.1")
    models = fork / "python/sglang/srt/models"
    (models / "my_vl.py").write_text(
        "from sglang.srt.models.qwen2_5_vl import Qwen2_5_VLForConditionalGeneration\n\n\n"
        "class MyVLForConditionalGeneration(Qwen2_5_VLForConditionalGeneration):\n"
        "    pass\n\n\nEntryClass = MyVLForConditionalGeneration\n")
    ps = fork / PS
    ps.write_text(ps.read_text().replace(
        '    assert _TP is None, "tensor model parallel group is already initialized"',
        '    assert _TP is None, "tensor model parallel group is already initialized (fork)"'))
    cfg = fork / edit.MODEL_CONFIG
    cfg.write_text(edit.register_multimodal(cfg.read_text(),
                                            ["MyVLForConditionalGeneration"]).text)
    if extras:
        (fork / "python/sglang/srt/models/gpt2.py").unlink()
        (fork / "python/sglang/version.py").chmod(0o755)
        (fork / "assets").mkdir()
        (fork / "assets/logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    git(fork, "add", "-A")
    git(fork, "commit", "-qm", "My fork")
    return fork


@pytest.mark.parametrize("extras", [False, True])
def test_capture_round_trip_gives_the_forks_tree(extras, tmp_path, upstream, shared_cache):
    fork = make_fork(tmp_path, upstream, extras)
    root = tmp_path / "captured"
    assert overlay("init", root, "--upstream", upstream, "--sglang-ref", "v0.5.1",
                   cache=shared_cache).rc == 0
    r = overlay("-C", root, "capture", "--from", fork, "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    kinds = {u["name"]: u["kind"] for u in r.json["units"]}
    assert kinds["my-vl-model"] == "files"
    assert kinds["parallel-state"] == "patch"
    assert kinds["register-multimodal-archs"] == "edit"
    assert r.json["merge_base"] == git(upstream, "rev-parse", "v0.5.1^{commit}")
    assert (root / "overlay/python/sglang/srt/models/my_vl.py").exists()
    header = (root / "patches/parallel-state.patch").read_text().split("diff --git")[0]
    assert "What:" in header and "Why:" in header and "Forwarded: no" in header
    manifest = (root / "overlay.toml").read_text()
    assert 'architecture = "MyVLForConditionalGeneration"' in manifest
    assert "multimodal = true" in manifest
    if extras:
        notes = "\n".join(r.json["notes"])
        assert "gpt2.py: the fork deletes this file" in notes
        assert "version.py: mode-only change (100644 -> 100755)" in notes
        assert kinds["logo"] == "files"
    # round trip: apply on the base gives the fork's tree
    a = overlay("-C", root, "apply", "--sglang-ref", "v0.5.1", "--json", cache=shared_cache)
    assert a.rc == 0, a.err + a.out
    assert a.json["lint"] == []
    assert a.json["tree"] == git(fork, "rev-parse", "HEAD^{tree}")


def test_capture_from_a_branch_of_the_upstream(tmp_path, upstream, shared_cache):
    fork = make_fork(tmp_path, upstream, extras=False)
    remote = tmp_path / "upstream-with-fork.git"
    git(tmp_path, "clone", "-q", "--bare", str(upstream), str(remote))
    git(fork, "push", "-q", str(remote), "my-fork")
    root = tmp_path / "captured"
    assert overlay("init", root, "--upstream", remote, "--sglang-ref", "v0.5.1",
                   cache=shared_cache).rc == 0
    r = overlay("-C", root, "capture", "--from", "my-fork", "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    a = overlay("-C", root, "apply", "--json", cache=shared_cache)
    assert a.rc == 0 and a.json["tree"] == git(fork, "rev-parse", "HEAD^{tree}")


def test_capture_refuses_a_dirty_fork(tmp_path, upstream, shared_cache):
    fork = make_fork(tmp_path, upstream, extras=False)
    (fork / "README.md").write_text("uncommitted\n")
    root = tmp_path / "captured"
    overlay("init", root, "--upstream", upstream, "--sglang-ref", "v0.5.1", cache=shared_cache)
    before = overlay_snapshot(root)
    r = overlay("-C", root, "capture", "--from", fork, cache=shared_cache)
    assert r.rc == 2 and "uncommitted changes" in r.err
    assert overlay_snapshot(root) == before
