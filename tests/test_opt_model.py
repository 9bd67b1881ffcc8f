"""CPU tests of the overlay's native OPT model (overlay/python/sglang/srt/models/opt.py).

Tiny random OPT checkpoints are written with transformers and read back from
their safetensors files. The tests check the pure name/shape mapping, then
import opt.py against the CPU stand-ins of SGLang v0.5.1 (tests/standin_sglang),
load the checkpoints through ``load_weights`` and compare the logits of
prefill, chunked-prefill and decode steps with transformers' OPTForCausalLM.
"""

import ast
import math
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch as safetensors_torch
import torch
import transformers

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent
OPT_PY = REPO / "overlay" / "python" / "sglang" / "srt" / "models" / "opt.py"
STANDIN_DIR = TESTS_DIR / "standin_sglang"


# tests/ is on sys.path (conftest.py), so the stand-in package imports by name
import standin_sglang as standin  # noqa: E402
import standin_sglang.runner as standin_runner  # noqa: E402

TINY = dict(max_position_embeddings=64, num_attention_heads=4, dropout=0.0)
CONFIGS = {
    # Pre-LN like opt-125m and most sizes: word_embed_proj_dim == hidden_size.
    "pre_ln": dict(
        TINY, vocab_size=150, hidden_size=32, word_embed_proj_dim=32, ffn_dim=64,
        num_hidden_layers=2, do_layer_norm_before=True,
    ),
    # Like opt-350m: post-LN, project_in/project_out, no final layer norm.
    "post_ln_350m_like": dict(
        TINY, vocab_size=170, hidden_size=48, word_embed_proj_dim=24, ffn_dim=96,
        num_hidden_layers=3, do_layer_norm_before=False,
    ),
    # Untied lm_head (ParallelLMHead), no biases, final layer norm removed and
    # a GELU feed-forward (SGLang's get_act_fn instead of ReLU).
    "untied_no_bias_gelu": dict(
        TINY, vocab_size=130, hidden_size=32, word_embed_proj_dim=32, ffn_dim=48,
        num_hidden_layers=2, do_layer_norm_before=True, enable_bias=False,
        tie_word_embeddings=False, _remove_final_layer_norm=True,
        activation_function="gelu",
    ),
}  # fmt: skip


class Checkpoint:
    def __init__(self, config, hf_model, tensors):
        self.config = config
        self.hf_model = hf_model
        self.tensors = tensors  # name -> tensor, as read back from safetensors

    def hf_logits(self, token_ids):
        with torch.no_grad():
            return self.hf_model(input_ids=torch.tensor([token_ids])).logits[0]


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def checkpoint(request, tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.OPTConfig(**CONFIGS[request.param])
    hf_model = transformers.OPTForCausalLM(config).float().eval()
    # HF initialises biases to 0 and norms to 1; randomise everything so that a
    # bias or norm loaded into the wrong place changes the logits.
    with torch.no_grad():
        for param in hf_model.parameters():
            param.copy_(torch.randn_like(param) * 0.3)
    out_dir = tmp_path_factory.mktemp(request.param)
    hf_model.save_pretrained(out_dir)
    files = sorted(out_dir.glob("*.safetensors"))
    assert files, "save_pretrained wrote no safetensors file"
    tensors = {}
    for file in files:
        tensors.update(safetensors_torch.load_file(str(file)))
    return Checkpoint(config, hf_model, tensors)


@pytest.fixture(scope="module")
def opt():
    """opt.py imported against the stand-ins, which are removed afterwards."""
    with standin.install():
        yield standin.import_overlay_module("sglang.srt.models.opt", OPT_PY)


def _load_model(opt, ckpt, weights):
    torch.manual_seed(0)
    model = opt.OPTForCausalLM(ckpt.config)
    with torch.no_grad():
        for param in model.parameters():
            param.fill_(math.nan)
    model.load_weights(iter(weights))
    unloaded = [n for n, p in model.named_parameters() if torch.isnan(p).any()]
    assert not unloaded, f"parameters not (fully) loaded: {unloaded}"
    return model


def test_mapping_consumes_every_tensor_once(opt, checkpoint):
    config, tensors = checkpoint.config, checkpoint.tensors
    expected = opt.opt_param_shapes(config)
    weights = dict(tensors)
    if config.tie_word_embeddings:
        # Some tied checkpoints still store lm_head.weight: it must be skipped.
        weights["lm_head.weight"] = tensors["model.decoder.embed_tokens.weight"]
    consumed = {}
    for name, tensor in weights.items():
        mapped = opt.opt_hf_to_sglang(name, config.tie_word_embeddings)
        if mapped is None:
            assert name == "lm_head.weight" and config.tie_word_embeddings, name
            continue
        param, shard = mapped
        assert param in expected, f"{name} -> {param}: no such parameter"
        assert (param, shard) not in consumed, f"{name} and {consumed[param, shard]}"
        consumed[param, shard] = name
        shape = expected[param]
        if shard is not None:
            assert param.endswith((".qkv_proj.weight", ".qkv_proj.bias"))
            shape = (shape[0] // 3,) + shape[1:]
        assert tuple(tensor.shape) == shape, (name, param, shape)
        # Checkpoints without the "model." prefix map to the same place.
        if name.startswith("model."):
            assert opt.opt_hf_to_sglang(name[len("model.") :]) == mapped
    loaded = {}
    for param, shard in consumed:
        loaded.setdefault(param, set()).add(shard)
    assert set(loaded) == set(expected), set(loaded) ^ set(expected)
    for param, shards in loaded.items():
        want = {"q", "k", "v"} if ".qkv_proj." in param else {None}
        assert shards == want, (param, shards)


def test_param_shapes_match_the_model(opt, checkpoint):
    config = checkpoint.config
    expected = opt.opt_param_shapes(config)
    params = dict(opt.OPTForCausalLM(config).named_parameters())
    assert set(params) == set(expected)
    for name, param in params.items():
        shape = expected[name]
        if name.endswith(("embed_tokens.weight", "lm_head.weight")):
            # Vocab-parallel weights are padded to a multiple of 64 rows.
            shape = (-(-shape[0] // 64) * 64,) + shape[1:]
        assert tuple(param.shape) == shape, name


@pytest.mark.parametrize("strip_model_prefix", [False, True])
def test_logits_match_transformers(opt, checkpoint, strip_model_prefix):
    weights = list(checkpoint.tensors.items())
    if checkpoint.config.tie_word_embeddings:  # a stored tied head is skipped
        weights.append(("lm_head.weight", torch.zeros(1)))
    if strip_model_prefix:
        weights = [(n.removeprefix("model."), w) for n, w in weights]
    model = _load_model(opt, checkpoint, weights)
    runner = standin_runner.CPUModelRunner(model)
    vocab = checkpoint.config.vocab_size

    g = torch.Generator().manual_seed(1)
    prompt_a = torch.randint(3, vocab, (9,), generator=g).tolist()
    prompt_b = torch.randint(3, vocab, (6,), generator=g).tolist()
    extra_a = torch.randint(3, vocab, (3,), generator=g).tolist()
    extra_b = torch.randint(3, vocab, (3,), generator=g).tolist()
    ref_a = checkpoint.hf_logits(prompt_a + extra_a)
    ref_b = checkpoint.hf_logits(prompt_b + extra_b)

    def check(output, expected):
        assert output.next_token_logits.shape == expected.shape
        torch.testing.assert_close(
            output.next_token_logits, expected, rtol=1e-4, atol=1e-4
        )

    # Batched prefill of two sequences (positions restart at 0 for each);
    # request 1 is prefilled in two chunks, the second on top of a cached prefix.
    check(
        runner.extend([0, 1], [prompt_a, prompt_b[:4]]),
        torch.stack([ref_a[len(prompt_a) - 1], ref_b[3]]),
    )
    check(runner.extend([1], [prompt_b[4:]]), ref_b[len(prompt_b) - 1][None])
    # Batched decode steps at positions len(prompt) + i.
    for i in range(3):
        check(
            runner.decode([0, 1], [extra_a[i], extra_b[i]]),
            torch.stack([ref_a[len(prompt_a) + i], ref_b[len(prompt_b) + i]]),
        )
    # Every position of one sequence: one token at a time from position 0.
    check(runner.extend([2], [prompt_a[:1]]), ref_a[0:1])
    for pos, token in enumerate(prompt_a[1:], start=1):
        check(runner.decode([2], [token]), ref_a[pos : pos + 1])


def test_load_weights_rejects_unknown_names(opt, checkpoint):
    model = opt.OPTForCausalLM(checkpoint.config)
    with pytest.raises(KeyError):
        model.load_weights([("model.decoder.layers.0.bogus.weight", torch.zeros(1))])


def test_module_surface():
    source = OPT_PY.read_text()
    tree = ast.parse(source)
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert not any(m.startswith("sglang.srt.models") for m in imported), imported
    # Every sglang module opt.py imports has a stand-in.
    sglang_modules = {m for m in imported if m.split(".")[0] == "sglang"}
    assert sglang_modules <= set(standin.standin_module_names()), sglang_modules
    assert source.rstrip().endswith("EntryClass = OPTForCausalLM")
    assert source.startswith("# Copyright 2023-2024 SGLang Team\n")


def _sglang_modules():
    return {n: m for n, m in sys.modules.items() if n.split(".")[0] == "sglang"}


def test_standins_do_not_leak():
    before = _sglang_modules()  # the `opt` fixture's stand-ins may be active
    with standin.install():
        standin.import_overlay_module("sglang.srt.models.opt", OPT_PY)
        linear = sys.modules["sglang.srt.layers.linear"]
        assert Path(linear.__file__).is_relative_to(STANDIN_DIR)
        with pytest.raises(ModuleNotFoundError):
            __import__("sglang.srt.managers.scheduler")
    after = _sglang_modules()
    assert after.keys() == before.keys()
    assert all(after[n] is before[n] for n in before)


def _signatures(path):
    """Top-level functions, classes' methods and dataclass fields of a file."""
    found = {}
    for node in ast.parse(Path(path).read_text()).body:
        if isinstance(node, ast.FunctionDef):
            found[node.name] = _arg_spec(node.args)
        elif isinstance(node, ast.ClassDef):
            fields = []
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    found[f"{node.name}.{item.name}"] = _arg_spec(item.args)
                elif isinstance(item, ast.AnnAssign):
                    value = item.value and ast.unparse(item.value)
                    fields.append((item.target.id, value))
            if fields:
                found[f"{node.name}.<fields>"] = fields
    return found


def _arg_spec(args):
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + args.defaults
    spec = [(a.arg, d and ast.unparse(d)) for a, d in zip(positional, defaults)]
    if args.vararg:
        spec.append(("*" + args.vararg.arg, None))
    elif args.kwonlyargs:
        spec.append(("*", None))
    spec += [
        (a.arg, d and ast.unparse(d)) for a, d in zip(args.kwonlyargs, args.kw_defaults)
    ]
    return spec + [("**", args.kwarg.arg)] if args.kwarg else spec


def _module_file(root, module):
    base = root.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


@pytest.fixture(scope="module")
def sglang_v051(upstream, tmp_path_factory):
    """SGLang v0.5.1's python/ sources, from the local upstream built from PyPI."""
    dest = tmp_path_factory.mktemp("sglang-v0.5.1")
    archive = subprocess.run(
        ["git", "--git-dir", str(upstream), "archive", "v0.5.1", "python/sglang/srt"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "python"


def test_standins_match_v051_signatures(sglang_v051):
    """Stand-in classes/functions keep v0.5.1's parameter names and defaults."""
    SGLANG_V051 = sglang_v051
    checked = 0
    for module in standin.standin_module_names():
        standins = _signatures(_module_file(STANDIN_DIR, module))
        if not standins:
            continue  # an empty stand-in package
        real = _signatures(_module_file(SGLANG_V051, module))
        if module == "sglang.srt.distributed":  # re-exports its submodules
            for sub in ("parallel_state", "utils", "communication_op"):
                real.update(_signatures(_module_file(SGLANG_V051, f"{module}.{sub}")))
        for name, spec in standins.items():
            last = name.rsplit(".", 1)[-1]
            if last.startswith("_") and not last.startswith("__"):
                continue  # private helpers of the stand-ins
            assert name in real, f"{module}.{name} does not exist in v0.5.1"
            assert spec == real[name], f"{module}.{name}: {spec} != {real[name]}"
            checked += 1
    assert checked > 20
