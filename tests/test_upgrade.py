"""`overlay upgrade` from v0.5.1 to v0.5.3 on real releases."""

from __future__ import annotations

from pathlib import Path

import realcases
from sglang_overlay import manifest as manifest_mod

from helpers import (
    copy_repo_overlay,
    git,
    overlay,
    overlay_snapshot,
)

OPT = "overlay/python/sglang/srt/models/opt.py"
PATCHES = ("patches/parallel-state-reuse.patch", "patches/expert-location-reset.patch")
PROMOTED = {"parallel-state-reuse": "patches/parallel-state-reuse/v0.5.3.patch",
            "expert-location-reset": "patches/expert-location-reset/v0.5.3.patch"}


def header(data: bytes) -> bytes:
    return data[: data.index(b"\ndiff --git ")]


def test_upgrade_retires_drops_variants_moves_pin_and_writes_changelog(tmp_path, upstream,
                                                                        shared_cache):
    root = copy_repo_overlay(tmp_path / "ov", upstream)
    before = {p: (root / p).read_bytes() for p in PROMOTED.values()}
    r = overlay("-C", root, "upgrade", "--to", "v0.5.3", "--yes", "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    assert set(r.json["retired"]) == {"opt-model", "opt-test-case"}
    # the variants from v0.5.3 apply plainly there: nothing to regenerate
    assert r.json["regenerated"] == []
    actions = {u["name"]: u["action"] for u in r.json["units"]}
    assert actions["parallel-state-reuse"] == "kept; variant from v0.5.3 is now its patch"
    assert actions["expert-location-reset"] == (
        "kept; dropped variant from v0.5.2; variant from v0.5.3 is now its patch")
    # OPT is retired: the manifest says where upstream has it (since v0.5.2, the
    # first release with its own opt.py and OPT's test case), and the file is gone
    manifest = (root / "overlay.toml").read_text()
    assert manifest.count('applied-upstream = "v0.5.2"') == 2
    assert not (root / OPT).exists()
    # pin and lock moved
    v053 = git(upstream, "rev-parse", "v0.5.3^{commit}")
    assert 'ref = "v0.5.3"' in manifest and f'commit = "{v053}"' in manifest
    # no release from v0.5.3 on uses the v0.5.1 patches or the v0.5.2 variant: gone;
    # the v0.5.3 variants are the units' own patches now, unchanged
    for p in PATCHES + ("patches/expert-location-reset/v0.5.2.patch",):
        assert not (root / p).exists(), p
    m = manifest_mod.load(root)
    for name, p in PROMOTED.items():
        unit = m.unit(name)
        assert unit.patch == p and (root / p).read_bytes() == before[p]
        assert "v0.5.3" not in [v.from_ref for v in unit.variants]
    assert [v.from_ref for v in m.unit("parallel-state-reuse").variants] == [
        "v0.5.4", "v0.5.8", "v0.5.10.post1", "v0.5.18", "v0.5.21"]
    # the CHANGELOG line
    changelog = (root / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog and "### Changed" in changelog
    assert "Upgraded SGLang from v0.5.1 to v0.5.3" in changelog and "`opt-model`" in changelog
    assert "(applied upstream in v0.5.2)" in changelog and "in v0.5.3" not in changelog
    assert "`expert-location-reset` dropped variant from v0.5.2" in changelog
    # the overlay applies cleanly on v0.5.3: no 3-way, no offset
    again = overlay("-C", root, "apply", "--json", cache=shared_cache)
    assert again.rc == 0, again.err
    units = {u["name"]: u for u in again.json["units"]}
    assert units["opt-model"]["status"] == "retired"
    for name in ("parallel-state-reuse", "expert-location-reset"):
        assert units[name]["status"] == "applied" and units[name]["detail"] == ""
        assert units[name]["variant"] is None
    assert again.json["tree"] == r.json["tree"]
    # a second upgrade to the same ref changes nothing
    snap = overlay_snapshot(root)
    same = overlay("-C", root, "upgrade", "--to", "v0.5.3", "--yes", cache=shared_cache)
    assert same.rc == 0 and overlay_snapshot(root) == snap


def test_upgrade_without_yes_keeps_what_upstream_provides(tmp_path, upstream, shared_cache):
    root = copy_repo_overlay(tmp_path / "ov", upstream)
    r = overlay("-C", root, "upgrade", "--to", "v0.5.3", "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    assert r.json["retired"] == ["opt-test-case"]  # already-upstream retires by itself
    actions = {u["name"]: u["action"] for u in r.json["units"]}
    assert actions["opt-model"].startswith("kept (upstream provides it")
    assert (root / OPT).exists()


def with_clamp(tmp_path, upstream):
    """The repository's overlay plus a patch whose line v0.5.3 rewrote: a real conflict."""
    work = tmp_path / "work"
    work.mkdir()
    root = copy_repo_overlay(tmp_path / "ov", upstream)
    (root / "patches" / "clamp.patch").write_bytes(realcases.conflict_patch(upstream, work))
    with open(root / "overlay.toml", "a") as fh:
        fh.write('\n[[unit]]\nname = "clamp"\nkind = "patch"\n'
                 'description = "Clamp experts per GPU"\npatch = "patches/clamp.patch"\n')
    git(root, "add", "-A")
    git(root, "commit", "-qm", "clamp")
    return root


def test_conflict_during_upgrade_then_refresh_continue(tmp_path, upstream, shared_cache):
    root = with_clamp(tmp_path, upstream)
    before = overlay_snapshot(root)
    r = overlay("-C", root, "upgrade", "--to", "v0.5.3", "--yes", "--json", cache=shared_cache)
    assert r.rc == 1
    assert r.json["conflict"] == "clamp"
    res = root / "sglang-v0.5.3-conflict"
    assert r.json["resolution"] == str(res)
    assert overlay_snapshot(root) == before  # nothing changed yet
    assert "<<<<<<<" in (res / realcases.EXPERT_LOCATION).read_text()
    # continuing with the markers still there is refused
    early = overlay("-C", root, "refresh", "--continue", cache=shared_cache)
    assert early.rc == 2 and "conflict marker" in early.err
    # resolve: keep v0.5.3's new code and clamp it the way the patch meant
    path = res / realcases.EXPERT_LOCATION
    text = path.read_text()
    start = text.index("<<<<<<< ")
    end = text.index("\n", text.index(">>>>>>> ")) + 1
    path.write_text(text[:start] +
                    "    num_local_gpu_physical_experts = max(1, num_physical_experts // num_gpus)\n"
                    "    num_gpus_per_node = server_args.ep_size // server_args.nnodes\n"
                    "    num_local_node_physical_experts = num_local_gpu_physical_experts * "
                    "num_gpus_per_node\n" + text[end:])
    done = overlay("-C", root, "refresh", "--continue", "--json", cache=shared_cache)
    assert done.rc == 0, done.err
    assert "clamp" in done.json["regenerated"] and "opt-model" in done.json["retired"]
    assert not res.exists() and not (root / ".overlay" / "state.json").exists()
    clamp = (root / "patches" / "clamp.patch").read_bytes()
    assert b"+    num_local_gpu_physical_experts = max(1, num_physical_experts // num_gpus)" in clamp
    assert 'ref = "v0.5.3"' in (root / "overlay.toml").read_text()
    # the result applies plainly on v0.5.3, and re-export is byte-stable
    git(root, "add", "-A")
    git(root, "commit", "-qm", "upgraded")
    applied = overlay("-C", root, "apply", "--json", cache=shared_cache)
    assert applied.rc == 0 and {u["status"] for u in applied.json["units"]} == {"applied",
                                                                               "retired"}
    refreshed = overlay("-C", root, "refresh", "--json", cache=shared_cache)
    assert refreshed.rc == 0 and refreshed.json["written"] == []
    assert git(root, "status", "--porcelain") == ""


def test_refresh_abort_drops_the_unfinished_upgrade(tmp_path, upstream, shared_cache):
    root = with_clamp(tmp_path, upstream)
    before = overlay_snapshot(root)
    assert overlay("-C", root, "upgrade", "--to", "v0.5.3", cache=shared_cache).rc == 1
    res = root / "sglang-v0.5.3-conflict"
    (res / "scratch.txt").write_text("my notes\n")
    blocked = overlay("-C", root, "upgrade", "--to", "v0.5.3", cache=shared_cache)
    assert blocked.rc == 2 and "refresh --continue" in blocked.err
    common = Path(git(res, "rev-parse", "--path-format=absolute", "--git-common-dir"))
    r = overlay("-C", root, "refresh", "--abort", "--json", cache=shared_cache)
    assert r.rc == 0 and r.json["aborted"] == "upgrade"
    # the notes in the resolution worktree were kept, in the backup ref it names
    assert r.json["backup"].startswith("refs/overlay-backups/")
    assert git(common, "show", f"{r.json['backup']}:scratch.txt", raw=True) == "my notes\n"
    assert not res.exists() and overlay_snapshot(root) == before
    none = overlay("-C", root, "refresh", "--continue", cache=shared_cache)
    assert none.rc == 2 and "no apply or upgrade" in none.err
