"""One CLI: the upstream setting ($SGLANG_OVERLAY_UPSTREAM, the [mirrors] of the
user's config) on every verb, what the lock means with a mirror, hints that
name the way out, -C DIR for relative paths, and the small promises of
issue 11 (init --json and --help, plurals, lint lines, dry-run, refresh
--abort, build names, test shards)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers import TINY_SUITE, git, make_patch, overlay, overlay_snapshot, write_overlay
from sglang_overlay import report, shards
from sglang_overlay.commands import build as build_cmd
from sglang_overlay.commands.pr import resolve_remote
from sglang_overlay.errors import BadInput
from sglang_overlay.wheels import MANIFEST_ARCNAME

GITHUB = "https://github.com/sgl-project/sglang.git"
NEW_FILE = "python/sglang/srt/hello.py"


def github_overlay(root: Path, commit: str | None = None, models=None) -> Path:
    """An overlay whose manifest names GitHub (out of reach here): every
    command must fetch from the user's setting instead."""
    root = write_overlay(root, GITHUB, [
        {"name": "hello", "kind": "files", "description": "a new module", "files": [NEW_FILE]},
    ], {f"overlay/{NEW_FILE}": "GREETING = 'hello'\n"}, models=models, commit=False)
    if commit:
        path = root / "overlay.toml"
        path.write_text(path.read_text().replace('ref = "v0.5.1"',
                                                 f'ref = "v0.5.1"\ncommit = "{commit}"'))
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "overlay")
    return root


def user_config(monkeypatch, tmp_path, text: str) -> Path:
    home = tmp_path / "xdg"
    (home / "sglang-overlay").mkdir(parents=True)
    (home / "sglang-overlay" / "config.toml").write_text(text)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home / "sglang-overlay" / "config.toml"


# --- the upstream setting ----------------------------------------------------------


def test_every_verb_fetches_from_the_environment_setting(tmp_path, upstream, shared_cache,
                                                         monkeypatch):
    root = github_overlay(tmp_path / "ov")
    # without a setting: GitHub, out of reach; the failure names every way out
    r = overlay("-C", root, "lint", "--offline", cache=tmp_path / "empty-cache")
    assert r.rc == 2 and len(r.err.strip().splitlines()) == 1
    for named in ("SGLANG_OVERLAY_UPSTREAM", "config.toml", "[mirrors]", "--upstream",
                  "scripts/local_upstream.py"):
        assert named in r.err, (named, r.err)

    monkeypatch.setenv("SGLANG_OVERLAY_UPSTREAM", str(upstream))
    assert overlay("-C", root, "lint", cache=shared_cache).rc == 0
    r = overlay("-C", root, "check", "--sglang-ref", "v0.5.1", "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    assert [c["ref"] for c in r.json["refs"]] == ["v0.5.1"]
    r = overlay("-C", root, "apply", "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    assert r.json["upstream"] == f"file://{upstream}" and r.json["upstream_source"] == "env"
    assert r.json["base"] == git(upstream, "rev-parse", "v0.5.1^{commit}")

    fork = tmp_path / "fork"  # sparse: checking out all of SGLang takes long
    git(tmp_path, "clone", "-q", "--no-checkout", str(upstream), str(fork))
    git(fork, "sparse-checkout", "set", "--no-cone", "/python/sglang/srt/bye.py")
    git(fork, "checkout", "-q", "-b", "mine", "v0.5.1")
    (fork / "python/sglang/srt").mkdir(parents=True)
    (fork / "python/sglang/srt/bye.py").write_text("BYE = 1\n")
    git(fork, "add", "-A")
    git(fork, "commit", "-qm", "bye")
    # capture under -C with a relative --from: one unit, a normalized path
    r = overlay("-C", root, "capture", "--from", "../fork", cache=shared_cache)
    assert r.rc == 0, r.err
    assert f"captured 1 unit from {fork} " in r.out
    manifest = (root / "overlay.toml").read_text()
    assert f"(captured from {fork})" in manifest and ".." not in manifest

    git(root, "add", "-A")
    git(root, "commit", "-qm", "captured")
    r = overlay("-C", root, "upgrade", "--to", "v0.5.1.post1", "--yes", "--json",
                cache=shared_cache)
    assert r.rc == 0, r.err + r.out
    assert 'ref = "v0.5.1.post1"' in (root / "overlay.toml").read_text()

    # init: the manifest names GitHub, the pin comes from the setting
    r = overlay("init", tmp_path / "new", "--sglang-ref", "v0.5.1", "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    assert r.json["upstream"] == GITHUB and r.json["upstream_source"] == "env"
    assert r.json["commit"] == git(upstream, "rev-parse", "v0.5.1^{commit}")
    text = (tmp_path / "new" / "overlay.toml").read_text()
    assert f'url = "{GITHUB}"' in text
    # the mirror's commit is not written as GitHub's lock
    assert r.json["locked"] is False and "commit =" not in text


def test_config_mirrors_map_the_manifest_url(tmp_path, upstream, shared_cache, monkeypatch):
    root = github_overlay(tmp_path / "ov")
    # a prefix of the URL, without .git: the longest matching key wins
    user_config(monkeypatch, tmp_path, f'''
[mirrors]
"https://github.com/" = "/nowhere"
"https://github.com/sgl-project/sglang" = "{upstream}"
''')
    r = overlay("-C", root, "apply", "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    assert r.json["upstream_source"] == "config"
    assert r.json["upstream"] == f"file://{upstream}"
    # the environment wins over the file; --upstream over both
    monkeypatch.setenv("SGLANG_OVERLAY_UPSTREAM", "/nowhere/else")
    r = overlay("-C", root, "lint", cache=shared_cache)
    assert r.rc == 2 and "/nowhere/else" in r.err
    assert overlay("-C", root, "lint", "--upstream", upstream, cache=shared_cache).rc == 0


def test_a_broken_config_file_is_named(tmp_path, upstream, shared_cache, monkeypatch):
    root = github_overlay(tmp_path / "ov")
    path = user_config(monkeypatch, tmp_path, "[mirrors]\n'https://github.com' = 3\n")
    before = overlay_snapshot(root)
    r = overlay("-C", root, "lint", cache=shared_cache)
    assert r.rc == 2 and str(path) in r.err and "mirrors" in r.err
    assert len(r.err.strip().splitlines()) == 1 and overlay_snapshot(root) == before


@pytest.mark.parametrize("lock, status", [
    ("v0.5.1", "ok"),                    # a true mirror: the lock holds
    ("v0.5.1.post1", "mismatch"),        # same history, the tag moved: built on the lock
    ("0" * 39 + "1", "different-history"),  # not a mirror of GitHub at all
])
def test_what_the_lock_means_with_a_mirror(lock, status, tmp_path, upstream, shared_cache,
                                           monkeypatch):
    commit = lock if len(lock) == 40 else git(upstream, "rev-parse", f"{lock}^{{commit}}")
    root = github_overlay(tmp_path / "ov", commit=commit)
    monkeypatch.setenv("SGLANG_OVERLAY_UPSTREAM", str(upstream))
    r = overlay("-C", root, "apply", "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    assert r.json["lock"]["status"] == status
    v051 = git(upstream, "rev-parse", "v0.5.1^{commit}")
    if status == "ok":
        assert r.json["base"] == v051 and "MISMATCH" not in r.err and "HISTORY" not in r.err
    elif status == "mismatch":
        assert r.json["base"] == commit and "LOCK MISMATCH" in r.err
    else:
        assert r.json["base"] == v051
        assert "DIFFERENT HISTORY" in r.err and "the lock is not checked" in r.err
    assert f'commit = "{commit}"' in (root / "overlay.toml").read_text()  # never rewritten
    c = overlay("-C", root, "check", "--sglang-ref", "v0.5.1", "--json", cache=shared_cache)
    assert c.rc == 0 and c.json["refs"][0]["commit"] == r.json["base"]  # as apply built it
    assert any(n.startswith({"ok": "-", "mismatch": "LOCK MISMATCH",
                             "different-history": "DIFFERENT HISTORY"}[status])
               for n in c.json["notes"]) == (status != "ok")
    if status == "different-history":  # unless asked to
        r = overlay("-C", root, "apply", "--update-lock", "--json", cache=shared_cache)
        assert r.rc == 0 and r.json["lock"]["status"] == "locked"
        assert f'commit = "{v051}"' in (root / "overlay.toml").read_text()


def test_offline_miss_does_not_send_the_user_back_to_offline(tmp_path, upstream):
    root = write_overlay(tmp_path / "ov", upstream, [])
    r = overlay("-C", root, "lint", "--offline", cache=tmp_path / "empty-cache")
    assert r.rc == 2 and "run without --offline" in r.err
    assert "SGLANG_OVERLAY_UPSTREAM" in r.err and "scripts/local_upstream.py" in r.err
    assert "pass --offline" not in r.err


# --- -C DIR: relative paths are relative to DIR ------------------------------------


def test_relative_paths_resolve_against_dash_c(tmp_path, upstream, shared_cache, monkeypatch):
    root = write_overlay(tmp_path / "ov", GITHUB, [],
                         models=[{"architecture": "LlamaForCausalLM", "hf-id": "org/good"}])
    git(tmp_path, "clone", "-q", "--bare", str(upstream), str(root / "mirror.git"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # --upstream
    assert overlay("-C", root, "lint", "--upstream", "mirror.git", cache=shared_cache).rc == 0
    # --repack, --wheel: found in DIR (and then judged on their content)
    (root / "sglang-0.5.1-py3-none-any.whl").write_bytes(b"not a zip")
    r = overlay("-C", root, "build", "--repack", "sglang-0.5.1-py3-none-any.whl",
                cache=shared_cache)
    assert r.rc == 2 and "does not exist" not in r.err and "sglang-0.5.1" in r.err
    r = overlay("-C", root, "build", "--repack", "nope.whl", cache=shared_cache)
    assert r.rc == 2 and f"{root}/nope.whl does not exist" in r.err
    (root / "notes.txt").write_text("x")
    r = overlay("-C", root, "install", "--wheel", "notes.txt", "--python", sys.executable)
    assert r.rc == 2 and "not a wheel" in r.err
    # --standin-suite
    (root / "suite").mkdir()
    (root / "suite" / "test_generation_models.py").write_text(TINY_SUITE)
    r = overlay("-C", root, "test", "--dry-run", "--standin-suite", "suite", "--json")
    assert r.rc == 0, r.err
    assert r.json["runs"][0]["cwd"] == str(root / "suite")
    # --python: the suite's commands run from the suite's directory, so a relative
    # interpreter must be DIR's, made absolute
    (root / "bin").mkdir()
    (root / "bin" / "python").symlink_to(sys.executable)
    r = overlay("-C", root, "test", "--dry-run", "--standin-suite", "suite", "--python",
                "bin/python", "--json")
    assert r.rc == 0, r.err
    assert str(root / "bin" / "python") in json.dumps(r.json["runs"][0]), r.json["runs"][0]
    # --push
    assert resolve_remote(root, "mirror.git", False, cwd=root) == str(root / "mirror.git")
    with pytest.raises(BadInput):
        resolve_remote(root, "mirror.git", False, cwd=elsewhere)


# --- small promises ------------------------------------------------------------------


def test_init_help_and_json(tmp_path, upstream, shared_cache):
    r = overlay("init", "--help")
    assert r.rc == 0
    text = " ".join(r.out.split())
    assert "--sglang-ref REF Upstream tag, branch or commit to pin (required)." in text
    assert "--json" in text and "default: the pinned ref" not in text
    r = overlay("init", tmp_path / "n", "--upstream", upstream, "--sglang-ref", "v0.5.2",
                "--json", cache=shared_cache)
    assert r.rc == 0 and r.json["ref"] == "v0.5.2" and r.json["workflows"] == []
    assert r.json["upstream"] == str(upstream) and r.json["exit_code"] == 0


def test_lint_points_at_the_model_line(tmp_path, upstream, shared_cache):
    root = write_overlay(tmp_path / "ov", upstream, [], models=[
        {"architecture": "LlamaForCausalLM"},
        {"architecture": "NowhereForCausalLM", "hf-id": "org/nowhere"}])
    r = overlay("-C", root, "lint", "--json", cache=shared_cache)
    found = [f for f in r.json["findings"] if f["rule"] == "arch-unregistered"]
    lines = (root / "overlay.toml").read_text().splitlines()
    assert len(found) == 1 and found[0]["path"] == "overlay.toml"
    assert lines[found[0]["line"] - 1] == "[[model]]"
    assert lines[found[0]["line"]] == 'architecture = "NowhereForCausalLM"'


def test_every_verb_has_json():
    import click

    from sglang_overlay.cli import cli

    def leaves(group, prefix=()):
        for name, cmd in group.commands.items():
            if isinstance(cmd, click.Group):
                yield from leaves(cmd, prefix + (name,))
            else:
                yield prefix + (name,), cmd

    found = dict(leaves(cli))
    assert {"init", "apply", "lint", "check", "upgrade", "refresh", "capture", "build",
            "install", "verify", "test", "pr", ("ci", "github")} <= {
        k[0] if len(k) == 1 else k for k in found}
    for name, cmd in found.items():
        assert "--json" in [o for p in cmd.params for o in p.opts], name


def test_plurals():
    assert report.plural(1, "unit") == "1 unit"
    assert report.plural(0, "unit") == "0 units"
    assert report.plural(2, "ref") == "2 refs"


def test_dry_run_says_it_plans_against_the_tools_interpreter(tmp_path, upstream):
    root = write_overlay(tmp_path / "ov", upstream, [])
    checkout = tmp_path / "co"
    checkout.mkdir()
    tar = subprocess.run(["git", "--git-dir", str(upstream), "archive", "v0.5.1", "test/srt"],
                         check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(checkout)], input=tar, check=True)
    r = overlay("-C", root, "test", "--dry-run", "--worktree", checkout,
                "--model", "openai-community/gpt2")
    assert r.rc == 0, r.err
    assert "# note: --python not given" in r.out and "has no sglang" in r.out
    r = overlay("-C", root, "test", "--dry-run", "--worktree", checkout,
                "--model", "openai-community/gpt2", "--json")
    assert "has no sglang" in r.json["note"]


def test_build_never_replaces_a_wheel_made_the_other_way(tmp_path):
    dest = tmp_path / "sglang-0.5.1+overlay.abc-py3-none-any.whl"
    with zipfile.ZipFile(dest, "w") as zf:
        zf.writestr(MANIFEST_ARCNAME, json.dumps({"method": "source"}))
    before = dest.read_bytes()
    with pytest.raises(BadInput) as exc:
        build_cmd._refuse_other_method(dest, "repack")
    assert "built from source" in str(exc.value) and "--out" in str(exc.value)
    build_cmd._refuse_other_method(dest, "source")  # rebuilding the same way is fine
    build_cmd._refuse_other_method(tmp_path / "absent.whl", "repack")
    assert dest.read_bytes() == before


def test_refresh_abort_mentions_a_backup_only_when_something_was_saved(
        tmp_path, upstream, shared_cache):
    work = tmp_path / "work"
    work.mkdir()
    patch = make_patch(upstream, "v0.5.1", work, {
        "python/sglang/version.py": lambda t: t.replace('"0.5.1"', '"0.5.1+ours"')}, "mark")
    root = write_overlay(tmp_path / "ov", upstream, [
        {"name": "version", "kind": "patch", "description": "mark", "patch": "p/v.patch"}],
        {"p/v.patch": patch})
    for edit in (False, True):
        r = overlay("-C", root, "apply", "--sglang-ref", "v0.5.2", "--json", cache=shared_cache)
        assert r.rc == 1 and r.json["conflict"] == "version"
        if edit:
            (Path(r.json["resolution"]) / "NOTES").write_text("my notes\n")
        a = overlay("-C", root, "refresh", "--abort", "--json", cache=shared_cache)
        assert a.rc == 0, a.err
        assert bool(a.json["backup"]) == edit
        h = overlay("-C", root, "refresh", "--abort", cache=shared_cache)
        assert h.rc == 2  # nothing left to abort


def test_shards_split_the_models_deterministically():
    models = [f"org/m{i}" for i in range(5)]
    for n in range(1, 7):
        parts = [shards.take(models, i, n) for i in range(1, n + 1)]
        assert sorted(sum(parts, [])) == models  # each model in exactly one shard
        assert parts == [shards.take(models, i, n) for i in range(1, n + 1)]
    assert shards.take(models, 2, 2) == ["org/m1", "org/m3"]
    for bad in ("0/2", "3/2", "1", "a/b", "1/0"):
        with pytest.raises(BadInput):
            shards.parse(bad)


def test_test_shard_and_merge_bad_input(tmp_path, upstream):
    root = write_overlay(tmp_path / "ov", upstream, [],
                         models=[{"architecture": "GoodForCausalLM", "hf-id": "org/good"}])
    r = overlay("-C", root, "test", "--dry-run", "--shard", "3/2")
    assert r.rc == 2 and "--shard 3/2" in r.err and len(r.err.strip().splitlines()) == 1
    r = overlay("-C", root, "test", "--merge-reports", "nowhere")
    assert r.rc == 2 and "does not exist" in r.err
    r = overlay("-C", root, "test", "stray-argument")
    assert r.rc == 2 and "--merge-reports" in r.err
    for i, ref in enumerate(("v0.5.1", "v0.5.2")):
        d = tmp_path / f"shard{i}"
        d.mkdir()
        (d / "latest.json").write_text(json.dumps(
            {"ref": ref, "runner": "gpu", "models": [], "exit_code": 0}))
    r = overlay("-C", root, "test", "--merge-reports", tmp_path / "shard0", tmp_path / "shard1")
    assert r.rc == 2 and "differ in ref" in r.err
    assert not (root / "reports").exists()


@pytest.mark.parametrize("extras, expect", [(["srt", "all"], "[srt]"), (["diffusion"], "")])
def test_install_gpu_deps_takes_upstreams_gpu_extra_when_it_has_one(extras, expect, tmp_path):
    wheel = tmp_path / "sglang-0.5.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("sglang-0.5.1.dist-info/METADATA", "Name: sglang\nVersion: 0.5.1\n" + "".join(
            f"Provides-Extra: {e}\n" for e in extras))
    log = tmp_path / "pip.log"
    python = tmp_path / "python"  # stand-in interpreter: records what pip is asked
    python.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    python.chmod(0o755)
    r = overlay("-C", tmp_path, "install", "--gpu-deps", "--wheel", wheel.name,
                "--python", python, "--json")
    assert r.rc == 0, r.err
    calls = [line for line in log.read_text().splitlines() if line.startswith("-m pip")]
    assert calls[0].endswith(f"install --disable-pip-version-check {wheel}{expect}")
    assert calls[1].endswith(f"--no-deps --force-reinstall {wheel}")
    assert r.json["extras"] == (["srt"] if expect else [])
    r = overlay("-C", tmp_path, "install", "--gpu-deps", "--no-deps", "--wheel", wheel.name,
                "--python", python)
    assert r.rc == 2 and "contradict" in r.err
