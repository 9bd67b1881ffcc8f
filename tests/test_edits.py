"""Edit units: syntax-tree edits on real release files, formatting kept."""

from __future__ import annotations

import ast
import difflib
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import git, overlay, upstream_file, write_overlay
from sglang_overlay.manifest import Model
from sglang_overlay.units import edit

REFS = ["v0.5.1", "v0.5.3", "v0.5.8", "v0.5.23"]  # v0.5.8 moved the suite to test/registered/
OPT = Model("OPTForCausalLM", hf_id="facebook/opt-125m", case=(("skip_long_prompt", True),))
LONG = Model("LongForCausalLM", hf_id="some-organisation/a-rather-long-model-name-to-wrap",
             case=(("tp_size", 2), ("trust_remote_code", True), ("skip_long_prompt", True),
                   ("prefill_tolerance", 0.05)))


def black_clean(text: str, tmp_path: Path) -> bool:
    p = tmp_path / "check.py"
    p.write_text(text)
    return subprocess.run([sys.executable, "-m", "black", "-q", "--check", str(p)]).returncode == 0


def black(text: str) -> str:
    return subprocess.run([sys.executable, "-m", "black", "-q", "-"], input=text.encode(),
                          capture_output=True, check=True).stdout.decode()


def _changes(old: str, new: str) -> list[str]:
    return [line for line in difflib.unified_diff(old.splitlines(), new.splitlines(),
                                                   lineterm="", n=0)
            if line[:1] in "+-" and line[:3] not in ("+++", "---")]


def black_stable(old: str, new: str) -> bool:
    """black keeps the edit as written: the change black(old) -> black(new) is
    the edit's own change (newer releases are formatted by a newer black than
    ours, so the files themselves need not be black-clean here)."""
    return _changes(black(old), black(new)) == _changes(old, new)


@pytest.mark.parametrize("ref", REFS)
def test_model_config_edits_on_real_releases(ref, upstream, tmp_path):
    text = upstream_file(upstream, ref, edit.MODEL_CONFIG)
    mm = edit.register_multimodal(text, ["MyVLForConditionalGeneration"])
    both = edit.register_mla(mm.text, ["MyMLAForCausalLM"])
    assert mm.added == ["MyVLForConditionalGeneration"] and both.added == ["MyMLAForCausalLM"]
    assert "MyVLForConditionalGeneration" in edit.multimodal_archs(both.text)
    assert "MyMLAForCausalLM" in edit.mla_archs(both.text)
    assert black_stable(text, both.text)
    # the MLA test lands in DeepSeek's branch, the one with qk_nope_head_dim
    # (from v0.5.12 its condition is compound; MiniCPM3's branch follows it)
    branch = next(n for n in ast.walk(ast.parse(both.text)) if isinstance(n, ast.If)
                  and "MyMLAForCausalLM" in ast.unparse(n.test))
    assert "DeepseekV2ForCausalLM" in ast.unparse(branch.test)
    assert "qk_nope_head_dim" in ast.unparse(branch.body[:6])
    # what mla-unregistered reads: an MLA branch that is not DeepSeek's does not count
    minicpm = '"MiniCPM3ForCausalLM" in self.hf_config.architectures'
    wrong = text.replace(minicpm, f'{minicpm} or "MyMLAForCausalLM" in self.hf_config.architectures')
    assert wrong != text and "MyMLAForCausalLM" not in edit.mla_archs(wrong)
    # only added lines: nothing else in the file moved
    old, new = text.splitlines(), both.text.splitlines()
    assert len(new) == len(old) + 2
    assert [line for line in new if "MyVL" not in line and "MyMLA" not in line] == old
    # idempotent: a second edit finds the entries
    assert edit.register_multimodal(both.text, ["MyVLForConditionalGeneration"]).added == []
    assert edit.register_mla(both.text, ["MyMLAForCausalLM"]).added == []
    # already there upstream
    assert edit.register_mla(text, ["DeepseekV3ForCausalLM"]).added == []
    assert edit.register_multimodal(text, ["Qwen2VLForConditionalGeneration"]).added == []


@pytest.mark.parametrize("ref", REFS)
def test_model_cases_on_real_suites(ref, upstream, tmp_path):
    read = lambda p: upstream_file(upstream, ref, p) if git(upstream, "ls-tree", ref, p) else None
    path, list_name = edit.suite_layout(read)
    assert list_name == ("ALL_MODELS" if ref in ("v0.5.8", "v0.5.23") else "ALL_OTHER_MODELS")
    text = read(path)
    result = edit.add_model_cases(text, list_name, [OPT, LONG])
    has_opt = ref != "v0.5.1"  # upstream added OPT's case with its model in v0.5.2
    assert result.added == ([] if has_opt else ["facebook/opt-125m"]) + [LONG.hf_id]
    assert black_stable(text, result.text)
    tree = ast.parse(result.text)
    names = [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.Call)
             and getattr(n.func, "id", "") == "ModelCase"]
    assert any("a-rather-long-model-name-to-wrap" in n and "tp_size=2" in n for n in names)
    assert edit.add_model_cases(result.text, list_name, [OPT, LONG]).added == []


def test_missing_anchor_is_a_clear_conflict(tmp_path, upstream, shared_cache):
    """Upstream removed the structure: the edit names the missing anchor."""
    fork = tmp_path / "upstream.git"
    git(tmp_path, "clone", "-q", "--bare", str(upstream), str(fork))
    work = tmp_path / "w"
    git(tmp_path, "clone", "-q", str(fork), str(work))
    git(work, "checkout", "-q", "v0.5.1")
    cfg = work / edit.MODEL_CONFIG
    cfg.write_text(cfg.read_text().replace("multimodal_model_archs", "mm_archs"))
    git(work, "commit", "-qam", "rename the list")
    git(work, "tag", "v0.5.1-renamed")
    git(work, "push", "-q", "origin", "v0.5.1-renamed")
    root = write_overlay(tmp_path / "ov", fork, [
        {"name": "mm", "kind": "edit", "description": "register", "edit": "register-multimodal",
         "models": ["MyVL"]},
    ], models=[{"architecture": "MyVL", "multimodal": True}])
    r = overlay("-C", root, "apply", "--sglang-ref", "v0.5.1-renamed", "--json",
                cache=shared_cache)
    assert r.rc == 1
    unit = r.json["units"][0]
    assert unit["status"] == "conflict"
    assert "multimodal_model_archs" in unit["detail"] and "missing anchor" in unit["detail"]
    # an edit conflict cannot be continued in a worktree: it is dropped instead
    cont = overlay("-C", root, "refresh", "--continue", cache=shared_cache)
    assert cont.rc == 2 and "missing anchor" in cont.err
    assert overlay("-C", root, "refresh", "--abort", cache=shared_cache).rc == 0
    ok = overlay("-C", root, "apply", "--json", cache=shared_cache)
    assert ok.rc == 1  # MyVL has no model file, so lint says so ...
    assert ok.json["units"][0]["status"] == "applied"  # ... but the edit applies on v0.5.1


def test_opt_case_is_already_upstream_from_v052(tmp_path, upstream, shared_cache):
    root = write_overlay(tmp_path / "ov", upstream, [
        {"name": "opt-test-case", "kind": "edit", "description": "case", "edit": "add-model-case",
         "models": ["OPTForCausalLM"]},
    ], models=[{"architecture": "OPTForCausalLM", "hf-id": "facebook/opt-125m",
                "skip-long-prompt": True}])
    for ref, status in [("v0.5.1", "applied"), ("v0.5.2", "already-upstream"),
                        ("v0.5.8", "already-upstream")]:
        r = overlay("-C", root, "apply", "--no-lint", "--sglang-ref", ref, "--json",
                    cache=shared_cache)
        assert r.rc == 0, r.err
        assert r.json["units"][0]["status"] == status


def test_one_line_forms_are_exploded_like_black(tmp_path):
    src = (
        'multimodal_model_archs = ["A", "B"]\n\n\n'
        "def is_multimodal_model(archs):\n    return archs\n\n\n"
        "class ModelConfig:\n"
        "    def __init__(self):\n"
        '        if "DeepseekV2ForCausalLM" in self.hf_config.architectures:  # keep me\n'
        "            self.attention_arch = AttentionArch.MLA\n"
    )
    out = edit.register_mla(edit.register_multimodal(src, ["C"]).text, ["Y"]).text
    assert black_clean(out, tmp_path)
    assert edit.multimodal_archs(out) == {"A", "B", "C"}
    assert edit.mla_archs(out) == {"DeepseekV2ForCausalLM", "Y"}
    assert "# keep me" in out


MLA_SRC = """\
class ModelConfig:
    def __init__(self):
        if {cond}:
            self.attention_arch = AttentionArch.MLA
        elif "MiniCPM3ForCausalLM" in self.hf_config.architectures:
            self.attention_arch = AttentionArch.MLA
"""


@pytest.mark.parametrize("cond,looked_for", [
    # DeepSeek's test gone: the MiniCPM3 branch also sets MLA, but is not the anchor
    ('"SomethingElse" in self.hf_config.architectures', "DeepseekV2ForCausalLM"),
    # under an `and`: an `or` added at the top would bypass the flag
    ('("DeepseekV2ForCausalLM" in self.hf_config.architectures or "B" in '
     'self.hf_config.architectures) and flag', "top-level `or`"),
])
def test_mla_anchor_not_identified_is_a_conflict(cond, looked_for):
    src = MLA_SRC.format(cond=cond)
    with pytest.raises(edit.MissingAnchor, match="MLA branch of ModelConfig") as exc:
        edit.register_mla(src, ["MyMLAForCausalLM"])
    assert looked_for in str(exc.value)
    assert edit.mla_archs(src) == (set() if "SomethingElse" in cond
                                   else {"DeepseekV2ForCausalLM", "B"})
