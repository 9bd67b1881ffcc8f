"""`overlay check` across real releases, and `overlay init`."""

from __future__ import annotations

import pytest

import realcases
from helpers import copy_repo_overlay, git, overlay, overlay_snapshot, tree_snapshot, write_overlay

TEN = ["v0.5.1", "v0.5.1.post1", "v0.5.1.post2", "v0.5.1.post3", "v0.5.2", "v0.5.3",
       "v0.5.3.post1", "v0.5.4", "v0.5.5", "v0.5.6"]


def cells(run, unit):
    return {ref: c["status"] for ref, c in
            next(u for u in run.json["units"] if u["name"] == unit)["cells"].items()}


def test_check_across_releases_finds_where_upstream_caught_up(tmp_path, upstream, shared_cache):
    root = copy_repo_overlay(tmp_path / "ov", upstream)
    before = tree_snapshot(root)
    md = tmp_path / "compat.md"
    # the ten consecutive releases (a glob like v0.5.[0-6]* also takes v0.5.1x)
    refs = [arg for ref in TEN for arg in ("--sglang-ref", ref)]
    r = overlay("-C", root, "check", *refs, "--markdown", md, "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    assert [x["ref"] for x in r.json["refs"]] == TEN
    opt = cells(r, "opt-model")
    assert [opt[ref] for ref in TEN] == ["applied"] * 4 + ["upstream-provides"] * 6
    assert any(n.startswith("opt-model: upstream provides python/sglang/srt/models/opt.py "
                            "from v0.5.2 on") for n in r.json["notes"])
    assert set(cells(r, "parallel-state-reuse").values()) == {"applied"}
    # the reuse patches apply plainly everywhere: on v0.5.2 a variant of their own, and
    # from v0.5.3 (environ.py) the variants that declare the variable there
    assert set(cells(r, "expert-location-reset").values()) == {"applied"}
    reset = next(u for u in r.json["units"] if u["name"] == "expert-location-reset")["cells"]
    assert [reset[ref]["variant"] for ref in TEN] == [None] * 4 + ["v0.5.2"] + ["v0.5.3"] * 5
    case = cells(r, "opt-test-case")
    assert [case[ref] for ref in TEN] == ["applied"] * 4 + ["already-upstream"] * 6
    # the markdown file a README or PR can include
    text = md.read_text()
    assert "| UNIT | v0.5.1 |" in text and "| opt-model | applied |" in text
    assert "upstream-provides" in text
    # nothing the user owns is touched: no lock written, no worktree
    assert tree_snapshot(root) == before
    assert not list(root.glob("sglang-*"))


def test_check_table_and_parallel_workers_agree(tmp_path, upstream, shared_cache):
    root = copy_repo_overlay(tmp_path / "ov", upstream)
    one = overlay("-C", root, "check", "--sglang-ref", "v0.5.1", "--sglang-ref", "v0.5.3",
                  "--jobs", "1", "--json", cache=shared_cache)
    two = overlay("-C", root, "check", "--sglang-ref", "v0.5.1", "--sglang-ref", "v0.5.3",
                  "--jobs", "2", "--json", cache=shared_cache)
    assert one.json["units"] == two.json["units"]
    human = overlay("-C", root, "check", "--sglang-ref", "v0.5.1", "--sglang-ref", "v0.5.3",
                    cache=shared_cache)
    lines = human.out.splitlines()
    assert lines[0].split() == ["UNIT", "v0.5.1", "v0.5.3"]
    col = lines[0].index("v0.5.3")
    row = next(line for line in lines if line.startswith("opt-model"))
    assert row[col:].startswith("upstream-provides")


def test_check_reports_conflicts_and_lint_errors_per_ref(tmp_path, upstream, shared_cache):
    work = tmp_path / "work"
    work.mkdir()
    model = "python/sglang/srt/models/planted.py"
    root = write_overlay(tmp_path / "ov", upstream, [
        {"name": "planted", "kind": "files", "description": "uses a name v0.5.4 removed",
         "files": [model]},
        {"name": "clamp", "kind": "patch", "description": "clamp",
         "patch": "patches/clamp.patch"},
    ], {f"overlay/{model}":
        "from sglang.srt.managers.schedule_batch import global_server_args_dict\n"
        "from sglang.srt.models.llama import LlamaForCausalLM\n\n\n"
        "class PlantedForCausalLM(LlamaForCausalLM):\n    pass\n\n\n"
        "EntryClass = PlantedForCausalLM\n",
        "patches/clamp.patch": realcases.conflict_patch(upstream, work)})
    r = overlay("-C", root, "check", "--sglang-ref", "v0.5.1", "--sglang-ref", "v0.5.3",
                "--sglang-ref", "v0.5.4", "--json", cache=shared_cache)
    assert r.rc == 1
    assert cells(r, "planted") == {"v0.5.1": "applied", "v0.5.3": "applied",
                                   "v0.5.4": "lint-error"}
    assert cells(r, "clamp") == {"v0.5.1": "applied", "v0.5.3": "conflict", "v0.5.4": "conflict"}
    clamp = next(u for u in r.json["units"] if u["name"] == "clamp")["cells"]["v0.5.3"]
    assert clamp["files"] == [realcases.EXPERT_LOCATION] and clamp["hunks"]
    assert any(n.startswith("clamp: conflict from v0.5.3 on") for n in r.json["notes"])
    assert any("import-unresolved" in n for n in r.json["notes"] if n.startswith("planted"))


def test_init_starts_an_empty_overlay_pinned_and_locked(tmp_path, upstream, shared_cache):
    dest = tmp_path / "new-overlay"
    r = overlay("init", dest, "--upstream", upstream, "--sglang-ref", "v0.5.2",
                cache=shared_cache)
    assert r.rc == 0, r.err
    text = (dest / "overlay.toml").read_text()
    assert 'ref = "v0.5.2"' in text
    assert f'commit = "{git(upstream, "rev-parse", "v0.5.2^{commit}")}"' in text
    assert (dest / "overlay").is_dir() and (dest / "patches").is_dir()
    applied = overlay("-C", dest, "apply", "--json", cache=shared_cache)
    assert applied.rc == 0, applied.err
    assert applied.json["units"] == [] and applied.json["lock"]["status"] == "ok"
    # -C works from anywhere, and from a subdirectory of the overlay
    sub = overlay("-C", dest / "patches", "apply", "--json", cache=shared_cache)
    assert sub.rc == 0 and sub.json["changed"] is False


@pytest.mark.parametrize("args, named", [
    (["--sglang-ref", "v9.9.9"], "v9.9.9"),
    ([], "--sglang-ref"),
])
def test_init_bad_input_writes_nothing(args, named, tmp_path, upstream, shared_cache):
    dest = tmp_path / "nope"
    r = overlay("init", dest, "--upstream", upstream, *args, cache=shared_cache)
    assert r.rc == 2 and named in r.err and len(r.err.strip().splitlines()) == 1
    assert not dest.exists()


def test_init_refuses_an_existing_overlay(tmp_path, upstream, shared_cache):
    root = copy_repo_overlay(tmp_path / "ov", upstream)
    before = overlay_snapshot(root)
    r = overlay("init", root, "--upstream", upstream, "--sglang-ref", "v0.5.1",
                cache=shared_cache)
    assert r.rc == 2 and "already exists" in r.err
    assert overlay_snapshot(root) == before
