"""Never lose user work: commits in worktrees, committed resolutions, upgrades
that cannot complete."""

from __future__ import annotations

import realcases
from helpers import (amend, copy_repo_overlay, git, manifest_units, overlay,
                     overlay_snapshot)

OPT = "python/sglang/srt/models/opt.py"


def applied(tmp_path, upstream, cache):
    root = copy_repo_overlay(tmp_path / "ov", upstream)
    assert overlay("-C", root, "apply", cache=cache).rc == 0
    git(root, "add", "-A")
    git(root, "commit", "-qm", "lock")
    return root, root / "sglang-v0.5.1"


def test_apply_refuses_commits_it_did_not_make_and_force_backs_them_up(tmp_path, upstream,
                                                                        shared_cache):
    root, wt = applied(tmp_path, upstream, shared_cache)
    (wt / "README.md").write_text("my work\n")
    git(wt, "commit", "-qam", "my work")
    mine = git(wt, "rev-parse", "HEAD")
    r = overlay("-C", root, "apply", cache=shared_cache)
    assert r.rc == 2 and "commits that overlay apply did not make" in r.err
    assert git(wt, "rev-parse", "HEAD") == mine
    forced = overlay("-C", root, "apply", "--force", "--json", cache=shared_cache)
    assert forced.rc == 0, forced.err
    assert git(wt, "rev-parse", "HEAD") != mine
    assert git(wt, "show", f"{forced.json['backup']}:README.md") == "my work"
    assert mine in git(wt, "rev-list", forced.json["backup"])


def test_refresh_keeps_the_worktree_when_it_cannot_write_everything_back(tmp_path, upstream,
                                                                          shared_cache):
    root, wt = applied(tmp_path, upstream, shared_cache)
    suite = wt / "test/srt/models/test_generation_models.py"

    def by_hand():
        suite.write_text(suite.read_text().replace("skip_long_prompt=True),\n]",
                                                   "skip_long_prompt=False),\n]"))

    amend(wt, "opt-test-case", by_hand)  # an edit unit changed by hand
    (wt / OPT).write_text((wt / OPT).read_text() + "# more\n")
    git(wt, "commit", "-qam", "opt tweak")
    head = git(wt, "rev-parse", "HEAD")
    r = overlay("-C", root, "refresh", "--json", cache=shared_cache)
    assert r.rc == 1 and any("by hand" in f for f in r.json["findings"])
    # the overlay could not take the hand edit, so the worktree is left as it is
    assert git(wt, "rev-parse", "HEAD") == head
    assert "skip_long_prompt=False" in suite.read_text()


def test_a_committed_resolution_is_used_by_continue(tmp_path, upstream, shared_cache):
    work = tmp_path / "work"
    work.mkdir()
    root = copy_repo_overlay(tmp_path / "ov", upstream)
    (root / "patches" / "clamp.patch").write_bytes(realcases.conflict_patch(upstream, work))
    with open(root / "overlay.toml", "a") as fh:
        fh.write('\n[[unit]]\nname = "clamp"\nkind = "patch"\n'
                 'description = "clamp"\npatch = "patches/clamp.patch"\n')
    r = overlay("-C", root, "apply", "--sglang-ref", "v0.5.3", "--json", cache=shared_cache)
    assert r.rc == 1
    res = root / "sglang-v0.5.3-conflict"
    path = res / realcases.EXPERT_LOCATION
    text = path.read_text()
    start, end = text.index("<<<<<<< "), text.index("\n", text.index(">>>>>>> ")) + 1
    path.write_text(text[:start] + "    num_local_gpu_physical_experts = max(1, "
                    "num_physical_experts // num_gpus)\n"
                    "    num_gpus_per_node = server_args.ep_size // server_args.nnodes\n"
                    "    num_local_node_physical_experts = num_local_gpu_physical_experts * "
                    "num_gpus_per_node\n" + text[end:])
    git(res, "add", "-A")
    git(res, "commit", "-qm", "resolved")  # as git itself suggests
    done = overlay("-C", root, "refresh", "--continue", "--json", cache=shared_cache)
    assert done.rc == 0, done.err
    assert b"max(1, num_physical_experts // num_gpus)" in (root / "patches/clamp.patch").read_bytes()


def test_an_upgrade_whose_remaining_units_conflict_changes_nothing(tmp_path, upstream,
                                                                   shared_cache):
    """Retiring OPT for upstream's leaves a patch of the overlay's opt.py conflicting."""
    root, wt = applied(tmp_path, upstream, shared_cache)
    (wt / OPT).write_text((wt / OPT).read_text().replace(
        '"""Inference-only OPT model', '"""Native OPT model'))
    git(wt, "commit", "-qam", "Fix the OPT docstring")
    assert overlay("-C", root, "refresh", cache=shared_cache).rc == 0  # a new patch unit
    git(root, "add", "-A")
    git(root, "commit", "-qm", "one more unit")
    assert manifest_units(root)["fix-the-opt-docstring"]["kind"] == "patch"
    before = overlay_snapshot(root)
    r = overlay("-C", root, "upgrade", "--to", "v0.5.3", "--yes", "--json", cache=shared_cache)
    assert r.rc == 1
    assert r.json["conflict"] == "fix-the-opt-docstring" and "opt-model" in r.json["retiring"]
    assert overlay_snapshot(root) == before
    assert (root / "sglang-v0.5.3-conflict").is_dir()
    assert (root / ".overlay" / "state.json").exists()
