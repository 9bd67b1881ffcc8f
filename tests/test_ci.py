"""`overlay ci github`: the generated workflows validate against GitHub's
workflow schema (check-jsonschema, offline), and their shell steps that need
no GPU run here, in order, as the runner would run them.

What cannot run here is replaced by stand-ins, each labelled as one:
`gh` (records its arguments), the `overlay` entry point `pip install` would
create (runs this worktree's tool), and the GPU suite (the CPU stand-in suite,
whose reports say cpu-standin). Steps that `uses:` an action are not run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from helpers import ROOT, TINY_SUITE, copy_repo_overlay, git, make_patch, overlay, write_overlay

WORKFLOWS = ("overlay.yml", "overlay-nightly.yml", "overlay-gpu.yml")
# a second model, for two shards
STRICT_MODEL = """
[[model]]
architecture = "StrictStandInForCausalLM"
hf-id = "cpu-standin/opt-125m-strict"
"""


def check_jsonschema() -> str:
    exe = Path(sys.executable).parent / "check-jsonschema"
    found = str(exe) if exe.exists() else shutil.which("check-jsonschema")
    assert found, "check-jsonschema is in the test extra: pip install -e '.[test]'"
    return found


@pytest.fixture
def stand_ins(tmp_path) -> Path:
    """A bin directory: `overlay` (stand-in for the entry point pip installs),
    `python`, and `gh` (stand-in: records each call, lists no issue)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "overlay").write_text(
        f"#!/bin/sh\n# stand-in for the `overlay` entry point of `pip install`\n"
        f"PYTHONPATH={ROOT / 'tools'} exec {sys.executable} -m sglang_overlay \"$@\"\n")
    (bin_dir / "gh").write_text(
        "#!/bin/sh\n# stand-in for GitHub's CLI: records the call and any --body-file\n"
        'echo "gh $*" >> "$GH_LOG"\n'
        'prev=""\nfor a in "$@"; do\n'
        '  if [ "$prev" = "--body-file" ]; then cat "$a" >> "$GH_LOG"; fi\n'
        '  prev="$a"\ndone\n')
    python_wrapper(bin_dir / "python")
    for name in ("overlay", "gh"):
        (bin_dir / name).chmod(0o755)
    return bin_dir


def python_wrapper(path: Path) -> None:
    """This interpreter under another path (a symlink would lose its venv)."""
    path.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    path.chmod(0o755)


def load(root: Path, name: str) -> dict:
    return yaml.safe_load((root / ".github" / "workflows" / name).read_text())


def step(doc: dict, job: str, step_id: str) -> dict:
    return next(s for s in doc["jobs"][job]["steps"] if s.get("id") == step_id)


def subst(text: str, values: dict) -> str:
    """GitHub's ${{ expr }} for the few expressions the workflows use."""
    def one(m):
        assert m.group(1) in values, f"no value for ${{{{ {m.group(1)} }}}}"
        return str(values[m.group(1)])
    return re.sub(r"\$\{\{\s*([^}]+?)\s*\}\}", one, text)


def run_step(root: Path, doc: dict, s: dict, env: dict, values: dict | None = None,
             ) -> subprocess.CompletedProcess:
    """Run a `run:` step as GitHub's runner does (bash -e), with the
    workflow's and the step's env."""
    values = {"vars.SGLANG_OVERLAY_UPSTREAM": env["SGLANG_OVERLAY_UPSTREAM"],
              "github.token": "stand-in-token", **(values or {})}
    full = {**os.environ, **env}
    for scope in (doc.get("env", {}), s.get("env", {})):
        full.update({k: subst(str(v), values) for k, v in scope.items()})
    return subprocess.run(["bash", "-e", "-c", subst(s["run"], values)], cwd=root, env=full,
                          capture_output=True, text=True)


def outputs(path: Path) -> dict:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


@pytest.fixture
def runner_env(tmp_path, stand_ins, upstream, shared_cache) -> dict:
    summary, output = tmp_path / "summary.md", tmp_path / "output.txt"
    summary.touch()
    output.touch()
    return {"PATH": f"{stand_ins}{os.pathsep}{os.environ['PATH']}",
            "SGLANG_OVERLAY_UPSTREAM": str(upstream),
            "SGLANG_OVERLAY_CACHE": str(shared_cache),
            "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_OUTPUT": str(output),
            "GITHUB_REF_NAME": "main", "GH_LOG": str(tmp_path / "gh.log"),
            "RUNNER_TEMP": str(tmp_path / "runner-temp"),
            "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


@pytest.fixture(scope="module")
def two_releases(upstream, tmp_path_factory) -> Path:
    """v0.5.1 and v0.5.2 only: `check`'s default (the pin and the newest
    release) stays two small releases."""
    path = tmp_path_factory.mktemp("two-releases") / "sglang.git"
    git(path.parent, "init", "-q", "--bare", str(path))
    git(upstream, "push", "-q", str(path), "v0.5.1", "v0.5.2")
    return path


def small_overlay(root: Path, upstream: Path, conflict: bool = False) -> Path:
    """One new file (applies on every release), and with conflict a patch of
    version.py's version line, which every release changes."""
    units = [{"name": "hello", "kind": "files", "description": "a new module",
              "files": ["python/sglang/srt/hello.py"]}]
    files = {"overlay/python/sglang/srt/hello.py": "GREETING = 'hello'\n"}
    if conflict:
        work = root.parent / "work"
        work.mkdir()
        files["patches/version.patch"] = make_patch(
            upstream, "v0.5.1", work,
            {"python/sglang/version.py": lambda t: t.replace('"0.5.1"', '"0.5.1+ours"')},
            "Mark the version")
        units.append({"name": "version", "kind": "patch", "description": "mark the version",
                      "patch": "patches/version.patch"})
    root = write_overlay(root, upstream, units, files)
    origin = root.parent / "origin.git"
    git(root.parent, "clone", "-q", "--bare", str(root), str(origin))
    git(root, "remote", "add", "origin", str(origin))
    return root


# --- generating and validating --------------------------------------------------------


def test_generated_workflows_validate_and_are_deterministic(tmp_path, upstream, shared_cache):
    root = copy_repo_overlay(tmp_path / "ov", upstream)
    with open(root / "overlay.toml", "a") as fh:
        fh.write(STRICT_MODEL)
    r = overlay("-C", root, "ci", "github", "--gpu-runner", "h100", "--json")
    assert r.rc == 0, r.err
    paths = [Path(p) for p in r.json["workflows"]]
    assert [p.name for p in paths] == list(WORKFLOWS) and r.json["shards"] == 2
    v = subprocess.run([check_jsonschema(), "--builtin-schema", "vendor.github-workflows",
                        *map(str, paths)], capture_output=True, text=True)
    assert v.returncode == 0, v.stdout + v.stderr
    first = {p.name: p.read_bytes() for p in paths}
    assert overlay("-C", root, "ci", "github", "--gpu-runner", "h100").rc == 0
    assert {p.name: p.read_bytes() for p in paths} == first  # same bytes again

    cpu, nightly, gpu = (load(root, n) for n in WORKFLOWS)
    assert set(cpu["on"]) == {"push", "pull_request"}
    assert [s.get("id") for s in cpu["jobs"]["check"]["steps"]][-2:] == ["lint", "check"]
    assert nightly["on"]["schedule"][0]["cron"]
    assert gpu["jobs"]["test"]["runs-on"] == ["self-hosted", "h100"]
    assert gpu["jobs"]["test"]["strategy"]["matrix"]["shard"] == [1, 2]
    assert '--shard "${{ matrix.shard }}/2"' in step(gpu, "test", "test")["run"]
    assert [s.get("id") for s in gpu["jobs"]["test"]["steps"]][3:7] == [
        "apply", "build", "install", "test"]
    uploads = [s for s in gpu["jobs"]["test"]["steps"]
               if s.get("uses", "").startswith("actions/upload-artifact")]
    assert uploads[0]["with"]["path"] == "reports/" and uploads[0]["if"] == "always()"
    # not this tool's repository: the workflows install the package
    assert "pip install sglang-overlay" in cpu["jobs"]["check"]["steps"][2]["run"]


def test_init_ci_github_and_bad_labels(tmp_path, upstream, shared_cache):
    dest = tmp_path / "new"
    r = overlay("init", dest, "--upstream", upstream, "--sglang-ref", "v0.5.1",
                "--ci", "github", "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    assert sorted(Path(p).name for p in r.json["workflows"]) == sorted(WORKFLOWS)
    assert load(dest, "overlay-gpu.yml")["jobs"]["test"]["runs-on"] == ["self-hosted", "gpu"]

    bad = tmp_path / "bad"
    r = overlay("init", bad, "--upstream", upstream, "--sglang-ref", "v0.5.1", "--ci", "github",
                "--gpu-runner", "gpu runner; rm -rf /", cache=shared_cache)
    assert r.rc == 2 and "--gpu-runner" in r.err and len(r.err.strip().splitlines()) == 1
    assert not bad.exists()
    r = overlay("-C", dest, "ci", "github", "--gpu-runner", "$(id)")
    assert r.rc == 2 and "--gpu-runner" in r.err
    assert load(dest, "overlay-gpu.yml")["jobs"]["test"]["runs-on"] == ["self-hosted", "gpu"]


# --- running the shell steps ----------------------------------------------------------


def test_cpu_workflow_lint_and_check_steps_run(tmp_path, two_releases, runner_env):
    root = small_overlay(tmp_path / "ov", two_releases)
    runner_env["SGLANG_OVERLAY_UPSTREAM"] = str(two_releases)
    assert overlay("-C", root, "ci", "github").rc == 0
    doc = load(root, "overlay.yml")
    for step_id in ("lint", "check"):
        p = run_step(root, doc, step(doc, "check", step_id), runner_env)
        assert p.returncode == 0, (step_id, p.stdout, p.stderr)
    summary = Path(runner_env["GITHUB_STEP_SUMMARY"]).read_text()
    # the matrix of the pin and the newest release, as markdown
    assert re.search(r"^\| *unit *\| *v0\.5\.1 *\| *v0\.5\.2 *\|", summary, re.M | re.I), summary
    assert re.search(r"^\| *hello *\| *applied *\| *applied *\|", summary, re.M), summary


def test_nightly_upgrades_and_opens_a_pull_request(tmp_path, two_releases, runner_env):
    root = small_overlay(tmp_path / "ov", two_releases)
    runner_env["SGLANG_OVERLAY_UPSTREAM"] = str(two_releases)
    assert overlay("-C", root, "ci", "github").rc == 0
    git(root, "add", "-A")
    git(root, "commit", "-qm", "workflows")
    doc = load(root, "overlay-nightly.yml")
    p = run_step(root, doc, step(doc, "upgrade", "newest"), runner_env)
    assert p.returncode == 0, p.stderr
    out = outputs(Path(runner_env["GITHUB_OUTPUT"]))
    assert out == {"pin": "v0.5.1", "newest": "v0.5.2", "action": "upgrade"}
    s = step(doc, "upgrade", "upgrade")
    assert s["if"] == "steps.newest.outputs.action == 'upgrade'"
    p = run_step(root, doc, s, runner_env, {"steps.newest.outputs.newest": out["newest"]})
    assert p.returncode == 0, p.stdout + p.stderr
    origin = tmp_path / "origin.git"
    manifest = git(origin, "show", "overlay/upgrade-v0.5.2:overlay.toml")
    assert 'ref = "v0.5.2"' in manifest
    gh = Path(runner_env["GH_LOG"]).read_text()
    assert gh.startswith("gh pr create --base main --head overlay/upgrade-v0.5.2")
    assert "overlay upgrade --to v0.5.2 --yes" in gh and "| hello |" in gh
    # a second night: the branch is there, nothing new is opened
    p = run_step(root, doc, s, runner_env, {"steps.newest.outputs.newest": out["newest"]})
    assert p.returncode == 0 and "already exists" in p.stdout
    assert Path(runner_env["GH_LOG"]).read_text() == gh


def test_nightly_conflict_opens_an_issue_with_the_matrix(tmp_path, two_releases, runner_env):
    root = small_overlay(tmp_path / "ov", two_releases, conflict=True)
    runner_env["SGLANG_OVERLAY_UPSTREAM"] = str(two_releases)
    assert overlay("-C", root, "ci", "github").rc == 0
    doc = load(root, "overlay-nightly.yml")
    p = run_step(root, doc, step(doc, "upgrade", "newest"), runner_env)
    assert p.returncode == 0, p.stderr
    out = outputs(Path(runner_env["GITHUB_OUTPUT"]))
    assert out["action"] == "issue" and out["newest"] == "v0.5.2"
    p = run_step(root, doc, step(doc, "upgrade", "issue"), runner_env,
                 {"steps.newest.outputs.newest": out["newest"],
                  "steps.newest.outputs.pin": out["pin"]})
    assert p.returncode == 0, p.stdout + p.stderr
    gh = Path(runner_env["GH_LOG"]).read_text()
    assert "gh issue list" in gh
    assert "gh issue create --title The overlay does not apply on SGLang v0.5.2" in gh
    assert re.search(r"^\| *version *\| *applied *\| *conflict *\|", gh, re.M), gh
    assert not (root / "sglang-v0.5.2").exists()  # no upgrade was attempted


def test_gpu_workflow_test_and_merge_steps_with_the_cpu_standin(tmp_path, upstream,
                                                                 runner_env):
    """The GPU job's `overlay test --shard` step, once per shard, with a CPU
    stand-in suite in place of the GPU suite (its reports say cpu-standin),
    then the report job's merge step on the shards' reports/ as downloaded."""
    root = write_overlay(tmp_path / "ov", upstream, [], models=[
        {"architecture": "GoodForCausalLM", "hf-id": "org/good"},
        {"architecture": "BadForCausalLM", "hf-id": "org/bad"}])
    assert overlay("-C", root, "ci", "github").rc == 0
    doc = load(root, "overlay-gpu.yml")
    suite = tmp_path / "standin-suite" / "test_generation_models.py"
    suite.parent.mkdir()
    suite.write_text(TINY_SUITE)  # a stand-in: prints the suite's lines, no torch
    env = {**runner_env, "SGLANG_OVERLAY_STANDIN_SUITE": str(suite)}
    venv_bin = Path(env["RUNNER_TEMP"]) / "sglang-env" / "bin"
    venv_bin.mkdir(parents=True)
    python_wrapper(venv_bin / "python")  # stand-in for the GPU environment
    shards = root / "shards"
    for i in (1, 2):
        p = run_step(root, doc, step(doc, "test", "test"), env, {"matrix.shard": i})
        latest = json.loads((root / "reports" / "latest.json").read_text())
        assert latest["runner"] == "cpu-standin"
        assert [m["model"] for m in latest["models"]] == [["org/good"], ["org/bad"]][i - 1]
        assert p.returncode == [0, 1][i - 1], p.stderr  # org/bad fails by design
        shutil.move(root / "reports", shards / f"reports-shard-{i}")  # upload + download
    p = run_step(root, doc, step(doc, "report", "merge"), env)
    assert p.returncode == 1, p.stdout + p.stderr  # a shard had a failure
    merged = json.loads((root / "reports" / "merged.json").read_text())
    assert [(m["model"], m["status"]) for m in merged["models"]] == [
        ("org/bad", "failed"), ("org/good", "passed")]
    for m in merged["models"]:
        assert (root / m["log"]).is_file() and (root / m["junit"]).is_file()
    suites = ET.parse(root / "reports" / "merged.junit.xml").getroot()
    assert suites.tag == "testsuites" and len(list(suites)) == 2
    summary = Path(env["GITHUB_STEP_SUMMARY"]).read_text()
    assert "CPU stand-in, not a GPU run" in summary and "| `org/good` | passed |" in summary
