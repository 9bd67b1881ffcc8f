"""Variants by release: [[unit.variant]] tables give a unit other content for a
range of upstream releases (the way Yocto picks version-specific files).

apply, check, upgrade (tests/test_upgrade.py), refresh and pr (tests/test_pr.py)
choose the variant for the ref they build on.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import copy_repo_overlay, git, overlay, overlay_snapshot, write_overlay
from sglang_overlay import manifest as manifest_mod
from sglang_overlay.errors import OverlayError
from sglang_overlay.manifest import Unit, Variant, unreachable_variants

PS_PATCH = "patches/parallel-state-reuse.patch"
PS_V0521 = "patches/parallel-state-reuse/v0.5.21.patch"
A_PATCH = "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n" \
          "Subject: [PATCH] x\n\n---\n" \
          "diff --git a/f b/f\nindex " + "1" * 40 + ".." + "2" * 40 + " 100644\n" \
          "--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+b\n"


def _overlay(tmp_path: Path, variants: str, kind: str = "patch", extra: dict | None = None,
             upstream: str = "https://example.invalid/sglang.git") -> Path:
    unit = {"name": "u", "kind": kind, "description": "U"}
    if kind == "patch":
        unit["patch"] = "patches/u.patch"
    elif kind == "edit":
        unit.update(edit="add-model-case", models=["M"])
    else:
        unit["files"] = ["python/x.py"]
    files = {"patches/u.patch": A_PATCH, "patches/u/v0.5.3.patch": A_PATCH,
             "patches/u/v0.5.21.patch": A_PATCH, "overlay/python/x.py": "x = 1\n",
             **(extra or {})}
    models = "\n[[model]]\narchitecture = \"M\"\nhf-id = \"org/m\"\n" if kind == "edit" else ""
    return write_overlay(tmp_path / "ov", upstream, [unit], files, commit=False,
                         extra_toml=variants + models)


@pytest.mark.parametrize("variants, key, problem", [
    ('[[unit.variant]]\nfrom = "main"\npatch = "patches/u/v0.5.3.patch"\n',
     "unit[1] 'u'.variant[1].from", "'main' is not a release tag"),
    ('[[unit.variant]]\nfrom = "v0.5.21"\nuntil = "v0.5.3"\npatch = "patches/u/v0.5.21.patch"\n',
     "unit[1] 'u'.variant[1].until", "'v0.5.3' is not after from = 'v0.5.21'"),
    ('[[unit.variant]]\nfrom = "v0.5.21"\npatch = "patches/u/v0.5.21.patch"\n'
     '[[unit.variant]]\nfrom = "v0.5.3"\npatch = "patches/u/v0.5.3.patch"\n',
     "unit[1] 'u'.variant[2].from", "'v0.5.3' is not after the previous variant's 'v0.5.21'"),
    ('[[unit.variant]]\nfrom = "v0.5.3"\nuntil = "v0.5.22"\npatch = "patches/u/v0.5.3.patch"\n'
     '[[unit.variant]]\nfrom = "v0.5.21"\npatch = "patches/u/v0.5.21.patch"\n',
     "unit[1] 'u'.variant[2].from", "'v0.5.21' is inside the previous variant's range"),
    ('[[unit.variant]]\nfrom = "v0.5.3"\nfiles = ["python/x.py"]\n',
     "unit[1] 'u'.variant[1].files", "a variant of a patch unit has no 'files' key"),
    ('[[unit.variant]]\nfrom = "v0.5.3"\npatch = "patches/u/v0.5.3.patch"\ncolor = "red"\n',
     "unit[1] 'u'.variant[1].color", "unknown key"),
    ('[[unit.variant]]\nfrom = "v0.5.3"\npatch = "patches/u/v0.5.9.patch"\n',
     "unit 'u'.variant[1].patch", "patches/u/v0.5.9.patch does not exist"),
    ('[[unit.variant]]\nfrom = "v0.5.3"\npatch = "patches/u.patch"\n',
     "unit 'u'.variant[1].patch", "patches/u.patch is also the patch of unit 'u'"),
    ('[[unit.variant]]\npatch = "patches/u/v0.5.3.patch"\n',
     "unit[1] 'u'.variant[1].from", "missing"),
])
def test_bad_variants_name_the_key_and_the_fix(tmp_path, variants, key, problem):
    root = _overlay(tmp_path, variants)
    with pytest.raises(OverlayError) as exc:
        manifest_mod.load(root)
    line = exc.value.line()
    assert key in line and problem in line and "(fix: " in line, line
    assert len(line.splitlines()) == 1


def test_edit_units_and_files_variants(tmp_path):
    edit = _overlay(tmp_path / "e", '[[unit.variant]]\nfrom = "v0.5.3"\n', kind="edit")
    with pytest.raises(OverlayError, match=r"'u'\.variant: an edit unit has no variants"):
        manifest_mod.load(edit)
    files = _overlay(tmp_path / "f", '[[unit.variant]]\nfrom = "v0.5.8"\nfiles = ["python/x.py"]\n',
                     kind="files")
    with pytest.raises(OverlayError, match=r"variants/u/v0\.5\.8/python/x\.py does not exist"):
        manifest_mod.load(files)
    p = files / "variants" / "u" / "v0.5.8" / "python" / "x.py"
    p.parent.mkdir(parents=True)
    p.write_text("x = 2\n")
    m = manifest_mod.load(files)
    chosen = m.variant_for(m.unit("u"), "v0.5.10.post1")
    assert chosen.variant == "v0.5.8" and m.files_dir(chosen) == p.parents[1]
    assert m.variant_for(m.unit("u"), "v0.5.6").variant is None


def test_bad_variant_on_the_command_line_writes_nothing(tmp_path, upstream, shared_cache):
    root = _overlay(tmp_path, '[[unit.variant]]\nfrom = "v0.5.x"\npatch = "patches/u/v0.5.3.patch"\n',
                    upstream=str(upstream))
    before = overlay_snapshot(root)
    r = overlay("-C", root, "check", "--sglang-ref", "v0.5.1", cache=shared_cache)
    assert r.rc == 2 and len(r.err.strip().splitlines()) == 1
    assert "'v0.5.x' is not a release tag" in r.err
    assert overlay_snapshot(root) == before


def _unit(*variants: Variant) -> Unit:
    return Unit(name="u", kind="patch", description="U", patch="patches/u.patch",
                variants=variants)


V3 = Variant("v0.5.3", patch="patches/u/v0.5.3.patch")
V18 = Variant("v0.5.18", until="v0.5.21", patch="patches/u/v0.5.18.patch")
V21 = Variant("v0.5.21", patch="patches/u/v0.5.21.patch")


@pytest.mark.parametrize("ref, chosen", [
    ("v0.5.1", None), ("v0.5.2", None), ("v0.5.3", "v0.5.3"), ("v0.5.3.post1", "v0.5.3"),
    ("v0.5.10.post1", "v0.5.3"), ("v0.5.18", "v0.5.18"), ("v0.5.21rc0", "v0.5.18"),
    ("v0.5.21", "v0.5.21"), ("v0.6.0", "v0.5.21"), ("main", None), (None, None),
])
def test_variant_for_picks_the_newest_variant_covering_the_release(tmp_path, ref, chosen):
    m = manifest_mod.Manifest(root=tmp_path, upstream_url="", ref="v0.5.1", commit=None,
                              units=[_unit(V3, V18, V21)])
    u = m.variant_for(m.units[0], ref)
    assert u.variant == chosen
    assert u.patch == (f"patches/u/{chosen}.patch" if chosen else "patches/u.patch")


def test_until_leaves_a_gap_for_the_units_own_content(tmp_path):
    gap = _unit(Variant("v0.5.3", until="v0.5.5", patch="patches/u/v0.5.3.patch"))
    m = manifest_mod.Manifest(root=tmp_path, upstream_url="", ref=None, commit=None,
                              units=[gap])
    assert [m.variant_for(gap, r).variant for r in ("v0.5.2", "v0.5.4", "v0.5.5")] == [
        None, "v0.5.3", None]


@pytest.mark.parametrize("pin, dropped, promoted", [
    ("v0.5.1", [], None),  # everything is still reachable
    ("v0.5.3", [], "v0.5.3"),  # nothing from v0.5.3 on uses the unit's own patch
    ("v0.5.12", [], "v0.5.3"),
    ("v0.5.18", ["v0.5.3"], "v0.5.18"),  # it ends where v0.5.21 takes over: no gap left
    ("v0.5.21", ["v0.5.3", "v0.5.18"], "v0.5.21"),
])
def test_unreachable_variants_from_a_new_pin(pin, dropped, promoted):
    d, p = unreachable_variants(_unit(V3, V18, V21), pin)
    assert [v.from_ref for v in d] == dropped
    assert (p.from_ref if p else None) == promoted


def test_a_gap_keeps_the_units_own_content():
    gap = _unit(Variant("v0.5.3", until="v0.5.5", patch="patches/u/v0.5.3.patch"))
    assert unreachable_variants(gap, "v0.5.4") == ([], None)  # v0.5.5+ use the own patch
    d, p = unreachable_variants(gap, "v0.5.6")
    assert [v.from_ref for v in d] == ["v0.5.3"] and p is None


def test_check_shows_which_variant_applied(tmp_path, upstream, shared_cache):
    root = copy_repo_overlay(tmp_path / "ov", upstream)
    v0521 = git(upstream, "rev-parse", "v0.5.21^{commit}")
    r = overlay("-C", root, "check", "--sglang-ref", "v0.5.1", "--sglang-ref", "v0.5.21",
                "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    cells = {u["name"]: u["cells"] for u in r.json["units"]}
    ps = cells["parallel-state-reuse"]
    assert (ps["v0.5.1"]["status"], ps["v0.5.1"]["variant"]) == ("applied", None)
    assert (ps["v0.5.21"]["status"], ps["v0.5.21"]["variant"]) == ("applied", "v0.5.21")
    assert ("parallel-state-reuse: its own patch on v0.5.1; variant from v0.5.21 on v0.5.21"
            in r.json["notes"])
    human = overlay("-C", root, "check", "--sglang-ref", "v0.5.1", "--sglang-ref", "v0.5.21",
                    cache=shared_cache)
    row = next(line for line in human.out.splitlines()
               if line.startswith("parallel-state-reuse"))
    assert row.split()[1:] == ["applied", "applied", "(variant", "v0.5.21)"]
    # a commit, not a tag: the variant of the release it is (git describe)
    by_sha = overlay("-C", root, "check", "--sglang-ref", v0521, "--json", cache=shared_cache)
    assert by_sha.rc == 0, by_sha.err
    cell = next(u for u in by_sha.json["units"]
                if u["name"] == "parallel-state-reuse")["cells"][v0521]
    assert cell["variant"] == "v0.5.21"


def test_refresh_writes_back_into_the_variant_it_was_built_with(tmp_path, upstream,
                                                               shared_cache):
    root = copy_repo_overlay(tmp_path / "ov", upstream)
    base_patch = (root / PS_PATCH).read_bytes()
    r = overlay("-C", root, "apply", "--sglang-ref", "v0.5.21", "--no-lint", "--json",
                cache=shared_cache)
    assert r.rc == 0, r.err
    wt = Path(r.json["worktree"])
    ps = wt / "python/sglang/srt/distributed/parallel_state.py"
    ps.write_text(ps.read_text().replace('logger.info("Reusing the initialized world group")',
                                         'logger.info("Reusing the world group")'))
    subject = git(wt, "log", "--format=%s", "--grep", "^parallel-state-reuse:", "-1")
    git(wt, "commit", "-qam", f"fixup! {subject}")
    env = {**os.environ, "GIT_SEQUENCE_EDITOR": "true"}
    import subprocess

    subprocess.run(["git", "rebase", "-q", "-i", "--autosquash", r.json["base"]], cwd=wt,
                   check=True, env=env, capture_output=True)
    out = overlay("-C", root, "refresh", "--worktree", wt, "--json", cache=shared_cache)
    assert out.rc == 0, out.err
    assert PS_V0521 in out.json["written"]
    assert b'+            logger.info("Reusing the world group")' in (root / PS_V0521).read_bytes()
    assert (root / PS_PATCH).read_bytes() == base_patch  # the v0.5.1 patch is not touched


def test_repository_overlay_is_clean_on_every_release(tmp_path, upstream, shared_cache):
    """The one check over every release the tests build, the newest included."""
    root = copy_repo_overlay(tmp_path / "ov", upstream)
    r = overlay("-C", root, "check", "--tags", "v*", "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    refs = [x["ref"] for x in r.json["refs"]]
    assert refs[-1] == "v0.5.23" and len(refs) == 16
    bad = {(u["name"], ref): c["status"] for u in r.json["units"]
           for ref, c in u["cells"].items()
           if c["status"] not in ("applied", "upstream-provides", "already-upstream")}
    assert bad == {}
    variants = {u["name"]: {ref: c["variant"] for ref, c in u["cells"].items()}
                for u in r.json["units"]}
    assert variants["parallel-state-reuse"]["v0.5.23"] == "v0.5.21"
    assert variants["expert-location-reset"]["v0.5.18"] == "v0.5.18"
    assert variants["reuse-distributed-test"]["v0.5.8"] == "v0.5.8"


def test_an_open_range_ends_where_the_next_variant_begins(tmp_path):
    """v0.5.2 is open, so it ends at v0.5.3; after v0.5.3's until the unit's
    own patch applies again (not v0.5.2's), and an upgrade into that gap drops
    both variants and keeps the own patch."""
    u = _unit(Variant("v0.5.2", patch="patches/u/v0.5.2.patch"),
              Variant("v0.5.3", until="v0.5.5", patch="patches/u/v0.5.3.patch"),
              Variant("v0.5.18", patch="patches/u/v0.5.18.patch"))
    m = manifest_mod.Manifest(root=tmp_path, upstream_url="", ref=None, commit=None, units=[u])
    assert [m.variant_for(u, r).variant for r in ("v0.5.2", "v0.5.4", "v0.5.5", "v0.5.18")] == [
        "v0.5.2", "v0.5.3", None, "v0.5.18"]
    d, p = unreachable_variants(u, "v0.5.5")
    assert [v.from_ref for v in d] == ["v0.5.2", "v0.5.3"] and p is None
    d, p = unreachable_variants(u, "v0.5.2")  # v0.5.5..v0.5.18 still use the own patch
    assert d == [] and p is None
