"""`overlay pr` on the real upstream fixture and a copy of this repository's overlay.

The formatter environment (black and isort at the versions the checkout's
.pre-commit-config.yaml pins) is installed from PyPI into the session's shared
cache the first time, so it is created once per test session.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import black
import isort
import pytest

from helpers import git, overlay, upstream_file, write_overlay
import helpers
from sglang_overlay import manifest as manifest_mod
from sglang_overlay import modeldocs, prbody, suite as suite_mod
from sglang_overlay.formatters import parse_pins

ROOT = Path(__file__).resolve().parents[1]
OPT = "python/sglang/srt/models/opt.py"
SUITE = "test/srt/models/test_generation_models.py"
DOCS = "docs/supported_models/generative_models.md"
OPT_ROW = "| **OPT** | `facebook/opt-125m` | Meta's Open Pretrained Transformer. |"
AUTHOR = ("Ada Overlay", "ada@example.org")


def copy_overlay(dest: Path) -> Path:
    """This repository's overlay, whose pull requests are authored by AUTHOR."""
    root = helpers.copy_repo_overlay(dest)
    git(root, "config", "user.name", AUTHOR[0])
    git(root, "config", "user.email", AUTHOR[1])
    return root


def fresh_checkout(upstream: Path, ref: str, dest: Path) -> Path:
    git(dest.parent, "clone", "-q", "--no-checkout", str(upstream), str(dest))
    git(dest, "checkout", "-q", "--detach", ref)
    return dest


def checklist(text: str) -> dict[str, bool]:
    section = text.split("## Checklist\n\n")[1]
    return {line[6:]: line[3] == "x" for line in section.splitlines()
            if line.startswith("- [")}


def headings(text: str) -> list[str]:
    return [s.title for s in prbody.parse_template(text).sections]


@pytest.fixture
def ov(tmp_path) -> Path:
    return copy_overlay(tmp_path / "ov")


@pytest.fixture
def fork(upstream, tmp_path) -> Path:
    """A bare 'fork' of upstream to push to (it has the releases, as a GitHub fork does)."""
    dest = tmp_path / "fork.git"
    git(tmp_path, "clone", "-q", "--bare", str(upstream), str(dest))
    return dest


def remote_branches(repo: Path) -> list[str]:
    return git(repo, "for-each-ref", "--format=%(refname)", "refs/heads/pr").splitlines()


def test_opt_model_pr(ov, upstream, shared_cache, tmp_path, fork):
    git(ov, "remote", "add", "fork", str(fork))
    r = overlay("-C", ov, "pr", "--unit", "opt-model", "--upstream", upstream, "--json",
                cache=shared_cache)
    assert r.rc == 0, r.err
    data = r.json
    assert data["branch"] == "pr/opt-model" and data["units"] == ["opt-model"]
    assert [c["subject"] for c in data["commits"]] == ["Add native OPT model (OPTForCausalLM)"]
    assert sorted(f["path"] for f in data["files"]) == sorted([OPT, SUITE, DOCS])
    assert data["formatters"]["versions"] == {"isort": "5.13.2", "black": "24.10.0"}
    assert data["pushed"] is None and remote_branches(fork) == []  # never without --push

    # The series applies with `git am` on a fresh checkout of v0.5.1, to the same tree.
    out = ov / "pr" / "opt-model"
    patches = sorted(out.glob("*.patch"))
    assert [p.name for p in patches] == ["0001-Add-native-OPT-model-OPTForCausalLM.patch"]
    co = fresh_checkout(upstream, "v0.5.1", tmp_path / "co")
    git(co, "am", "-q", *map(str, patches))
    assert git(co, "rev-parse", "HEAD^{tree}") == data["tree"]
    assert git(co, "log", "-1", "--format=%an <%ae>") == f"{AUTHOR[0]} <{AUTHOR[1]}>"
    body = git(co, "log", "-1", "--format=%b")
    assert "Overlay-Unit" not in body and "SGLang v0.5.1 has no OPT implementation" in body

    # opt.py, its ModelCase in the suite, its row in the docs table
    assert (co / OPT).read_text() == (ov / "overlay" / OPT).read_text()
    suite = suite_mod.find_suite(co)
    assert suite.cases["facebook/opt-125m"].fields["skip_long_prompt"] is True
    suite_text = (co / SUITE).read_text()
    assert '    ModelCase("facebook/opt-125m", skip_long_prompt=True),\n]' in suite_text
    docs = (co / DOCS).read_text()
    assert docs.count(OPT_ROW) == 1
    assert docs == upstream_file(upstream, "v0.5.1", DOCS) + OPT_ROW + "\n"

    # Running the pinned formatters again on the changed files changes nothing.
    assert (black.__version__, isort.__version__) == ("24.10.0", "5.13.2")
    py = [f["path"] for f in data["files"] if f["path"].endswith(".py")]
    for tool in (["isort", "--check-only", "--filter-files"], ["black", "--check"]):
        res = subprocess.run([sys.executable, "-m", *tool, *py], cwd=co, capture_output=True,
                             text=True)
        assert res.returncode == 0, res.stdout + res.stderr

    # PR_BODY.md: every section of the checkout's template, honestly filled
    text = (out / "PR_BODY.md").read_text()
    template = upstream_file(upstream, "v0.5.1", ".github/pull_request_template.md")
    assert headings(text) == headings(template) == [
        "Motivation", "Modifications", "Accuracy Tests", "Benchmarking and Profiling",
        "Checklist"]
    opt_lines = len((ov / "overlay" / OPT).read_text().splitlines())
    assert f"- `python/sglang/srt/models/opt.py` (+{opt_lines} -0, new file)" in text
    # plus the ModelCase line in the suite and the row in the docs table
    assert f"3 files changed, +{opt_lines + 2} -0" in text
    motivation = text.split("## Motivation\n\n")[1].split("\n## ")[0]
    assert motivation.startswith("SGLang v0.5.1 has no OPT implementation, so OPT checkpoints")
    assert "Not run: no GPU run" in text and "stand-in" not in text
    # the checklist ticks what the PR does: formatted, a ModelCase (a test), a docs row
    assert checklist(text) == {
        "Format your code according to the pre-commit configuration.": True,
        "Add unit tests for the change.": True,
        "Update documentation as needed.": True,
        "Provide accuracy and speed benchmark results where relevant.": False,
    }
    assert data["checked"] == ["format", "tests", "docs"]
    assert data["accuracy"] == "not-run"

    # The manifest records it as prepared (DEP-3: forwarded).
    m = manifest_mod.load(ov)
    assert m.unit("opt-model").forwarded == "prepared:pr/opt-model"
    assert m.unit("parallel-state-reuse").forwarded == "no"

    # Again, the same: same commits, same bytes.
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    again = overlay("-C", ov, "pr", "--unit", "opt-model", "--upstream", upstream, "--json",
                    cache=shared_cache)
    assert again.rc == 0, again.err
    assert again.json["head"] == data["head"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    # --push fork (a remote configured in the overlay repository) pushes the branch.
    pushed = overlay("-C", ov, "pr", "--unit", "opt-model", "--upstream", upstream,
                     "--push", "fork", "--json", cache=shared_cache)
    assert pushed.rc == 0, pushed.err
    assert remote_branches(fork) == ["refs/heads/pr/opt-model"]
    assert git(fork, "rev-parse", "refs/heads/pr/opt-model") == data["head"]
    assert manifest_mod.load(ov).unit("opt-model").forwarded == f"{fork}#pr/opt-model"


REUSE_FILES = ["python/sglang/srt/distributed/parallel_state.py",
               "python/sglang/srt/eplb/expert_location.py",
               "test/srt/test_reuse_distributed.py"]


def test_required_units_come_along(ov, upstream, shared_cache, tmp_path, fork):
    r = overlay("-C", ov, "pr", "--unit", "expert-location-reset", "--upstream", upstream,
                "--push", fork, "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    data = r.json
    # the test travels: parallel-state-reuse requires it
    assert data["units"] == ["reuse-distributed-test", "parallel-state-reuse",
                             "expert-location-reset"]
    assert [c["subject"] for c in data["commits"]] == [
        "Test several ModelRunners sharing the process groups",
        "Let a second ModelRunner reuse the initialized process groups",
        "Allow resetting the global expert-location metadata on reuse",
    ]
    assert [f["path"] for f in data["files"]] == REUSE_FILES
    co = fresh_checkout(upstream, "v0.5.1", tmp_path / "co")
    git(co, "am", "-q", *sorted(str(p) for p in (ov / "pr" / "expert-location-reset")
                                .glob("*.patch")))
    assert git(co, "rev-parse", "HEAD^{tree}") == data["tree"]
    assert "_reuse_distributed_allowed" in (
        co / "python/sglang/srt/distributed/parallel_state.py").read_text()
    assert remote_branches(fork) == ["refs/heads/pr/expert-location-reset"]  # a path works too
    m = manifest_mod.load(ov)
    url = f"{fork}#pr/expert-location-reset"
    assert m.unit("expert-location-reset").forwarded == url
    assert m.unit("parallel-state-reuse").forwarded == url  # it travels in this PR
    assert m.unit("opt-model").forwarded == "no"
    text = (ov / "pr" / "expert-location-reset" / "PR_BODY.md").read_text()
    assert "**Let a second ModelRunner reuse the initialized process groups**" in text
    assert "this change adds no model" in text
    # a test file, no docs: only tests and formatting are ticked
    assert checklist(text)["Add unit tests for the change."] is True
    assert checklist(text)["Update documentation as needed."] is False


def test_commit_message_and_body_carry_the_whole_description(ov, upstream, shared_cache,
                                                             tmp_path):
    """The "Why" travels, in upstream's words; the overlay's bookkeeping does not."""
    # a DEP-3 field someone left in a description must not reach upstream
    text = (ov / "overlay.toml").read_text().replace(
        'nothing\nchanges."""\npatch = "patches/parallel-state-reuse.patch"',
        'nothing\nchanges.\n\nForwarded: no\nOrigin: vendor"""\n'
        'patch = "patches/parallel-state-reuse.patch"')
    assert "Origin: vendor" in text
    (ov / "overlay.toml").write_text(text)
    git(ov, "commit", "-qam", "a DEP-3 field in a description")
    r = overlay("-C", ov, "pr", "--unit", "parallel-state-reuse", "--upstream", upstream,
                "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    out = ov / "pr" / "parallel-state-reuse"
    co = fresh_checkout(upstream, "v0.5.1", tmp_path / "co")
    git(co, "am", "-q", *sorted(str(p) for p in out.glob("*.patch")))
    message = git(co, "log", "-1", "--format=%B")
    body = (out / "PR_BODY.md").read_text()
    description = manifest_mod.load(ov).unit("parallel-state-reuse").description
    for paragraph in description.split("\n\n")[1:-1]:  # every paragraph but the DEP-3 one
        assert paragraph in message
        assert " ".join(paragraph.split()) in " ".join(body.split())
    assert "RL and evaluation frameworks run several ModelRunner instances" in message
    assert "With the variable unset, nothing\nchanges." in message
    for text in (message, body):
        assert "Forwarded:" not in text and "Origin:" not in text
        assert "Overlay-" not in text and "exactly upstream's" not in text


def test_unit_upstream_provides_stops_unless_replace(ov, upstream, shared_cache, tmp_path):
    before = (ov / "overlay.toml").read_bytes()
    r = overlay("-C", ov, "pr", "--unit", "opt-model", "--upstream", upstream,
                "--base", "v0.5.10.post1", cache=shared_cache)
    assert r.rc == 1
    theirs = upstream_file(upstream, "v0.5.10.post1", OPT)
    ours = (ov / "overlay" / OPT).read_text()
    with_ours = tmp_path / "numstat"
    with_ours.mkdir()
    (with_ours / "a").write_text(theirs)
    (with_ours / "b").write_text(ours)
    numstat = subprocess.run(["git", "diff", "--no-index", "--numstat", "a", "b"],
                             cwd=with_ours, capture_output=True, text=True).stdout.split()
    size = f"+{numstat[0]} -{numstat[1]}"
    assert r.err.strip().splitlines() == [
        f"overlay: upstream has its own {OPT} since v0.5.2; unit 'opt-model' would replace "
        f"it on v0.5.10.post1 ({size}) (fix: pass --replace to prepare a PR that replaces "
        "upstream's implementation, or retire the unit (`overlay upgrade` does))"]
    assert (ov / "overlay.toml").read_bytes() == before and not (ov / "pr").exists()

    r = overlay("-C", ov, "pr", "--unit", "opt-model", "--upstream", upstream,
                "--base", "v0.5.10.post1", "--replace", "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    assert r.json["replaces"] == {"opt-model": {"files": [OPT], "since": "v0.5.2",
                                                "added": int(numstat[0]),
                                                "removed": int(numstat[1])}}
    subject = r.json["commits"][0]["subject"]
    assert subject == "Replace opt.py with native OPT model (OPTForCausalLM)"
    body = (ov / "pr" / "opt-model" / "PR_BODY.md").read_text()
    motivation = body.split("## Motivation\n\n")[1].split("\n## ")[0]
    lines = len(theirs.splitlines())
    assert " ".join(motivation.split()).startswith(
        f"This replaces upstream's {OPT} ({lines} lines, in SGLang since v0.5.2) with the "
        f"implementation described below ({size}).")
    co = fresh_checkout(upstream, "v0.5.10.post1", tmp_path / "co")
    git(co, "am", "-q", *sorted(str(p) for p in (ov / "pr" / "opt-model").glob("*.patch")))
    assert git(co, "rev-parse", "HEAD^{tree}") == r.json["tree"]
    assert "This replaces upstream's" in git(co, "log", "-1", "--format=%b")


def test_reuse_pr_on_the_newest_release_follows_its_conventions(ov, upstream, shared_cache,
                                                                  tmp_path):
    r = overlay("-C", ov, "pr", "--unit", "parallel-state-reuse", "--upstream", upstream,
                "--base", "v0.5.23", "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    assert [f["path"] for f in r.json["files"]] == [
        "python/sglang/srt/distributed/parallel_state.py",
        "python/sglang/srt/environ.py",
        "test/registered/distributed/test_reuse_distributed.py",
    ]
    co = fresh_checkout(upstream, "v0.5.23", tmp_path / "co")
    git(co, "am", "-q", *sorted(str(p) for p in (ov / "pr" / "parallel-state-reuse")
                                .glob("*.patch")))
    assert git(co, "rev-parse", "HEAD^{tree}") == r.json["tree"]
    ps = (co / "python/sglang/srt/distributed/parallel_state.py").read_text()
    assert "envs.SGLANG_ALLOW_REUSE_DISTRIBUTED.get()" in ps and "os.environ.get(\"SGLANG_ALLOW" not in ps
    assert "SGLANG_ALLOW_REUSE_DISTRIBUTED = EnvBool(False)" in (
        co / "python/sglang/srt/environ.py").read_text()
    # formatting touched only the changed lines: the rest is upstream's, byte for byte
    diff = git(co, "diff", "--numstat", "v0.5.23", "HEAD", "--",
               "python/sglang/srt/distributed/parallel_state.py")
    added, removed = map(int, diff.split()[:2])
    assert removed == 0 and added < 60


def test_bad_input_writes_nothing(ov, upstream, shared_cache, tmp_path):
    before = (ov / "overlay.toml").read_bytes()
    r = overlay("-C", ov, "pr", "--unit", "no-such-unit", "--upstream", upstream,
                cache=shared_cache)
    assert r.rc == 2
    assert r.err.strip().splitlines() == [
        "overlay: overlay.toml: no unit named 'no-such-unit' (fix: use one of: opt-model, "
        "reuse-distributed-test, parallel-state-reuse, expert-location-reset, "
        "opt-test-case)"]
    r = overlay("-C", ov, "pr", "--unit", "opt-model", "--upstream", upstream,
                "--push", "nowhere", cache=shared_cache)
    assert r.rc == 2 and "--push nowhere: not a remote" in r.err
    assert len(r.err.strip().splitlines()) == 1
    r = overlay("-C", ov, "pr", "--unit", "opt-model", "--upstream", upstream,
                "--base", "v9.9.9", cache=shared_cache)
    assert r.rc == 2 and "v9.9.9" in r.err
    assert (ov / "overlay.toml").read_bytes() == before
    assert not (ov / "pr").exists()


def test_unit_upstream_already_has_is_a_finding(upstream, shared_cache, tmp_path):
    path = "python/sglang/srt/models/llama.py"
    root = write_overlay(
        tmp_path / "ov", upstream,
        units=[{"name": "same", "kind": "files", "description": "Llama", "files": [path]}],
        files={f"overlay/{path}": upstream_file(upstream, "v0.5.1", path)})
    r = overlay("-C", root, "pr", "--unit", "same", cache=shared_cache)
    assert r.rc == 1
    assert "unit 'same' changes nothing on v0.5.1: upstream already has it" in r.err
    assert not (root / "pr").exists()
    assert manifest_mod.load(root).unit("same").forwarded == "no"


UGLY_MODEL = textwrap.dedent('''\
    import torch
    import os,sys
    from sglang.srt.models.llama import LlamaForCausalLM
    class TinyForCausalLM(LlamaForCausalLM):
        def describe(self): return {'name':'tiny','dims':[1,2 ,3]}
    EntryClass=TinyForCausalLM
    ''')


def test_model_unit_is_formatted_with_the_pinned_tools(upstream, shared_cache, tmp_path):
    path = "python/sglang/srt/models/tiny.py"
    root = write_overlay(
        tmp_path / "ov", upstream,
        units=[{"name": "tiny", "kind": "files", "description": "Tiny model\n\nFor tests.",
                "files": [path]}],
        files={f"overlay/{path}": UGLY_MODEL},
        models=[{"architecture": "TinyForCausalLM", "unit": "tiny", "hf-id": "org/tiny-1b",
                 "family": "Tiny", "description": "A tiny test model.",
                 "decode-tolerance": 0.08}])
    r = overlay("-C", root, "pr", "--unit", "tiny", "--out", tmp_path / "out", "--json",
                cache=shared_cache)
    assert r.rc == 0, r.err
    assert r.json["commits"][0]["subject"] == "Add tiny model"
    co = fresh_checkout(upstream, "v0.5.1", tmp_path / "co")
    git(co, "am", "-q", *sorted(str(p) for p in (tmp_path / "out").glob("*.patch")))
    # isort (profile black, sglang first party) then black, as the checkout configures them
    assert (co / path).read_text() == textwrap.dedent('''\
        import os
        import sys

        import torch

        from sglang.srt.models.llama import LlamaForCausalLM


        class TinyForCausalLM(LlamaForCausalLM):
            def describe(self):
                return {"name": "tiny", "dims": [1, 2, 3]}


        EntryClass = TinyForCausalLM
        ''')
    assert r.json["formatters"]["versions"] == {"isort": "5.13.2", "black": "24.10.0"}
    body = (tmp_path / "out" / "PR_BODY.md").read_text()
    assert ("Formatted with isort 5.13.2 and black 24.10.0, as pinned in "
            f"`.pre-commit-config.yaml`, on the changed lines of the Python files; they changed `{path}`"
            in body), body
    assert 'ModelCase("org/tiny-1b", decode_tolerance=0.08),' in (co / SUITE).read_text()
    assert "| **Tiny** | `org/tiny-1b` | A tiny test model. |" in (co / DOCS).read_text()
    assert not (root / "pr").exists()  # --out was used


def test_offline_without_the_formatter_env_is_bad_input(ov, upstream, tmp_path):
    cache = tmp_path / "cache"
    warm = overlay("-C", ov, "apply", "--upstream", upstream, "--no-lint", cache=cache)
    assert warm.rc == 0, warm.err
    r = overlay("-C", ov, "pr", "--unit", "opt-model", "--upstream", upstream, "--offline",
                cache=cache)
    assert r.rc == 2
    assert "formatter environment black-24.10.0_isort-5.13.2 is not in the cache" in r.err
    assert not (ov / "pr").exists()


# --- the pieces -----------------------------------------------------------------------


def test_parse_pins(upstream):
    pins = parse_pins(upstream_file(upstream, "v0.5.1", ".pre-commit-config.yaml"))
    assert pins.versions == {"isort": "5.13.2", "black": "24.10.0"}
    assert pins.order == ["isort", "black"] and pins.key == "black-24.10.0_isort-5.13.2"
    other = parse_pins(textwrap.dedent("""\
        repos:
          - repo: https://github.com/psf/black-pre-commit-mirror
            rev: 24.4.2   # black
            hooks: [{id: black}]
          - repo: https://github.com/astral-sh/ruff-pre-commit
            rev: v0.4.0
          - repo: "https://github.com/pycqa/isort"
            rev: "v5.12.0"
        """))
    assert other.versions == {"black": "24.4.2", "isort": "5.12.0"}
    assert other.order == ["black", "isort"]
    # any YAML spelling: flow style, a comment line between the keys, rev first
    flow = parse_pins(textwrap.dedent("""\
        repos: [{repo: 'https://github.com/PyCQA/isort', rev: 5.13.2},
                {rev: 24.10.0,
                 # the formatter
                 repo: https://github.com/psf/black}]
        """))
    assert flow.versions == {"isort": "5.13.2", "black": "24.10.0"}
    assert flow.order == ["isort", "black"]
    assert parse_pins("repos: [unclosed").versions == {}
    assert parse_pins("- just a list\n").versions == {}


def test_docs_rows_follow_the_table_style():
    plain = ("| Model Family | Example HuggingFace Identifier | Description |\n"
             "|---|---|---|\n"
             "| **Llama** (2, 3) | `meta-llama/Llama-3.1-8B` | Meta's LLMs. |\n")
    row = modeldocs.Row("OPT", "facebook/opt-125m", "Meta's OPT.")
    text, added = modeldocs.add_model_rows(plain + "\nMore text.\n", [row])
    assert added == ["facebook/opt-125m"]
    assert text == plain + "| **OPT** | `facebook/opt-125m` | Meta's OPT. |\n\nMore text.\n"
    assert modeldocs.add_model_rows(text, [row]) == (text, [])  # already there
    same_family = modeldocs.Row("Llama", "meta-llama/Other", "x")
    assert modeldocs.add_model_rows(plain, [same_family]) == (plain, [])
    aligned = ("| Family    | Identifier          | About        |\n"
               "|-----------|---------------------|--------------|\n"
               "| **Llama** | `meta-llama/Llama`  | Meta's LLMs. |\n")
    text, _ = modeldocs.add_model_rows(aligned, [modeldocs.Row("OPT", "f/opt", "OPT.")])
    assert text.splitlines()[-1] == "| **OPT**   | `f/opt`             | OPT.         |"
    with pytest.raises(modeldocs.NoTable):
        modeldocs.add_model_rows("# no table\n", [row])


def _info(models):
    return prbody.PRInfo(unit_name="opt-model", motivation="Why.", models=models,
                         files=[prbody.FileChange(OPT, 386, 0, "A")],
                         commits=["Add native OPT model"], formatting="Formatted.")


def test_body_uses_only_gpu_runs_as_accuracy_evidence(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    model = {"model": "facebook/opt-125m", "status": "passed", "max_prefill_diff": 0.0123,
             "max_decode_diff": 0.0045, "rouge_l_min": 0.96,
             "tolerances": {"prefill": 0.05, "decode": 0.05, "rouge_l": 1}}
    standin = {"runner": "cpu-standin", "finished": "2026-01-02T00:00:00+00:00",
               "models": [dict(model, status="passed")]}
    (reports / "test-v0.5.1-cpu-standin-20260102T000000Z.json").write_text(json.dumps(standin))
    (reports / "latest.json").write_text(json.dumps(standin))
    template = "<!-- t -->\n## Motivation\n<!-- m -->\n## Accuracy Tests\n## Other\nkeep me\n"
    ev = prbody.find_evidence(tmp_path, ["facebook/opt-125m"])
    body = prbody.render(template, _info(["facebook/opt-125m"]), ev)
    assert ev.gpu is None and ev.standin is not None
    assert "Not run: no GPU run" in body
    assert "CPU stand-in run" in body and "not accuracy evidence" in body
    assert "0.0123" not in body  # stand-in numbers are not shown as accuracy
    assert "## Other\n\nkeep me\n" in body and body.startswith("<!-- t -->\n\n## Motivation")

    gpu = {"runner": "gpu", "gpu": "NVIDIA H100 80GB HBM3", "sglang_version": "0.5.1",
           "torch_version": "2.8.0", "finished": "2026-01-01T00:00:00+00:00",
           "checkout_commit": "a" * 40,
           "suite": {"path": SUITE, "test": "TestGenerationModels.test_others"},
           "models": [model]}
    (reports / "test-v0.5.1-20260101T000000Z.json").write_text(json.dumps(gpu))
    ev = prbody.find_evidence(tmp_path, ["facebook/opt-125m"])
    body = prbody.render(template, _info(["facebook/opt-125m"]), ev)
    assert ev.gpu_path == "reports/test-v0.5.1-20260101T000000Z.json"
    assert "on NVIDIA H100 80GB HBM3 with sglang 0.5.1" in body
    assert ("| `facebook/opt-125m` | passed | 0.0123 (tolerance 0.05) | 0.0045 (tolerance 0.05)"
            " | 0.96 (tolerance 1) |") in body
    assert "Not run" not in body.split("## Accuracy Tests")[1].split("## Other")[0]
    # a GPU run of other models only is no evidence for this one
    assert prbody.find_evidence(tmp_path, ["org/other"]).gpu is None


def test_formatters_edits_are_kept_only_on_changed_lines():
    from sglang_overlay.formatters import only_lines

    before = b"x = [1,2]\ny = {'a':1}\nz = 3\n"
    after = b"x = [1, 2]\ny = {\"a\": 1}\nz = 3\n"  # what black makes of the whole file
    assert only_lines(before, after, {2}) == b"x = [1,2]\ny = {\"a\": 1}\nz = 3\n"
    assert only_lines(before, after, set()) == before
    assert only_lines(before, after, {1, 2, 3}) == after
    # a line the formatter adds next to a changed line is kept; elsewhere it is not
    assert only_lines(b"a\nb\n", b"a\n\nb\n", {2}) == b"a\n\nb\n"
    assert only_lines(b"a\nb\nc\nd\n", b"a\n\nb\nc\nd\n", {4}) == b"a\nb\nc\nd\n"
