"""`overlay apply` on real SGLang releases (v0.5.1 .. v0.5.8 from PyPI)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import realcases
from helpers import MODEL_FILE, git, overlay, tree_snapshot, upstream_file, write_overlay

MODEL_PATH = "python/sglang/srt/models/my_llama.py"


@pytest.fixture
def work(tmp_path) -> Path:
    w = tmp_path / "work"
    w.mkdir()
    return w


def standard_overlay(root: Path, upstream: Path, work: Path, extra_units=(), extra_files=None):
    files = {
        f"overlay/{MODEL_PATH}": MODEL_FILE,
        "patches/upstreamed.patch": realcases.upstreamed_patch(upstream),
        "patches/import-os.patch": realcases.three_way_patch(upstream, work),
        **(extra_files or {}),
    }
    units = [
        {"name": "my-model", "kind": "files", "description": "A custom Llama.\n\nSubclass.",
         "files": [MODEL_PATH]},
        {"name": "allocator-fix", "kind": "patch", "description": "Allocator fix",
         "patch": "patches/upstreamed.patch", "forwarded": "https://github.com/sgl-project/sglang/pull/1"},
        {"name": "import-os", "kind": "patch", "description": "eplb imports os",
         "patch": "patches/import-os.patch"},
        *extra_units,
    ]
    return write_overlay(root, upstream, units, files,
                         models=[{"architecture": "MyLlamaForCausalLM", "unit": "my-model"}])


def statuses(run) -> dict:
    return {u["name"]: u["status"] for u in run.json["units"]}


def test_apply_makes_branch_worktree_and_one_commit_per_unit(tmp_path, upstream, shared_cache, work):
    root = standard_overlay(tmp_path / "ov", upstream, work)
    r = overlay("-C", root, "apply", "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    assert statuses(r) == {"my-model": "applied", "allocator-fix": "applied",
                           "import-os": "applied"}
    wt = root / "sglang-v0.5.1"
    assert (wt / MODEL_PATH).read_text() == MODEL_FILE
    assert "import os\n" in (wt / realcases.EXPERT_LOCATION).read_text()
    assert git(wt, "symbolic-ref", "HEAD") == "refs/heads/overlay/v0.5.1"
    log = git(wt, "log", "--format=%s|%an|%ae", "-4").splitlines()
    assert [line.split("|")[0] for line in log[:3]] == [
        "import-os: eplb imports os", "allocator-fix: Allocator fix", "my-model: A custom Llama."]
    assert {line.split("|", 1)[1] for line in log[:3]} == {
        "sglang-overlay|sglang-overlay@users.noreply.invalid"}
    assert log[3].startswith("Release v0.5.1")
    body = git(wt, "log", "-1", "--format=%B", "HEAD~2")
    overlay_head = git(root, "rev-parse", "HEAD")
    assert "Subclass." in body
    assert "Overlay-Unit: my-model" in body
    assert f"Overlay-Commit: {overlay_head}" in body
    # the lock was written for the pinned ref
    assert f'commit = "{r.json["base"]}"' in (root / "overlay.toml").read_text()
    assert r.json["base"] == git(upstream, "rev-parse", "v0.5.1^{commit}")


def test_reapply_changes_nothing_and_result_is_deterministic(tmp_path, upstream, shared_cache, work):
    root = standard_overlay(tmp_path / "ov", upstream, work)
    first = overlay("-C", root, "apply", "--json", cache=shared_cache)
    assert first.rc == 0, first.err
    wt = root / "sglang-v0.5.1"
    before = tree_snapshot(wt)
    again = overlay("-C", root, "apply", "--json", cache=shared_cache)
    assert again.rc == 0
    assert again.json["tree"] == first.json["tree"]
    assert again.json["commit"] == first.json["commit"]
    assert again.json["changed"] is False
    assert tree_snapshot(wt) == before
    # another machine: a fresh cache and a copy of the overlay elsewhere
    other = tmp_path / "elsewhere" / "ov"
    shutil.copytree(root, other, ignore=shutil.ignore_patterns("sglang-*", ".overlay"))
    third = overlay("-C", other, "apply", "--json", cache=tmp_path / "fresh-cache")
    assert third.rc == 0, third.err
    assert third.json["tree"] == first.json["tree"]
    assert third.json["commit"] == first.json["commit"]
    assert git(other / "sglang-v0.5.1", "rev-parse", "HEAD^{tree}") == first.json["tree"]


def test_already_upstream_real_release(tmp_path, upstream, shared_cache, work):
    """Upstream made the allocator change itself in v0.5.2."""
    same = "python/sglang/srt/models/gpt2.py"
    root = standard_overlay(
        tmp_path / "ov", upstream, work,
        extra_units=[{"name": "same-file", "kind": "files", "description": "identical",
                      "files": [same]}],
        extra_files={f"overlay/{same}": upstream_file(upstream, "v0.5.2", same)},
    )
    r = overlay("-C", root, "apply", "--sglang-ref", "v0.5.2", "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    s = statuses(r)
    assert s["allocator-fix"] == "already-upstream"
    assert s["same-file"] == "already-upstream"
    units = {u["name"]: u for u in r.json["units"]}
    assert units["allocator-fix"]["commit"] is None
    subjects = git(root / "sglang-v0.5.2", "log", "--format=%s", "-3").splitlines()
    assert not any("allocator-fix" in s or "same-file" in s for s in subjects)


def test_three_way_real_release(tmp_path, upstream, shared_cache, work):
    """The patch was made on v0.5.1; v0.5.3 moved its context."""
    root = standard_overlay(tmp_path / "ov", upstream, work)
    r = overlay("-C", root, "apply", "--sglang-ref", "v0.5.3", "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    units = {u["name"]: u for u in r.json["units"]}
    assert units["import-os"]["status"] == "applied-3way"
    assert units["import-os"]["files"] == [realcases.EXPERT_LOCATION]
    text = (root / "sglang-v0.5.3" / realcases.EXPERT_LOCATION).read_text()
    assert "from __future__ import annotations" in text and "import os\n" in text
    assert "<<<<<<<" not in text


def test_conflict_leaves_target_untouched_and_a_resolution_worktree(tmp_path, upstream, shared_cache, work):
    root = standard_overlay(tmp_path / "ov", upstream, work)
    ok = overlay("-C", root, "apply", "--sglang-ref", "v0.5.3", "--json", cache=shared_cache)
    assert ok.rc == 0, ok.err
    wt = root / "sglang-v0.5.3"
    before = tree_snapshot(wt)
    branch_before = git(wt, "rev-parse", "refs/heads/overlay/v0.5.3")
    (root / "patches" / "clamp.patch").write_bytes(realcases.conflict_patch(upstream, work))
    with open(root / "overlay.toml", "a") as fh:
        fh.write('\n[[unit]]\nname = "clamp"\nkind = "patch"\n'
                 'description = "clamp experts"\npatch = "patches/clamp.patch"\n')
    r = overlay("-C", root, "apply", "--sglang-ref", "v0.5.3", "--json", cache=shared_cache)
    assert r.rc == 1
    units = {u["name"]: u for u in r.json["units"]}
    assert units["clamp"]["status"] == "conflict"
    assert units["clamp"]["files"] == [realcases.EXPERT_LOCATION]
    assert any(h.startswith(realcases.EXPERT_LOCATION + " @@ -") for h in units["clamp"]["hunks"])
    # the target and its branch did not move
    assert tree_snapshot(wt) == before
    assert git(wt, "rev-parse", "refs/heads/overlay/v0.5.3") == branch_before
    # a resolution worktree with the markers, on top of the units before it
    res = Path(r.json["resolution"])
    assert res == root / "sglang-v0.5.3-conflict"
    text = (res / realcases.EXPERT_LOCATION).read_text()
    assert "<<<<<<<" in text and ">>>>>>>" in text
    assert "import-os: eplb imports os" in git(res, "log", "-1", "--format=%s")
    assert realcases.EXPERT_LOCATION in git(res, "diff", "--name-only", "--diff-filter=U")
    # the guidance matches that state: markers to edit, in that file
    assert r.json["guidance"] == [
        f"Resolve it in {res}: `git status` there lists the conflicted files "
        f"({realcases.EXPERT_LOCATION}); edit them until no conflict markers are left "
        "(committing is optional), then run `overlay refresh --continue`; or give up with "
        "`overlay refresh --abort`."]
    # the text says what to do
    human = overlay("-C", root, "apply", "--sglang-ref", "v0.5.3", "--force", cache=shared_cache)
    assert human.rc == 1
    assert "overlay refresh --continue" in human.out


def test_dirty_target_is_refused_then_forced_with_backup(tmp_path, upstream, shared_cache, work):
    root = standard_overlay(tmp_path / "ov", upstream, work)
    assert overlay("-C", root, "apply", cache=shared_cache).rc == 0
    wt = root / "sglang-v0.5.1"
    (wt / "README.md").write_text("my local notes\n")
    before = tree_snapshot(wt)
    r = overlay("-C", root, "apply", cache=shared_cache)
    assert r.rc == 2
    assert len(r.err.strip().splitlines()) == 1
    assert str(wt) in r.err and "uncommitted changes" in r.err and "fix:" in r.err
    assert tree_snapshot(wt) == before
    forced = overlay("-C", root, "apply", "--force", "--json", cache=shared_cache)
    assert forced.rc == 0, forced.err
    backup = forced.json["backup"]
    assert backup.startswith("refs/overlay-backups/")
    assert git(wt, "show", f"{backup}:README.md") == "my local notes"
    assert (wt / "README.md").read_text() != "my local notes\n"


def test_lock_mismatch_is_loud_and_builds_on_the_locked_commit(tmp_path, upstream, shared_cache, work):
    moving = tmp_path / "moving-upstream.git"
    git(tmp_path, "clone", "-q", "--bare", str(upstream), str(moving))
    root = standard_overlay(tmp_path / "ov", moving, work)
    first = overlay("-C", root, "apply", "--json", cache=shared_cache)
    assert first.rc == 0, first.err
    locked = first.json["base"]
    # upstream re-tags v0.5.1 onto another commit
    git(moving, "tag", "-f", "v0.5.1", "v0.5.2^{commit}")
    second = overlay("-C", root, "apply", "--json", cache=shared_cache)
    assert second.rc == 0
    assert "LOCK MISMATCH" in second.err and locked in second.err
    assert second.json["lock"]["status"] == "mismatch"
    assert second.json["base"] == locked
    assert second.json["tree"] == first.json["tree"]
    moved = overlay("-C", root, "apply", "--update-lock", "--force", "--json", cache=shared_cache)
    assert moved.rc == 0, moved.err
    new = git(moving, "rev-parse", "v0.5.2^{commit}")
    assert moved.json["base"] == new
    assert f'commit = "{new}"' in (root / "overlay.toml").read_text()


def test_files_unit_replaces_an_upstream_file_whole(tmp_path, upstream, shared_cache):
    path = "python/sglang/srt/models/gpt2.py"
    root = write_overlay(tmp_path / "ov", upstream, [
        {"name": "gpt2", "kind": "files", "description": "our gpt2", "files": [path]},
    ], {f"overlay/{path}": "EntryClass = None\n"})
    r = overlay("-C", root, "apply", "--no-lint", "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    assert statuses(r) == {"gpt2": "applied"}
    assert (root / "sglang-v0.5.1" / path).read_text() == "EntryClass = None\n"


def test_table_output_for_people(tmp_path, upstream, shared_cache, work):
    root = standard_overlay(tmp_path / "ov", upstream, work)
    r = overlay("-C", root, "apply", "--sglang-ref", "v0.5.3", cache=shared_cache)
    assert r.rc == 0, r.err
    lines = r.out.splitlines()
    assert lines[0].split() == ["UNIT", "KIND", "STATUS", "FILES", "DETAIL"]
    status_col = lines[0].index("STATUS")
    rows = {line.split()[0]: line for line in lines[1:4]}
    assert rows["import-os"][status_col:].startswith("applied-3way")
    assert rows["allocator-fix"][status_col:].startswith("already-upstream")
    assert rows["my-model"][status_col:].startswith("applied ")
