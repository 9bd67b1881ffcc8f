"""One test per README promise no other test file holds to: each fails when the
behaviour the README describes breaks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import (MODEL_FILE, ROOT, git, manifest_units, overlay, read_manifest,
                     write_overlay)

MODEL = "python/sglang/srt/models/my_llama.py"
OPT = "python/sglang/srt/models/opt.py"


def model_unit() -> list[dict]:
    return [{"name": "my-model", "kind": "files", "description": "My model\n\nFor tests.",
             "files": [MODEL]}]


def small_overlay(root: Path, upstream, **kw) -> Path:
    return write_overlay(root, upstream, model_unit(), {f"overlay/{MODEL}": MODEL_FILE}, **kw)


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("overlay: ") and "(fix: " in lines[0], err
    return lines[0]


# --- the cache -------------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["SGLANG_OVERLAY_CACHE", "XDG_CACHE_HOME"])
def test_cache_location_follows_the_environment(variable, tmp_path, upstream, monkeypatch):
    root = small_overlay(tmp_path / "ov", upstream)
    monkeypatch.delenv("SGLANG_OVERLAY_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # not the default either
    monkeypatch.setenv(variable, str(tmp_path / "env"))
    r = overlay("-C", root, "lint", "--json")  # no --cache-dir
    assert r.rc == 0, r.err
    cache = tmp_path / "env" / ("sglang-overlay" if variable == "XDG_CACHE_HOME" else "")
    assert [p.suffix for p in (cache / "mirrors").iterdir() if p.is_dir()] == [".git"]
    assert not (tmp_path / "home").exists()


# --- lint --------------------------------------------------------------------------------


def test_syntax_error_rule(tmp_path, upstream, shared_cache):
    broken = MODEL_FILE.replace("class MyLlamaForCausalLM(LlamaForCausalLM):",
                                "class MyLlamaForCausalLM(LlamaForCausalLM)")
    line = broken.splitlines().index("class MyLlamaForCausalLM(LlamaForCausalLM)") + 1
    root = write_overlay(tmp_path / "ov", upstream, model_unit(), {f"overlay/{MODEL}": broken})
    r = overlay("-C", root, "lint", "--json", cache=shared_cache)
    assert r.rc == 1, r.err
    found = [(f["rule"], f["path"], f["line"]) for f in r.json["findings"]]
    assert ("syntax-error", f"overlay/{MODEL}", line) in found


def test_lint_offline_needs_only_the_cache(tmp_path, upstream):
    """--offline works from the cache alone, even when the upstream is gone."""
    up = tmp_path / "up.git"
    git(tmp_path, "clone", "-q", "--bare", "--no-local", "--depth", "1", "--branch", "v0.5.1",
        f"file://{upstream}", str(up))
    root = small_overlay(tmp_path / "ov", up)
    cache = tmp_path / "cache"
    assert overlay("-C", root, "lint", cache=cache).rc == 0
    shutil.rmtree(up)
    r = overlay("-C", root, "lint", "--offline", "--json", cache=cache)
    assert r.rc == 0, r.err
    assert r.json["findings"] == []
    # and without --offline the missing upstream is the error
    assert overlay("-C", root, "lint", cache=cache).rc == 2


# --- check -------------------------------------------------------------------------------


def test_check_defaults_to_the_pin_and_the_newest_release(tmp_path, upstream, shared_cache):
    root = small_overlay(tmp_path / "ov", upstream)
    r = overlay("-C", root, "check", "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    assert [c["ref"] for c in r.json["refs"]] == ["v0.5.1", "v0.5.23"]


# --- git locks, the journal, internal errors ----------------------------------------------


def test_a_stale_git_lock_is_cleared(tmp_path, upstream):
    root = small_overlay(tmp_path / "ov", upstream)
    cache = tmp_path / "cache"
    assert overlay("-C", root, "apply", "--no-lint", cache=cache).rc == 0
    (mirror,) = (cache / "mirrors").glob("*.git")
    stale = mirror / "shallow.lock"  # as a fetch killed with -9 leaves it
    stale.write_text("")
    r = overlay("-C", root, "apply", "--no-lint", "--sglang-ref", "v0.5.2", "--json",
                cache=cache)
    assert r.rc == 0, r.err
    assert not stale.exists()


def test_a_git_lock_a_process_holds_is_left_alone(tmp_path):
    from sglang_overlay.gitutil import clear_stale_lock

    lock = tmp_path / "index.lock"
    message = f"fatal: Unable to create '{lock}': File exists."
    with open(lock, "w"):  # this process is the git that holds it
        assert clear_stale_lock(message, wait_for_holder=0) is False
        assert lock.exists()
    assert clear_stale_lock(message) is True  # nobody holds it any more
    assert not lock.exists()


def test_an_interrupted_transaction_is_finished_by_the_next_command(tmp_path, upstream,
                                                                    shared_cache,
                                                                    monkeypatch):
    from sglang_overlay import journal

    root = small_overlay(tmp_path / "ov", upstream)
    (root / "patches").mkdir()
    (root / "patches" / "old.patch").write_text("old\n")
    tx = journal.Transaction(root)
    tx.write("CHANGELOG.md", b"new changelog\n")
    tx.write(f"overlay/{MODEL}", MODEL_FILE.encode() + b"# changed\n")
    tx.delete("patches/old.patch")

    class Killed(BaseException):
        pass

    def die(*args):
        raise Killed  # the process dies right after the journal is written

    with monkeypatch.context() as m:
        m.setattr(journal, "_carry_out", die)
        with pytest.raises(Killed):
            tx.commit()
    assert not (root / "CHANGELOG.md").exists()  # half-way: nothing carried out yet
    r = overlay("-C", root, "lint", "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    assert (root / "CHANGELOG.md").read_bytes() == b"new changelog\n"
    assert (root / "overlay" / MODEL).read_text() == MODEL_FILE + "# changed\n"
    assert not (root / "patches" / "old.patch").exists()
    assert not (root / ".overlay" / "journal.json").exists()


def test_an_internal_error_exits_4_with_the_traceback(tmp_path, upstream, monkeypatch):
    from sglang_overlay.commands import lint as lint_cmd

    def bug(*args, **kwargs):
        raise ZeroDivisionError("planted bug")

    monkeypatch.setattr(lint_cmd, "run", bug)
    r = overlay("-C", small_overlay(tmp_path / "ov", upstream), "lint")
    assert r.rc == 4
    assert r.err.startswith("Traceback (most recent call last):")
    assert "ZeroDivisionError: planted bug" in r.err
    assert r.err.strip().splitlines()[-1].startswith("overlay: internal error (this is a bug")


# --- verify ------------------------------------------------------------------------------


def test_verify_exits_2_when_the_interpreter_cannot_be_inspected(tmp_path, upstream):
    root = small_overlay(tmp_path / "ov", upstream)
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    for python in (tmp_path / "no-python", fake):
        r = overlay("-C", root, "verify", "--python", python)
        assert r.rc == 2, r.out + r.err
        assert "--python" in one_line(r.err) and r.out == ""


# --- init --------------------------------------------------------------------------------


def test_init_writes_gitignore_and_runs_git_init(tmp_path, upstream, shared_cache):
    dest = tmp_path / "new"
    r = overlay("init", dest, "--upstream", upstream, "--sglang-ref", "v0.5.1",
                cache=shared_cache)
    assert r.rc == 0, r.err
    assert git(dest, "rev-parse", "--show-toplevel") == str(dest)
    ignored = (dest / ".gitignore").read_text().splitlines()
    for pattern in ("/sglang-*/", "/.sglang-*/", "/.overlay/", "/dist/", "/reports/", "/pr/"):
        assert pattern in ignored
    manifest = read_manifest(dest)
    assert manifest["upstream"] == {"url": str(upstream), "ref": "v0.5.1",
                                    "commit": git(upstream, "rev-parse", "v0.5.1^{commit}")}
    # what apply writes is ignored, so the overlay stays clean
    assert overlay("-C", dest, "apply", "--no-lint", cache=shared_cache).rc == 0
    assert (dest / "sglang-v0.5.1").is_dir()
    assert git(dest, "status", "--porcelain", "--untracked-files=all") == "\n".join(
        f"?? {p}" for p in (".gitignore", "overlay.toml", "overlay/.gitkeep",
                            "patches/.gitkeep"))


def test_init_inside_a_repository_does_not_nest_one(tmp_path, upstream, shared_cache):
    outer = tmp_path / "outer"
    outer.mkdir()
    git(outer, "init", "-q")
    r = overlay("init", outer / "ov", "--upstream", upstream, "--sglang-ref", "v0.5.1",
                cache=shared_cache)
    assert r.rc == 0, r.err
    assert not (outer / "ov" / ".git").exists()


def test_init_stores_any_url_as_valid_toml(tmp_path, upstream, shared_cache):
    """A quote or backslash in the upstream's path is kept, not a broken manifest."""
    odd = tmp_path / 'up "quoted" \\ dir.git'
    git(tmp_path, "clone", "-q", "--bare", "--no-local", "--depth", "1", "--branch", "v0.5.1",
        f"file://{upstream}", str(odd))
    r = overlay("init", tmp_path / "new", "--upstream", odd, "--sglang-ref", "v0.5.1",
                cache=shared_cache)
    assert r.rc == 0, r.err
    assert read_manifest(tmp_path / "new")["upstream"]["url"] == str(odd)


# --- apply --branch ------------------------------------------------------------------------


def test_apply_with_a_custom_branch(tmp_path, upstream, shared_cache):
    root = small_overlay(tmp_path / "ov", upstream)
    r = overlay("-C", root, "apply", "--no-lint", "--branch", "mine/feature", "--json",
                cache=shared_cache)
    assert r.rc == 0, r.err
    wt = root / "sglang-v0.5.1"
    assert git(wt, "symbolic-ref", "--short", "HEAD") == "mine/feature"
    assert git(wt, "show", f"mine/feature:{MODEL}", raw=True) == MODEL_FILE
    assert git(wt, "branch", "--list", "overlay/*") == ""  # not the default name as well
    again = overlay("-C", root, "apply", "--no-lint", "--branch", "mine/feature", "--json",
                    cache=shared_cache)
    assert again.rc == 0, again.err
    assert again.json["branch"] == "mine/feature" and again.json["changed"] is False
    assert again.json["commit"] == r.json["commit"] == git(wt, "rev-parse", "HEAD")


# --- patch files with git's quoted paths ------------------------------------------------


def test_patch_files_with_quoted_paths(tmp_path):
    """git quotes names with non-ASCII or special characters and ends names with
    spaces with a tab; the parser reads all of them."""
    from sglang_overlay import patchfile

    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    names = ["dir with space/naïve.py", 'q"uote\\d.py', "plain.py", "mode only.sh",
             "old name.py"]
    for n in names:
        (repo / n).parent.mkdir(exist_ok=True)
        (repo / n).write_text(f"# {n}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    for n in names[:3]:
        (repo / n).write_text(f"# {n}\nchanged = True\n")
    (repo / "mode only.sh").chmod(0o755)
    git(repo, "mv", "old name.py", "new näme.py")
    git(repo, "commit", "-qam", "change")
    data = subprocess.run(["git", "format-patch", "-1", "--stdout", "--full-index", "-M"],
                          cwd=repo, check=True, capture_output=True,
                          env={**os.environ, "GIT_CONFIG_GLOBAL": os.devnull}).stdout
    assert b'"b/dir with space/na\\303\\257ve.py"' in data  # quoted as git does
    patch = patchfile.parse(data)
    found = {(f.old_path, f.new_path) for f in patch.files}
    assert found == {("dir with space/naïve.py", "dir with space/naïve.py"),
                     ('q"uote\\d.py', 'q"uote\\d.py'), ("plain.py", "plain.py"),
                     ("mode only.sh", "mode only.sh"), ("old name.py", "new näme.py")}
    assert [len(f.hunks) for f in patch.files if f.path == "plain.py"] == [1]


def test_a_patch_unit_creating_a_non_ascii_path_applies(tmp_path, upstream, shared_cache):
    path = "python/sglang/srt/models/naïve model.py"
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q")
    (work / path).parent.mkdir(parents=True)
    (work / path).write_text("EntryClass = []\n")
    git(work, "add", "-A")
    git(work, "commit", "-qm", "Add a model with an odd name")
    data = subprocess.run(["git", "format-patch", "--root", "-1", "--stdout", "--full-index"],
                          cwd=work, check=True, capture_output=True,
                          env={**os.environ, "GIT_CONFIG_GLOBAL": os.devnull}).stdout
    assert b'+++ "b/python/sglang/srt/models/na\\303\\257ve model.py"' in data
    root = write_overlay(tmp_path / "ov", upstream, [
        {"name": "odd", "kind": "patch", "description": "odd", "patch": "patches/odd.patch"}],
        {"patches/odd.patch": data})
    r = overlay("-C", root, "apply", "--no-lint", "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    assert r.json["units"][0]["files"] == [path]
    assert (root / "sglang-v0.5.1" / path).read_text() == "EntryClass = []\n"


# --- capture --------------------------------------------------------------------------


def test_capture_with_base_keeps_binary_mode_and_type_changes(tmp_path, upstream, shared_cache):
    """A fork of v0.5.1 captured into an overlay pinned at v0.5.2 (--base v0.5.1):
    binary, mode-only and type changes become units, and apply on the base
    rebuilds the fork's tree exactly."""
    fork = tmp_path / "fork"
    git(tmp_path, "clone", "-q", "--no-checkout", str(upstream), str(fork))
    git(fork, "checkout", "-q", "-b", "mine", "v0.5.1")
    blob = bytes(range(256)) * 4
    (fork / "python/sglang/srt/weights.bin").write_bytes(blob)  # a new binary file
    (fork / "python/LICENSE").write_bytes(b"\0binary now\0")  # text -> binary
    (fork / "python/sglang/version.py").chmod(0o755)  # mode only
    utils = fork / "python/sglang/srt/hf_transformers_utils.py"
    utils.unlink()
    utils.symlink_to("utils.py")  # a file becomes a symlink: a type change
    git(fork, "add", "-A")
    git(fork, "commit", "-qm", "my fork")
    root = tmp_path / "ov"
    assert overlay("init", root, "--upstream", upstream, "--sglang-ref", "v0.5.2",
                   cache=shared_cache).rc == 0
    r = overlay("-C", root, "capture", "--from", fork, "--base", "v0.5.1", "--json",
                cache=shared_cache)
    assert r.rc == 0, r.err
    data = r.json
    assert data["base"] == "v0.5.1"
    assert data["merge_base"] == git(upstream, "rev-parse", "v0.5.1^{commit}")
    notes = {u["files"][0]: (u["kind"], u["note"]) for u in data["units"]}
    assert notes == {
        "overlay/python/sglang/srt/weights.bin": ("files", "new file"),
        "overlay/python/LICENSE": ("files", "binary change: whole file"),
        "patches/version.patch": ("patch", "change the mode of"),
        "patches/hf-transformers-utils.patch": ("patch", "change the type of"),
    }
    assert (root / "overlay/python/sglang/srt/weights.bin").read_bytes() == blob
    assert any("mode-only change (100644 -> 100755)" in n for n in data["notes"])
    assert any("type change (100644 -> 120000)" in n for n in data["notes"])
    assert manifest_units(root).keys() == {"weights", "license", "version",
                                           "hf-transformers-utils"}
    r = overlay("-C", root, "apply", "--no-lint", "--sglang-ref", "v0.5.1", "--json",
                cache=shared_cache)
    assert r.rc == 0, r.err
    assert r.json["tree"] == git(fork, "rev-parse", "HEAD^{tree}")


# --- pr ---------------------------------------------------------------------------------

PR_URL = "https://github.com/sgl-project/sglang/pull/12345"


def test_a_rejected_push_exits_1_and_a_recorded_pr_url_is_kept(tmp_path, upstream,
                                                               shared_cache):
    root = write_overlay(tmp_path / "ov", upstream, [
        {**model_unit()[0], "forwarded": PR_URL}], {f"overlay/{MODEL}": MODEL_FILE})
    rejecting = tmp_path / "rejecting.git"
    git(tmp_path, "clone", "-q", "--bare", str(upstream), str(rejecting))
    hook = rejecting / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'refusing every push' >&2\nexit 1\n")
    hook.chmod(0o755)
    r = overlay("-C", root, "pr", "--unit", "my-model", "--push", rejecting, "--out",
                tmp_path / "out", cache=shared_cache)
    assert r.rc == 1, r.out + r.err
    assert f"pushing pr/my-model to {rejecting} failed" in r.err
    assert git(rejecting, "for-each-ref", "refs/heads/pr") == ""
    assert manifest_units(root)["my-model"]["forwarded"] == PR_URL
    assert sorted(p.suffix for p in (tmp_path / "out").iterdir()) == [".md", ".patch"]
    # a push that goes through does not replace the PR URL you recorded either
    fork = tmp_path / "fork.git"
    git(tmp_path, "clone", "-q", "--bare", str(upstream), str(fork))
    ok = overlay("-C", root, "pr", "--unit", "my-model", "--push", fork, "--out",
                 tmp_path / "out", "--json", cache=shared_cache)
    assert ok.rc == 0, ok.err
    assert ok.json["forwarded"] == {"my-model": PR_URL}
    assert manifest_units(root)["my-model"]["forwarded"] == PR_URL
    assert git(fork, "rev-parse", "refs/heads/pr/my-model") == ok.json["commits"][0]["commit"]


# --- upgrade asks on a terminal ---------------------------------------------------------


def test_upgrade_asks_on_a_terminal_before_retiring_what_upstream_provides(tmp_path, upstream,
                                                                          shared_cache):
    import pty
    import termios

    ours = "# our own OPT\nEntryClass = []\n"
    root = write_overlay(tmp_path / "ov", upstream, [
        {"name": "opt-model", "kind": "files", "description": "OPT", "files": [OPT]}],
        {f"overlay/{OPT}": ours})
    master, slave = pty.openpty()
    attrs = termios.tcgetattr(slave)
    attrs[3] &= ~termios.ECHO  # the answer is not echoed into the JSON
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tools")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sglang_overlay", f"--cache-dir={shared_cache}", "-C", str(root),
         "upgrade", "--to", "v0.5.2", "--json"],
        stdin=slave, stdout=slave, stderr=subprocess.PIPE, env=env)
    os.close(slave)
    os.write(master, b"y\n")  # typed ahead: the terminal keeps it until the prompt reads
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    err = proc.stderr.read().decode()
    assert proc.wait() == 0, err
    # the question goes to stderr, so stdout stays the JSON report
    assert f"v0.5.2 has its own {OPT}" in err and "Retire unit 'opt-model'" in err
    data = json.loads(out.decode())
    assert data["retired"] == ["opt-model"]
    assert manifest_units(root)["opt-model"]["applied-upstream"] == "v0.5.2"
    assert not (root / "overlay" / OPT).exists()


# --- build and install --------------------------------------------------------------------


def tiny_wheel(dest: Path, name: str, version: str, requires: tuple = ()) -> Path:
    """A minimal valid wheel (METADATA, WHEEL, RECORD with hashes)."""
    import base64
    import hashlib
    import zipfile

    dist = name.replace("-", "_")
    files = {
        f"{dist}/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"{dist}-{version}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
            + "".join(f"Requires-Dist: {r}\n" for r in requires)).encode(),
        f"{dist}-{version}.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"),
    }
    record = "".join(
        f"{k},sha256={base64.urlsafe_b64encode(hashlib.sha256(v).digest()).rstrip(b'=').decode()}"
        f",{len(v)}\n" for k, v in files.items())
    files[f"{dist}-{version}.dist-info/RECORD"] = (
        record + f"{dist}-{version}.dist-info/RECORD,,\n").encode()
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for k, v in files.items():
            zf.writestr(k, v)
    return path


def test_a_failed_build_exits_1_with_its_output(tmp_path, upstream, shared_cache):
    root = write_overlay(tmp_path / "ov", upstream, [
        {"name": "setup", "kind": "files", "description": "breaks the build",
         "files": ["python/setup.py"]}],
        {"overlay/python/setup.py": "raise SystemExit('planted build failure')\n"})
    r = overlay("-C", root, "build", "--out", tmp_path / "out", cache=shared_cache)
    assert r.rc == 1, r.out + r.err
    assert "planted build failure" in r.err  # the build's own output is shown
    assert r.err.strip().splitlines()[-1].startswith("overlay: building the wheel failed: ")
    assert not (tmp_path / "out").exists() and not (root / "dist").exists()


def test_a_build_needing_what_this_python_lacks_runs_isolated(tmp_path, upstream, shared_cache,
                                                             monkeypatch):
    links = tmp_path / "links"
    tiny_wheel(links, "overlay-tiny-backend-dep", "1.0")
    monkeypatch.setenv("PIP_FIND_LINKS", f"{links} {os.environ.get('PIP_FIND_LINKS', '')}")
    pyproject = git(upstream, "show", "v0.5.1:python/pyproject.toml", raw=True).replace(
        'requires = ["setuptools>=61.0", "wheel"]',
        'requires = ["setuptools>=61.0", "wheel", "overlay-tiny-backend-dep"]', 1)
    assert "overlay-tiny-backend-dep" in pyproject
    root = write_overlay(tmp_path / "ov", upstream, [
        {"name": "build-needs", "kind": "files", "description": "a build requirement",
         "files": ["python/pyproject.toml"]}], {"overlay/python/pyproject.toml": pyproject})
    r = overlay("-C", root, "build", "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    assert r.json["method"] == "source" and r.json["isolation"] == "isolated"
    assert Path(r.json["wheel"]).name.startswith("sglang-0.5.1+overlay.")
    # offline, an isolated environment cannot be made: bad input naming what is missing
    off = overlay("-C", root, "build", "--offline", cache=shared_cache)
    assert off.rc == 2 and "overlay-tiny-backend-dep" in one_line(off.err)


def test_install_without_no_deps_installs_the_dependencies(tmp_path, monkeypatch):
    links = tmp_path / "links"
    tiny_wheel(links, "overlay-tiny-dep", "1.0")
    wheel = tiny_wheel(tmp_path / "dist", "sglang", "0.0.1", requires=("overlay-tiny-dep",))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    env = tmp_path / "env"
    base = Path(sys.base_prefix) / "bin" / "python3"
    subprocess.run([str(base), "-m", "venv", "--without-pip", "--system-site-packages", str(env)],
                   check=True)
    r = overlay("-C", tmp_path, "install", "--python", env / "bin" / "python", "--wheel", wheel,
                "--json")
    assert r.rc == 0, r.err
    assert r.json["no_deps"] is False and len(r.json["commands"]) == 2
    got = subprocess.run([str(env / "bin" / "python"), "-c",
                          "import overlay_tiny_dep, sglang; print(sglang.VERSION)"],
                         capture_output=True, text=True)
    assert got.returncode == 0 and got.stdout == "0.0.1\n", got.stderr


def test_ctrl_c_exits_130(tmp_path, upstream, monkeypatch):
    from sglang_overlay.commands import lint as lint_cmd

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(lint_cmd, "run", interrupted)
    r = overlay("-C", small_overlay(tmp_path / "ov", upstream), "lint")
    assert r.rc == 130 and r.err.strip() == "overlay: interrupted"
