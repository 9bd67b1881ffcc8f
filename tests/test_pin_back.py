"""Moving the pin back before a unit retired brings the unit back, or refuses."""

from __future__ import annotations

import pytest

import realcases
from helpers import (
    copy_repo_overlay,
    git,
    overlay,
    overlay_snapshot,
    read_manifest,
    write_overlay,
)
from sglang_overlay.manifest import Unit, Variant, reachable, with_content_before

OPT = "overlay/python/sglang/srt/models/opt.py"


def _patch_unit(*variants):
    return Unit(name="u", kind="patch", description="u", patch="patches/u.patch",
                variants=tuple(variants))


def _v(start, until=None):
    return Variant(start, until=until, patch=f"patches/u/{start}.patch")


PINS = ["v0.5.1", "v0.5.2", "v0.5.3", "v0.5.4", "v0.5.5", "v0.5.6", "v0.5.18", "v0.5.21",
        "v0.5.23"]


@pytest.mark.parametrize("unit", [
    _patch_unit(_v("v0.5.3"), _v("v0.5.18"), _v("v0.5.21")),
    _patch_unit(_v("v0.5.2"), _v("v0.5.3", until="v0.5.5"), _v("v0.5.18")),  # a gap
    _patch_unit(_v("v0.5.3", until="v0.5.18"), _v("v0.5.18")),  # until = next from
    Unit(name="u", kind="files", description="u", files=("a.py",),
         variants=(Variant("v0.5.2", files=("a.py",)), Variant("v0.5.3", "v0.5.5", files=("b.py",)),
                   Variant("v0.5.18", files=("a.py",)))),
], ids=["open", "gap", "until", "files"])
def test_moving_back_gives_what_a_direct_upgrade_gives(unit):
    """For every pin the upgrade to a newer pin and back to it leaves the unit
    as an upgrade from the first pin straight there does."""
    for i, at in enumerate(PINS):
        for newer in PINS[i + 1:]:
            for back in PINS[i:PINS.index(newer)]:
                earlier = reachable(unit, at)
                up = reachable(earlier, newer)
                got = reachable(with_content_before(up, earlier, newer), back)
                assert got == reachable(earlier, back), (at, newer, back)


def _content(root):
    """The overlay's units (with their variants) and the bytes of their files."""
    files = {k: v for k, v in overlay_snapshot(root).items()
             if k.startswith(("overlay/", "patches/", "variants/"))}
    return read_manifest(root)["unit"], files


def test_pin_back_brings_retired_units_back(tmp_path, upstream, shared_cache):
    """The round trip v0.5.1 -> v0.5.3 -> v0.5.1 leaves the overlay as it was:
    OPT retired on the way up comes back, and so do the reuse patches' own
    v0.5.1 content and variants the upgrade dropped or promoted."""
    root = copy_repo_overlay(tmp_path / "ov", upstream)
    original = (root / OPT).read_bytes()
    first = overlay("-C", root, "apply", "--json", cache=shared_cache)
    assert first.rc == 0, first.err
    before = _content(root)
    up = overlay("-C", root, "upgrade", "--to", "v0.5.3", "--yes", "--json", cache=shared_cache)
    assert up.rc == 0, up.err
    assert not (root / OPT).exists()
    # the upgrade promoted the v0.5.3 variants: the v0.5.1 patches are gone
    assert not (root / "patches/parallel-state-reuse.patch").exists()
    assert not (root / "patches/expert-location-reset/v0.5.2.patch").exists()
    git(root, "add", "-A")
    git(root, "commit", "-qm", "upgrade to v0.5.3")

    back = overlay("-C", root, "upgrade", "--to", "v0.5.1", "--json", cache=shared_cache)
    assert back.rc == 0, back.err
    # OPT is back as it was when it retired, and both OPT units are active again
    assert (root / OPT).read_bytes() == original
    manifest = (root / "overlay.toml").read_text()
    assert "applied-upstream" not in manifest and 'ref = "v0.5.1"' in manifest
    units = {u["name"]: u for u in back.json["units"]}
    assert units["opt-model"]["action"].startswith("brought back")
    assert units["opt-test-case"]["action"].startswith("brought back")
    assert back.json["revived"] == ["opt-model", "opt-test-case"]
    assert back.json["restored"] == {
        "parallel-state-reuse": "patch for releases before v0.5.3",
        "expert-location-reset": "patch for releases before v0.5.2 and variant from v0.5.2",
    }
    assert "brought back its patch" in units["parallel-state-reuse"]["action"]
    # the same units, variants and files, and the same tree, as before the round trip
    assert _content(root) == before
    assert back.json["tree"] == first.json["tree"]
    changelog = (root / "CHANGELOG.md").read_text()
    assert "Moved the SGLang pin back from v0.5.3 to v0.5.1" in changelog
    assert "brought back `opt-model` (applied upstream only in v0.5.2)" in changelog
    assert ("brought back from git history `parallel-state-reuse`'s patch for releases "
            "before v0.5.3, `expert-location-reset`'s patch for releases before v0.5.2 "
            "and variant from v0.5.2") in changelog
    text = overlay("-C", root, "apply", cache=shared_cache)
    assert text.rc == 0 and "opt-model" in text.out
    both = overlay("-C", root, "check", "--sglang-ref", "v0.5.1", "--sglang-ref", "v0.5.3",
                   "--json", cache=shared_cache)
    assert both.rc == 0, both.out + both.err


def test_a_retired_patch_names_its_first_release_and_comes_back(tmp_path, upstream,
                                                                 shared_cache):
    """Upstream's own v0.5.1 -> v0.5.2 change, carried as a patch: retired on the
    way to v0.5.3 as applied upstream in v0.5.2, back from history for v0.5.1."""
    patch = realcases.upstreamed_patch(upstream)
    root = write_overlay(tmp_path / "ov", upstream, [
        {"name": "allocator", "kind": "patch", "description": "allocator",
         "patch": "patches/allocator.patch"},
    ], {"patches/allocator.patch": patch})
    up = overlay("-C", root, "upgrade", "--to", "v0.5.3", "--json", cache=shared_cache)
    assert up.rc == 0, up.err
    assert 'applied-upstream = "v0.5.2"' in (root / "overlay.toml").read_text()
    assert not (root / "patches/allocator.patch").exists()
    git(root, "add", "-A")
    git(root, "commit", "-qm", "upgrade")
    back = overlay("-C", root, "upgrade", "--to", "v0.5.1", "--json", cache=shared_cache)
    assert back.rc == 0, back.err
    assert (root / "patches/allocator.patch").read_bytes() == patch
    assert back.json["units"][0]["status"] == "applied"


def test_pin_back_without_history_refuses_and_writes_nothing(tmp_path, upstream, shared_cache):
    root = write_overlay(tmp_path / "ov", upstream, [
        {"name": "opt-model", "kind": "files", "description": "OPT",
         "files": ["python/sglang/srt/models/opt.py"], "applied-upstream": "v0.5.2"},
    ], ref="v0.5.3")
    snap = overlay_snapshot(root)
    r = overlay("-C", root, "upgrade", "--to", "v0.5.1", cache=shared_cache)
    assert r.rc == 2
    assert r.err.count("\n") == 1 and "opt-model" in r.err and "git history" in r.err
    assert "overlay/python/sglang/srt/models/opt.py" in r.err
    assert overlay_snapshot(root) == snap
    # a release the unit was retired for: it stays retired
    ok = overlay("-C", root, "upgrade", "--to", "v0.5.2", "--json", cache=shared_cache)
    assert ok.rc == 0, ok.err
    assert ok.json["units"][0]["action"] == "retired earlier"


def test_provides_note_comes_from_the_trees_and_counts_like_git(tmp_path, upstream,
                                                               shared_cache):
    """With a lint error in every cell, the note still names the first release
    with upstream's opt.py, and its +/- are `git diff --numstat`'s."""
    root = copy_repo_overlay(tmp_path / "ov", upstream, commit=False)
    opt = root / OPT
    opt.write_text(opt.read_text() + "\n\nLAYER = RowParallelLinear(1, 2, no_such_keyword=3)\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "overlay")
    r = overlay("-C", root, "check", "--sglang-ref", "v0.5.1", "--sglang-ref", "v0.5.3",
                "--json", cache=shared_cache)
    assert r.rc == 1
    cells = next(u for u in r.json["units"] if u["name"] == "opt-model")["cells"]
    assert {c["status"] for c in cells.values()} == {"lint-error"}
    theirs = tmp_path / "theirs.py"
    theirs.write_text(git(upstream, "show", "v0.5.3:python/sglang/srt/models/opt.py", raw=True))
    added, removed, _ = _numstat(tmp_path, theirs, opt)
    note = next(n for n in r.json["notes"] if n.startswith("opt-model: upstream provides"))
    assert " from v0.5.2 on " in note and f"(+{added} -{removed})" in note


def _numstat(cwd, a, b):
    import subprocess

    out = subprocess.run(["git", "diff", "--no-index", "--numstat", str(a), str(b)], cwd=cwd,
                         capture_output=True, text=True).stdout.split()
    return out[0], out[1], out[2]


def test_pin_back_refuses_when_the_older_commit_lacks_a_dropped_patch(tmp_path, upstream,
                                                                       shared_cache):
    """The v0.5.1 patch the upgrade promoted away was never committed: moving
    back cannot restore it, so it refuses in one line and writes nothing."""
    root = copy_repo_overlay(tmp_path / "ov", upstream, commit=False)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "rm", "-q", "--cached", "patches/parallel-state-reuse.patch")
    git(root, "commit", "-qm", "overlay")
    up = overlay("-C", root, "upgrade", "--to", "v0.5.3", "--yes", "--json", cache=shared_cache)
    assert up.rc == 0, up.err
    git(root, "add", "-A")
    git(root, "commit", "-qm", "upgrade to v0.5.3")
    snap = overlay_snapshot(root)
    r = overlay("-C", root, "upgrade", "--to", "v0.5.1", cache=shared_cache)
    assert r.rc == 2, r.out + r.err
    assert r.err.count("\n") == 1
    assert "'parallel-state-reuse'" in r.err and "patches/parallel-state-reuse.patch" in r.err
    assert overlay_snapshot(root) == snap


def test_pin_back_brings_a_dropped_files_variant_back(tmp_path, upstream, shared_cache):
    """A files unit's variant from v0.5.2 is dropped on the way to v0.5.3 (its
    range ends where v0.5.3's begins); moving back to v0.5.2 brings its folder
    back from history and the manifest as it was."""
    rel = "python/sglang/srt/extra_note.txt"
    root = write_overlay(tmp_path / "ov", upstream, [
        {"name": "extra", "kind": "files", "description": "extra", "files": [rel]},
    ], {f"overlay/{rel}": "own\n", f"variants/extra/v0.5.2/{rel}": "v0.5.2\n",
        f"variants/extra/v0.5.3/{rel}": "v0.5.3\n"},
        extra_toml=f'[[unit.variant]]\nfrom = "v0.5.2"\nfiles = ["{rel}"]\n\n'
                   f'[[unit.variant]]\nfrom = "v0.5.3"\nfiles = ["{rel}"]\n')
    before = _content(root)
    up = overlay("-C", root, "upgrade", "--to", "v0.5.3", "--json", cache=shared_cache)
    assert up.rc == 0, up.err
    assert not (root / f"variants/extra/v0.5.2/{rel}").exists()
    git(root, "add", "-A")
    git(root, "commit", "-qm", "upgrade")
    back = overlay("-C", root, "upgrade", "--to", "v0.5.2", "--json", cache=shared_cache)
    assert back.rc == 0, back.err
    assert back.json["restored"] == {"extra": "variant from v0.5.2"}
    assert _content(root) == before
    assert (root / f"sglang-v0.5.2/{rel}").read_text() == "v0.5.2\n"
