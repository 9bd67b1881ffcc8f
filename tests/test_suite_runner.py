"""`overlay test`: finding SGLang's generation suite, running it per model, reading it.

No GPU here: the CUDA path is tested up to the point where it must stop (exit
3), --dry-run shows the exact commands, and the runner is proven end to end
on two stand-ins of the suite's shape: a tiny one written by the tests
(pass / fail / crash / silent cases, in pytest and unittest mode), and the CPU
stand-in suite in tests/cpu_standin_suite/ that compares the overlay's OPT
with transformers' on a tiny random checkpoint, labelled "cpu-standin".
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

from helpers import TINY_SUITE, overlay
import helpers
from sglang_overlay import suite as suite_mod

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "tests" / "cpu_standin_suite"
SRT = "test/srt/models/test_generation_models.py"
REGISTERED = "test/registered/models/test_generation_models.py"


def copy_overlay(dest: Path) -> Path:
    return helpers.copy_repo_overlay(dest)


def export(upstream: Path, ref: str, dest: Path, *paths: str) -> Path:
    data = subprocess.run(["git", "--git-dir", str(upstream), "archive", ref, *paths],
                          check=True, capture_output=True).stdout
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=data, check=True)
    return dest


# --- reading the suite's output ------------------------------------------------------


def _printed(*args) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        print(*args)
    return buf.getvalue()


def test_parse_output_reads_the_lines_torch_really_prints():
    # The lines are printed here exactly as upstream's check_close_model_outputs
    # prints them: a string and a torch scalar tensor, and an f-string of the list.
    rouge_l_scores = [1.0, 0.96, 0.5]
    text = "".join([
        _printed("prefill logprobs max_diff", torch.max(torch.tensor([0.0123, 0.001]))),
        _printed("decode logprobs max_diff", torch.tensor(0.0045)),
        _printed("prefill logprobs max_diff", torch.tensor(3.2e-05)),
        _printed("decode logprobs max_diff", torch.tensor(0.25, dtype=torch.float16)),
        _printed(f"{rouge_l_scores=}"),
        # what a CUDA tensor prints, and plain floats
        "prefill logprobs max_diff tensor(0.0300, device='cuda:0')\n",
        "decode logprobs max_diff 0.125\n",
        "[rank0] noise; hf_outputs.output_strs=['a]b', 'max_diff 9']\n",
    ])
    assert "tensor(3.2000e-05)" in text  # torch's own scientific notation
    m = suite_mod.parse_output(text)
    assert m.prefill == pytest.approx([0.0123, 3.2e-05, 0.03])
    assert m.decode == pytest.approx([0.0045, 0.25, 0.125])
    assert m.rouge_l == pytest.approx([1.0, 0.96, 0.5])
    assert m.max_prefill == pytest.approx(0.03)
    assert m.max_decode == pytest.approx(0.25)
    assert m.min_rouge_l == pytest.approx(0.5)


def test_parse_output_nan_numpy_scalars_and_nothing():
    m = suite_mod.parse_output(
        "prefill logprobs max_diff tensor(nan)\n"
        "decode logprobs max_diff tensor(1.5000e+00, device='cuda:0', dtype=torch.float16)\n"
        "rouge_l_scores=[np.float64(0.75), np.float64(1.0)]\n")
    assert str(m.max_prefill) == "nan"
    assert suite_mod.json_number(m.max_prefill) == "nan"
    assert m.max_decode == 1.5
    assert m.rouge_l == [0.75, 1.0]
    empty = suite_mod.parse_output("nothing to see\n")
    assert empty.empty and empty.max_prefill is None and empty.min_rouge_l is None


# --- finding the suite ------------------------------------------------------------------


def test_find_suite_on_real_release_layouts(upstream, tmp_path):
    old = suite_mod.find_suite(export(upstream, "v0.5.1", tmp_path / "a", "test"))
    assert (old.rel, old.test_method, old.list_name) == (SRT, "test_others", "ALL_OTHER_MODELS")
    assert "facebook/opt-125m" not in old.cases  # v0.5.1 has no OPT
    olmo = old.cases["allenai/OLMo-1B-0724-hf"].fields
    assert olmo["decode_tolerance"] == 8e-2 and olmo["prefill_tolerance"] == 5e-2
    assert olmo["skip_long_prompt"] is True
    assert old.cases["Qwen/Qwen2-1.5B"].tolerances == {
        "prefill": 5e-2, "decode": 5e-2, "rouge_l": 1}
    assert "meta-llama/Llama-3.1-8B-Instruct" not in old.cases  # CI_MODELS: not test_others'

    new = suite_mod.find_suite(export(upstream, "v0.5.8", tmp_path / "b", "test"))
    assert (new.rel, new.test_method, new.list_name) == (
        REGISTERED, "test_all_models", "ALL_MODELS")
    # *CI_MODELS inside ALL_MODELS is expanded; the newer default decode tolerance
    assert "meta-llama/Llama-3.1-8B-Instruct" in new.cases
    assert new.cases["facebook/opt-125m"].fields["decode_tolerance"] == 6e-2
    assert new.cases["Qwen/Qwen2-1.5B"].fields["decode_tolerance"] == 7e-2
    glm = new.cases["THUDM/glm-4-9b-chat"].fields
    assert glm["tp_size"] == 2 and glm["trust_remote_code"] is True


def test_suite_shape_is_read_from_the_file_not_its_path(upstream, tmp_path):
    # The newer suite's content at the older path: the method and the list
    # come from the file itself.
    co = tmp_path / "co"
    text = subprocess.run(["git", "--git-dir", str(upstream), "show", f"v0.5.8:{REGISTERED}"],
                          check=True, capture_output=True, text=True).stdout
    (co / SRT).parent.mkdir(parents=True)
    (co / SRT).write_text(text)
    s = suite_mod.find_suite(co)
    assert (s.rel, s.test_method, s.list_name) == (SRT, "test_all_models", "ALL_MODELS")
    with pytest.raises(Exception) as exc:
        suite_mod.find_suite(tmp_path / "empty")
    assert "no generation suite" in str(exc.value)
    (co / SRT).write_text("ALL_OTHER_MODELS = []\n")
    with pytest.raises(Exception) as exc:
        suite_mod.find_suite(co)
    assert "TestGenerationModels" in str(exc.value)


# --- the runner on a tiny suite of the same shape --------------------------------------

# TINY_SUITE (helpers): a suite of the same shape with good, bad, crashing and
# silent models, no torch


@pytest.fixture
def tiny_suite(tmp_path) -> suite_mod.Suite:
    path = tmp_path / "suite" / "test_generation_models.py"
    path.parent.mkdir()
    path.write_text(TINY_SUITE)
    return suite_mod.load_suite(path)


@pytest.mark.parametrize("mode", ["pytest", "unittest"])
def test_runner_statuses_logs_and_junit(tiny_suite, tmp_path, mode, monkeypatch):
    # Even in a CI environment the runner makes the test compare (SGLANG_IS_IN_CI=false).
    monkeypatch.setenv("SGLANG_IS_IN_CI", "true")
    assert tiny_suite.cases["org/bad"].tolerances["prefill"] == 1e-3  # positional argument
    out = {}
    for hf_id in ("org/good", "org/bad", "org/crash", "org/silent"):
        inv = suite_mod.invocation(tiny_suite, hf_id, sys.executable, tmp_path / mode, mode)
        assert inv.env["ONLY_RUN"] == hf_id and inv.cwd == tiny_suite.path.parent
        out[hf_id] = suite_mod.run(inv)
    good, bad, crash, silent = (out[k] for k in ("org/good", "org/bad", "org/crash",
                                                  "org/silent"))
    assert good.status == "passed", good.detail
    assert good.metrics.max_prefill == 0.01 and good.metrics.max_decode == 0.005
    assert good.metrics.rouge_l == [1.0, 0.9]
    assert bad.status == "failed" and "prefill not close" in bad.detail
    assert bad.metrics.max_prefill == 0.02 and bad.metrics.max_decode is None
    # pytest reports an exception in a test as a failure; unittest as an error
    assert crash.status == ("failed" if mode == "pytest" else "error")
    assert "CUDA out of memory" in crash.detail
    assert silent.status == "error" and "printed no logprob" in silent.detail
    for o in out.values():
        log = o.invocation.log.read_text()
        assert log.startswith(f"# cd {tiny_suite.path.parent} && ONLY_RUN={o.hf_id} ")
        cases = list(ET.parse(o.invocation.junit).getroot().iter("testcase"))
        assert [c.get("name") for c in cases] == ["test_others"]
    bad_case = next(ET.parse(bad.invocation.junit).getroot().iter("testcase"))
    assert bad_case.find("failure") is not None
    assert good.invocation.argv[:3] == [sys.executable, "-m", mode]


def test_runner_reports_a_test_that_is_not_collected(tiny_suite, tmp_path):
    tiny_suite.test_method = "test_all_models"  # not in this file
    for mode in ("pytest", "unittest"):
        o = suite_mod.run(suite_mod.invocation(tiny_suite, "org/good", sys.executable,
                                               tmp_path / mode, mode))
        assert o.status == "error", (mode, o.detail)


# --- overlay test on an applied checkout (no CUDA here) ------------------------------


@pytest.fixture(scope="module")
def applied(upstream, shared_cache, tmp_path_factory) -> Path:
    """A copy of this repository's overlay, applied on v0.5.1 (its worktree has the suite)."""
    root = copy_overlay(tmp_path_factory.mktemp("applied") / "ov")
    r = overlay("-C", root, "apply", "--upstream", upstream, "--no-lint", cache=shared_cache)
    assert r.rc == 0, r.err
    return root


def test_dry_run_prints_exact_commands_and_writes_nothing(applied):
    r = overlay("-C", applied, "test", "--dry-run")
    assert r.rc == 0, r.err
    wt = applied / "sglang-v0.5.1"
    models_dir = wt / "test" / "srt" / "models"
    assert f"# facebook/opt-125m\n#   cwd:   {models_dir}\n" in r.out
    line = r.out.strip().splitlines()[-1]
    assert line.startswith(f"cd {models_dir} && ONLY_RUN=facebook/opt-125m SGLANG_IS_IN_CI=false ")
    assert (f"{sys.executable} -m pytest test_generation_models.py::TestGenerationModels::"
            "test_others -p no:cacheprovider -s -v --junitxml=") in line
    js = overlay("-C", applied, "test", "--dry-run", "--json", "--python", sys.executable)
    assert js.rc == 0
    run = js.json["runs"][0]
    assert run["cwd"] == str(models_dir) and run["env"]["ONLY_RUN"] == "facebook/opt-125m"
    assert run["argv"][:4] == [sys.executable, "-m", "pytest",
                              "test_generation_models.py::TestGenerationModels::test_others"]
    assert js.json["runner"] == "gpu" and js.json["suite"]["list"] == "ALL_OTHER_MODELS"
    assert not (applied / "reports").exists()


def test_without_cuda_exits_3_with_one_line(applied):
    r = overlay("-C", applied, "test")
    assert r.rc == 3
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and "torch.cuda.is_available() is False" in lines[0]
    assert "needs a GPU environment" in lines[0]
    assert not (applied / "reports").exists()


def test_target_without_torch_needs_a_gpu_environment(applied, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    r = overlay("-C", applied, "test", "--python", venv / "bin" / "python")
    assert r.rc == 3
    assert "torch is not installed" in r.err and len(r.err.strip().splitlines()) == 1
    # without pytest there, the plan uses unittest (the runner writes the JUnit XML)
    d = overlay("-C", applied, "test", "--dry-run", "--json", "--python", venv / "bin" / "python")
    assert d.rc == 0
    assert d.json["runs"][0]["argv"][1:] == [
        "-m", "unittest", "-v", "test_generation_models.TestGenerationModels.test_others"]


def test_model_without_a_case_fails_before_running(applied):
    # a model nobody declares is a typo: bad input
    r = overlay("-C", applied, "test", "--dry-run", "--model", "org/not-in-the-suite")
    assert r.rc == 2 and "no [[model]] declares it" in r.err
    # a declared model whose ModelCase is missing from the suite is a finding
    manifest = applied / "overlay.toml"
    saved = manifest.read_text()
    try:
        manifest.write_text(saved + '\n[[model]]\narchitecture = "NotInTheSuite"\n'
                            'hf-id = "org/not-in-the-suite"\n')
        r = overlay("-C", applied, "test", "--dry-run", "--model", "org/not-in-the-suite")
    finally:
        manifest.write_text(saved)
    assert r.rc == 1
    assert "ALL_OTHER_MODELS has no ModelCase for org/not-in-the-suite" in r.err
    assert "add-model-case" in r.err


def test_bad_input(applied, tmp_path):
    r = overlay("-C", applied, "test", "--worktree", tmp_path / "nowhere")
    assert r.rc == 2 and "run `overlay apply" in r.err
    r = overlay("-C", applied, "test", "--dry-run", "--python", tmp_path / "no-python")
    assert r.rc == 2 and "--python" in r.err


# --- end to end on the CPU stand-in suite ---------------------------------------------


def test_cpu_standin_end_to_end(tmp_path, monkeypatch):
    root = copy_overlay(tmp_path / "ov")
    monkeypatch.setenv("SGLANG_OVERLAY_STANDIN_SUITE", str(STANDIN))
    r = overlay("-C", root, "test", "--json", "--model", "facebook/opt-125m",
                "--model", "cpu-standin/opt-125m-strict")
    assert r.rc == 1, r.err  # the strict case fails
    data = r.json
    assert data["runner"] == "cpu-standin" and data["gpu"] is None
    assert data["suite"]["test"] == "TestGenerationModels.test_others"
    good, strict = data["models"]
    assert good["model"] == "facebook/opt-125m" and good["status"] == "passed", good
    assert good["runner"] == strict["runner"] == "cpu-standin"
    # real numbers: float16 SGLang-side OPT vs float32 transformers, one line per prompt
    assert len(good["prefill_diffs"]) == len(good["decode_diffs"]) == 4
    assert 0 < good["max_prefill_diff"] < good["tolerances"]["prefill"] == 0.05
    assert 0 < good["max_decode_diff"] < good["tolerances"]["decode"] == 0.05
    assert good["rouge_l"] and good["rouge_l_min"] >= good["tolerances"]["rouge_l"]
    assert good["model_case"]["skip_long_prompt"] is True
    assert good["unit"] == "opt-model" and good["architecture"] == "OPTForCausalLM"
    # the failing case: its tolerance is exceeded by the numbers it printed
    assert strict["status"] == "failed"
    assert strict["tolerances"]["prefill"] == 1e-6
    assert strict["max_prefill_diff"] > strict["tolerances"]["prefill"]
    assert "prefill logprobs are not all close" in strict["detail"]
    for m in data["models"]:
        log = (root / m["log"]).read_text()
        assert f"ONLY_RUN={m['model']} " in log.splitlines()[0]
        assert "prefill logprobs max_diff tensor(" in log
        cases = list(ET.parse(root / m["junit"]).getroot().iter("testcase"))
        assert [c.get("name") for c in cases] == ["test_others"]
    assert ET.parse(root / strict["junit"]).getroot().find(".//failure") is not None
    report = Path(data["report"]["json"])
    assert json.loads(report.read_text())["models"] == data["models"]
    assert json.loads((root / "reports" / "latest.json").read_text())["runner"] == "cpu-standin"
    md = Path(data["report"]["markdown"]).read_text()
    assert md.splitlines()[0] == "# overlay test on v0.5.1: CPU stand-in, not a GPU run"
    assert "| `cpu-standin/opt-125m-strict` | failed |" in md
    assert "cpu-standin" in report.name
