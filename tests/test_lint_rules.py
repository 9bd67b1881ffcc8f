"""Lint rules for what crashes SGLang at load time (issue 12), on v0.5.1's real tree.

One planted overlay carries every case; each line that must be reported ends
in ``# expect: <rule>``. It is linted once; every rule is its own test, and
one more test says nothing else was reported (the correct calls next to the
wrong ones stay quiet).
"""

from __future__ import annotations

import re
import shutil
import sqlite3
from pathlib import Path

import local_upstream
import pytest

from helpers import overlay, write_overlay

REPO = Path(__file__).resolve().parents[1]
MODELS = "python/sglang/srt/models/"
EXPECT = re.compile(r"#\s*expect: ([a-z-]+)")

PLANTED = '''\
import sglang.srt.utils
import sglang.srt.layers.linear as L
from torch import nn

from sglang.srt import utils
from sglang.srt.layers.linear import (
    MergedColumnParallelLinear,
    QKVParallelLinear,
    RowParallelLinear,
)
from sglang.srt.layers.radix_attention import RadixAttention
from sglang.srt.model_executor.forward_batch_info import ForwardBatch


class PlantedAttention(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.qkv_proj = QKVParallelLinear(hidden, 64, 8, prefix="qkv_proj")
        self.o_proj = RowParallelLinear(hidden, hidden, bias=False)
        self.attn = RadixAttention(8, 64, 0.125, 8, layer_id=0)
        self.many = RowParallelLinear(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14)  # expect: args-too-many
        self.few = RadixAttention(1)  # expect: args-missing
        self.twice = RowParallelLinear(4, 4, input_size=4)  # expect: arg-twice
        self.qkv_short = QKVParallelLinear(hidden)  # expect: args-missing
        self.by_alias = L.RowParallelLinear(4, 4, bias=False)
        self.by_alias_bad = L.RowParallelLinear(4, 4, gather_output=False)  # expect: kwarg-unknown
        self.spread = RowParallelLinear(*[4, 4])

    def forward(self, positions, forward_batch: ForwardBatch):
        mode = forward_batch.forward_mode
        gone = forward_batch.nonexistent_field  # expect: attr-unknown
        if hasattr(forward_batch, "maybe_there"):
            mode = forward_batch.maybe_there
        sglang.srt.utils.no_such_function()  # expect: module-call
        utils.no_such_function()  # expect: module-call
        sglang.srt.utils.is_cuda()
        utils.is_cuda()
        return mode, gone


class PlantedForCausalLM(nn.Module):
    def __init__(self, config, quant_config=None, prefix=""):
        super().__init__()
        self.layer = PlantedAttention(4)
        self.gate_up_proj = MergedColumnParallelLinear(4, [4, 4], bias=False)

    def load_weights(self, weights):
        stacked_params_mapping = [
            (".qkv_proj", ".q_proj", "q"),
            (".qkv_projx", ".k_proj", "k"),  # expect: weight-mapping-unknown
            ("gate_up_proj", "gate_proj", 0),
        ]
        expert_params_mapping = [("experts.w13_", "gate_proj", 0)]  # expect: weight-mapping-unknown
        return stacked_params_mapping, expert_params_mapping


EntryClass = PlantedForCausalLM
'''

# No EntryClass: the finding points at the class to export (not the first one)...
UNEXPORTED = '''\
from torch import nn


class PlantedMLP(nn.Module):
    pass


class PlantedTwoForCausalLM(nn.Module):  # expect: entryclass-missing
    def load_weights(self, weights):
        pass
'''

# ...or, when no class looks like a model, at the end of the module.
HELPERS_ONLY = '''\
class Helper:
    pass


class Other:
    pass
# expect: entryclass-missing'''

FILES = {"planted.py": PLANTED, "planted_two.py": UNEXPORTED, "planted_helpers.py": HELPERS_ONLY}


def expected() -> set[tuple[str, int, str]]:
    out = set()
    for name, src in FILES.items():
        for n, line in enumerate(src.splitlines(), 1):
            m = EXPECT.search(line)
            if m:
                out.add((f"overlay/{MODELS}{name}", n, m.group(1)))
    return out


@pytest.fixture(scope="module")
def findings(tmp_path_factory, upstream, shared_cache):
    root = write_overlay(tmp_path_factory.mktemp("rules") / "ov", upstream, [
        {"name": "planted", "kind": "files", "description": "planted",
         "files": [MODELS + n for n in FILES]},
    ], {f"overlay/{MODELS}{n}": src for n, src in FILES.items()})
    r = overlay("-C", root, "lint", "--sglang-ref", "v0.5.1", "--json", cache=shared_cache)
    assert r.rc == 1, r.err
    return r.json["findings"]


@pytest.mark.parametrize("rule", sorted({e[2] for e in expected()}))
def test_each_missed_case_is_reported(rule, findings):
    want = {e for e in expected() if e[2] == rule}
    got = {(f["path"], f["line"], f["rule"]) for f in findings if f["rule"] == rule}
    assert got == want


def test_nothing_else_is_reported(findings):
    assert {(f["path"], f["line"], f["rule"]) for f in findings} == expected()


def test_messages_name_the_callee_and_a_fix(findings):
    by_rule = {f["rule"]: f for f in findings}
    assert "14 given" in by_rule["args-too-many"]["message"]
    assert "sglang.srt.layers.linear.RowParallelLinear" in by_rule["args-too-many"]["message"]
    missing = [f["message"] for f in findings if f["rule"] == "args-missing"]
    assert any("head_dim, scaling, num_kv_heads, layer_id" in m for m in missing)
    assert "gather_output" in by_rule["kwarg-unknown"]["message"]
    assert "nonexistent_field" in by_rule["attr-unknown"]["message"]
    assert "qkv_proj" in [f for f in findings if f["rule"] == "weight-mapping-unknown"
                          and "qkv_projx" in f["message"]][0]["fix"]
    assert "PlantedTwoForCausalLM" in [f for f in findings if f["rule"] == "entryclass-missing"
                                       and "planted_two" in f["path"]][0]["fix"]


class LockedDb:
    """A sqlite connection whose every statement finds the database locked."""

    def execute(self, *a, **k):
        raise sqlite3.OperationalError("database is locked")

    executemany = execute

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def close(self):
        pass


def test_a_locked_facts_cache_is_a_miss(tmp_path):
    """Parallel `check` workers share the cache; a lock must cost time, never exit 4."""
    from sglang_overlay.lint.facts import FactsCache

    cache = FactsCache(tmp_path / "facts.sqlite")
    cache.db = LockedDb()
    assert cache.get("k") is None and cache.get_many(["a", "b"]) == {}
    cache.put("k", {"x": 1})
    assert cache.get("k") == {"x": 1}  # computed facts still serve this run
    cache.close()


def test_no_false_positives_on_any_tested_release(tmp_path, upstream, shared_cache):
    """Both overlays (this repository's and examples/custom-models) lint clean on
    every release the tests build (and apply there)."""
    releases = {"v" + v for v in local_upstream.DEFAULT_RELEASES}
    for name, src, parts in (("repo", REPO, ("overlay.toml", "overlay", "patches", "variants")),
                             ("example", REPO / "examples" / "custom-models",
                              ("overlay.toml", "overlay"))):
        root = tmp_path / name
        root.mkdir()
        for part in parts:
            (shutil.copytree if (src / part).is_dir() else shutil.copy)(src / part, root / part)
        r = overlay("-C", root, "check", "--upstream", upstream, "--tags", "v*", "--json",
                    cache=shared_cache)
        assert r.rc == 0, r.err  # nor conflicts: both overlays apply on every release
        assert {ref["ref"] for ref in r.json["refs"]} == releases
        assert {ref: lint for ref, lint in r.json["lint"].items() if lint} == {}, name
