"""`overlay lint` catches registry and API drift on real release trees."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from helpers import overlay, write_overlay

REPO = Path(__file__).resolve().parents[1]
OPT = REPO / "overlay" / "python" / "sglang" / "srt" / "models" / "opt.py"
MODEL = "python/sglang/srt/models/planted.py"
LINE = re.compile(r"^(\S+):(\d+) ([a-z-]+) (.+) \(fix: (.+)\)$")


def planted(tmp_path: Path, upstream: Path, source: str, models=None) -> Path:
    return write_overlay(tmp_path / "ov", upstream, [
        {"name": "planted", "kind": "files", "description": "planted", "files": [MODEL]},
    ], {f"overlay/{MODEL}": source}, models=models)


def lint(root: Path, cache: Path, ref: str = "v0.5.1"):
    r = overlay("-C", root, "lint", "--sglang-ref", ref, "--json", cache=cache)
    assert r.rc in (0, 1), r.err
    return r, [(f["rule"], f["line"], f["path"]) for f in r.json["findings"]]


OK_MODEL = '''\
from sglang.srt.models.llama import LlamaForCausalLM


class PlantedForCausalLM(LlamaForCausalLM):
    pass


EntryClass = PlantedForCausalLM
'''


def test_clean_model_lints_clean(tmp_path, upstream, shared_cache):
    root = planted(tmp_path, upstream, OK_MODEL, models=[{"architecture": "PlantedForCausalLM"}])
    r, found = lint(root, shared_cache)
    assert r.rc == 0 and found == []


def test_registry_import(tmp_path, upstream, shared_cache):
    src = OK_MODEL.replace(
        "from sglang.srt.models.llama import LlamaForCausalLM\n",
        "from sglang.srt.models.llama import LlamaForCausalLM\n"
        "from sglang.srt.models.registry import ModelRegistry\n")
    r, found = lint(planted(tmp_path, upstream, src), shared_cache)
    assert r.rc == 1
    assert ("registry-import", 2, f"overlay/{MODEL}") in found


def test_missing_entryclass(tmp_path, upstream, shared_cache):
    src = OK_MODEL.replace("\n\nEntryClass = PlantedForCausalLM\n", "\n")
    r, found = lint(planted(tmp_path, upstream, src), shared_cache)
    assert r.rc == 1
    assert ("entryclass-missing", 4, f"overlay/{MODEL}") in found


def test_wrong_radix_attention_keyword(tmp_path, upstream, shared_cache):
    """The seed fork's bug: sliding_window= where v0.5.1 says sliding_window_size=."""
    src = OPT.read_text().replace("            layer_id=layer_id,\n",
                                  "            layer_id=layer_id,\n"
                                  "            sliding_window=-1,\n", 1)
    lines = src.splitlines()
    planted_at = lines.index("            sliding_window=-1,")
    # the RadixAttention( call the keyword was planted in
    call = max(i for i in range(planted_at) if "RadixAttention(" in lines[i]) + 1
    root = write_overlay(tmp_path / "ov", upstream, [
        {"name": "opt", "kind": "files", "description": "opt",
         "files": ["python/sglang/srt/models/opt.py"]},
    ], {"overlay/python/sglang/srt/models/opt.py": src})
    r, found = lint(root, shared_cache)
    assert r.rc == 1
    kw = [f for f in r.json["findings"] if f["rule"] == "kwarg-unknown"]
    assert len(kw) == 1
    assert "sliding_window" in kw[0]["message"] and "sliding_window_size" in kw[0]["fix"]
    # the call spans lines; the finding points at the call
    assert kw[0]["line"] == call


def test_kwarg_through_inheritance_and_kwargs(tmp_path, upstream, shared_cache):
    """A subclass without __init__ inherits its base's; **kwargs passed on are followed."""
    src = OK_MODEL + '''

from sglang.srt.layers.linear import ReplicatedLinear, RowParallelLinear


def build():
    a = ReplicatedLinear(4, 4, bias=False, prefix="a")
    b = RowParallelLinear(4, 4, bias=False, reduce_results=True, tp_rank=0)
    c = RowParallelLinear(4, 4, reduce_result=True)
    return a, b, c
'''
    r, found = lint(planted(tmp_path, upstream, src), shared_cache)
    rules = [f for f in r.json["findings"] if f["rule"] == "kwarg-unknown"]
    assert [f["message"].split("'")[1] for f in rules] == ["reduce_result"]


def test_duplicate_architecture(tmp_path, upstream, shared_cache):
    src = "from sglang.srt.models.llama import LlamaForCausalLM\n\nEntryClass = LlamaForCausalLM\n"
    r, found = lint(planted(tmp_path, upstream, src), shared_cache)
    assert r.rc == 1
    dup = [f for f in r.json["findings"] if f["rule"] == "arch-duplicate"]
    assert len(dup) == 1
    assert dup[0]["path"] == f"overlay/{MODEL}" and "LlamaForCausalLM" in dup[0]["message"]
    assert "python/sglang/srt/models/llama.py" in dup[0]["message"]


@pytest.mark.parametrize("ref, statement, good_on", [
    # sglang.srt.hf_transformers_utils moved into sglang.srt.utils in v0.5.3
    ("v0.5.3", "from sglang.srt.hf_transformers_utils import get_processor", "v0.5.1"),
    # global_server_args_dict was removed from schedule_batch in v0.5.4
    ("v0.5.4", "from sglang.srt.managers.schedule_batch import global_server_args_dict",
     "v0.5.1"),
])
def test_import_a_later_release_removed(ref, statement, good_on, tmp_path, upstream, shared_cache):
    src = statement + "\n" + OK_MODEL
    root = planted(tmp_path, upstream, src)
    r_old, found_old = lint(root, shared_cache, good_on)
    assert r_old.rc == 0, found_old
    r, found = lint(root, shared_cache, ref)
    assert r.rc == 1
    assert ("import-unresolved", 1, f"overlay/{MODEL}") in found


def test_declared_architecture_without_native_class(tmp_path, upstream, shared_cache):
    root = planted(tmp_path, upstream, OK_MODEL,
                   models=[{"architecture": "NotThereForCausalLM"}])
    r, found = lint(root, shared_cache)
    assert r.rc == 1
    msg = [f for f in r.json["findings"] if f["rule"] == "arch-unregistered"][0]["message"]
    assert "NotThereForCausalLM" in msg and "TransformersForCausalLM" in msg


def example_without(tmp_path: Path, unit: str, flag: str | None) -> Path:
    root = tmp_path / "example"
    shutil.copytree(REPO / "examples" / "custom-models", root)
    text = (root / "overlay.toml").read_text()
    start = text.index(f'name = "{unit}"') - len("[[unit]]\n")
    end = text.index("[[unit]]", start + 10)
    text = text[:start] + text[end:]
    if flag:
        text = text.replace(f"{flag} = true", f"{flag} = false")
    (root / "overlay.toml").write_text(text)
    return root


def test_multimodal_hooks_need_registration(tmp_path, upstream, shared_cache):
    root = example_without(tmp_path, "register-my-vl", "multimodal")
    r = overlay("-C", root, "lint", "--upstream", upstream, "--json", cache=shared_cache)
    assert r.rc == 1
    f = [f for f in r.json["findings"] if f["rule"] == "multimodal-unregistered"]
    assert len(f) == 1 and "MyVLForConditionalGeneration" in f[0]["message"]
    assert "get_image_feature" in f[0]["message"]


def test_declared_mla_must_be_in_the_mla_branch(tmp_path, upstream, shared_cache):
    root = example_without(tmp_path, "register-my-mla", None)
    r = overlay("-C", root, "lint", "--upstream", upstream, "--json", cache=shared_cache)
    assert r.rc == 1
    f = [f for f in r.json["findings"] if f["rule"] == "mla-unregistered"]
    assert len(f) == 1 and "MyMLAForCausalLM" in f[0]["message"]


@pytest.mark.parametrize("ref", ["v0.5.1", "v0.5.8"])
def test_example_overlay_applies_and_lints_clean(ref, tmp_path, upstream, shared_cache):
    root = tmp_path / "example"
    shutil.copytree(REPO / "examples" / "custom-models", root)
    r = overlay("-C", root, "apply", "--upstream", upstream, "--sglang-ref", ref, "--json",
                cache=shared_cache)
    assert r.rc == 0, r.err
    assert r.json["lint"] == []
    assert {u["status"] for u in r.json["units"]} == {"applied"}


def test_repository_overlay_applies_and_lints_clean_on_the_pin(tmp_path, upstream, shared_cache):
    root = tmp_path / "repo-overlay"
    root.mkdir()
    for name in ("overlay.toml", "overlay", "patches", "variants"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
    r = overlay("-C", root, "apply", "--upstream", upstream, "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    assert r.json["ref"] == "v0.5.1"
    assert [u["status"] for u in r.json["units"]] == ["applied"] * 5
    assert r.json["lint"] == []
    human = overlay("-C", root, "lint", "--upstream", upstream, cache=shared_cache)
    assert human.rc == 0 and "lint clean" in human.out


def test_findings_print_as_path_line_rule_message_fix(tmp_path, upstream, shared_cache):
    src = OK_MODEL.replace("\n\nEntryClass = PlantedForCausalLM\n", "\n")
    root = planted(tmp_path, upstream, src)
    r = overlay("-C", root, "lint", cache=shared_cache)
    assert r.rc == 1
    m = LINE.match(r.out.splitlines()[0])
    assert m and m.group(1) == f"overlay/{MODEL}" and m.group(3) == "entryclass-missing"
    # apply runs lint too, and --no-lint skips it
    applied = overlay("-C", root, "apply", "--json", cache=shared_cache)
    assert applied.rc == 1 and applied.json["lint"][0]["rule"] == "entryclass-missing"
    assert (root / "sglang-v0.5.1").is_dir()
    skipped = overlay("-C", root, "apply", "--no-lint", "--json", cache=shared_cache)
    assert skipped.rc == 0 and skipped.json["lint"] == []
