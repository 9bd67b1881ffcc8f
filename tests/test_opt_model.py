"""CPU tests of the overlay's native OPT model (overlay/python/sglang/srt/models/opt.py).

Tiny random OPT checkpoints are written with transformers and read back from
their safetensors files. The tests check the pure name/shape mapping, then
import opt.py against the CPU stand-ins of SGLang v0.5.1 (tests/standin_sglang),
load the checkpoints through ``load_weights`` and compare the logits of
prefill, chunked-prefill and decode steps with transformers' OPTForCausalLM.
"""

import ast
import contextlib
import copy
import inspect
import json
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
    # No layer-norm weights (elementwise_affine=False), pre-LN and post-LN
    # (the latter with opt-350m's projections).
    "pre_ln_no_affine": dict(
        TINY, vocab_size=140, hidden_size=32, word_embed_proj_dim=32, ffn_dim=64,
        num_hidden_layers=2, do_layer_norm_before=True,
        layer_norm_elementwise_affine=False,
    ),
    "post_ln_no_affine": dict(
        TINY, vocab_size=110, hidden_size=32, word_embed_proj_dim=16, ffn_dim=48,
        num_hidden_layers=3, do_layer_norm_before=False,
        layer_norm_elementwise_affine=False,
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


_CHECKPOINTS = {}


def _make_checkpoint(name, tmp_path_factory):
    """A random tiny HF OPT of CONFIGS[name], saved and read back (cached)."""
    if name in _CHECKPOINTS:
        return _CHECKPOINTS[name]
    torch.manual_seed(0)
    config = transformers.OPTConfig(**CONFIGS[name])
    hf_model = transformers.OPTForCausalLM(config).float().eval()
    # HF initialises biases to 0 and norms to 1; randomise everything so that a
    # bias or norm loaded into the wrong place changes the logits.
    with torch.no_grad():
        for param in hf_model.parameters():
            param.copy_(torch.randn_like(param) * 0.3)
    out_dir = tmp_path_factory.mktemp(name)
    hf_model.save_pretrained(out_dir)
    files = sorted(out_dir.glob("*.safetensors"))
    assert files, "save_pretrained wrote no safetensors file"
    tensors = {}
    for file in files:
        tensors.update(safetensors_torch.load_file(str(file)))
    _CHECKPOINTS[name] = Checkpoint(config, hf_model, tensors)
    return _CHECKPOINTS[name]


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def checkpoint(request, tmp_path_factory):
    return _make_checkpoint(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def ckpt_350m(tmp_path_factory):
    """The opt-350m-like checkpoint: post-LN, project_in/out, three layers."""
    return _make_checkpoint("post_ln_350m_like", tmp_path_factory)


@pytest.fixture(scope="module")
def opt():
    """opt.py imported against the stand-ins, which are removed afterwards."""
    with standin.install():
        yield standin.import_overlay_module("sglang.srt.models.opt", OPT_PY)


def _load_model(opt, ckpt, weights, quant_config=None, check=True):
    torch.manual_seed(0)
    model = opt.OPTForCausalLM(ckpt.config, quant_config)
    _poison(model)
    model.load_weights(iter(weights))
    if check:
        _assert_all_loaded(model)
    # As v0.5.1's loader does after load_weights.
    for module in model.modules():
        method = getattr(module, "quant_method", None)
        if method is not None:
            method.process_weights_after_loading(module)
    return model


_INT_POISON = -128  # outside the toy int8 quantization's range [-127, 127]


def _poison(model):
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("k_scale", "v_scale")):
                continue  # they start at -1.0: "not in the checkpoint"
            param.fill_(math.nan if param.is_floating_point() else _INT_POISON)


def _assert_all_loaded(model):
    unloaded = [
        n
        for n, p in model.named_parameters()
        if (torch.isnan(p) if p.is_floating_point() else p == _INT_POISON).any()
    ]
    assert not unloaded, f"parameters not (fully) loaded: {unloaded}"


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


def _check_scenario(ckpt, extend, decode, every_position=False):
    """Chunked batched prefill and decode through ``extend(reqs, token_lists)``
    and ``decode(reqs, tokens)``, each step's logits checked against HF's;
    with ``every_position`` also one sequence decoded token by token."""
    vocab = ckpt.config.vocab_size
    g = torch.Generator().manual_seed(1)
    prompt_a = torch.randint(3, vocab, (9,), generator=g).tolist()
    prompt_b = torch.randint(3, vocab, (6,), generator=g).tolist()
    extra_a = torch.randint(3, vocab, (3,), generator=g).tolist()
    extra_b = torch.randint(3, vocab, (3,), generator=g).tolist()
    ref_a = ckpt.hf_logits(prompt_a + extra_a)
    ref_b = ckpt.hf_logits(prompt_b + extra_b)

    def check(output, expected):
        assert output.next_token_logits.shape == expected.shape
        torch.testing.assert_close(
            output.next_token_logits, expected, rtol=1e-4, atol=1e-4
        )

    # Batched prefill of two sequences (positions restart at 0 for each);
    # request 1 is prefilled in two chunks, the second on top of a cached prefix.
    check(
        extend([0, 1], [prompt_a, prompt_b[:4]]),
        torch.stack([ref_a[len(prompt_a) - 1], ref_b[3]]),
    )
    check(extend([1], [prompt_b[4:]]), ref_b[len(prompt_b) - 1][None])
    # Batched decode steps at positions len(prompt) + i.
    for i in range(3):
        check(
            decode([0, 1], [extra_a[i], extra_b[i]]),
            torch.stack([ref_a[len(prompt_a) + i], ref_b[len(prompt_b) + i]]),
        )
    if not every_position:
        return
    # Every position of one sequence: one token at a time from position 0.
    check(extend([2], [prompt_a[:1]]), ref_a[0:1])
    for pos, token in enumerate(prompt_a[1:], start=1):
        check(decode([2], [token]), ref_a[pos : pos + 1])


def _check_logits(model, ckpt, every_position=False):
    runner = standin_runner.CPUModelRunner(model)
    _check_scenario(ckpt, runner.extend, runner.decode, every_position)


@pytest.mark.parametrize("strip_model_prefix", [False, True])
def test_logits_match_transformers(opt, checkpoint, strip_model_prefix):
    weights = list(checkpoint.tensors.items())
    if checkpoint.config.tie_word_embeddings:  # a stored tied head is skipped
        weights.append(("lm_head.weight", torch.zeros(1)))
    if strip_model_prefix:
        weights = [(n.removeprefix("model."), w) for n, w in weights]
    model = _load_model(opt, checkpoint, weights)
    _check_logits(model, checkpoint, every_position=not strip_model_prefix)


def test_configs_without_layer_norm_weights(opt, checkpoint):
    """elementwise_affine=False: no norm parameter at all, pre- and post-LN."""
    params = dict(opt.OPTForCausalLM(checkpoint.config).named_parameters())
    norms = [n for n in params if "layer_norm" in n]
    affine = checkpoint.config.layer_norm_elementwise_affine
    assert bool(norms) == affine, norms
    assert any("layer_norm" in n for n in checkpoint.tensors) == affine


def _hf_last_hidden(ckpt, **inputs):
    with torch.no_grad():
        return ckpt.hf_model.model.decoder(**inputs).last_hidden_state[0]


def test_pooled_embedding_matches_transformers(opt, checkpoint):
    """forward(get_embedding=True), as ModelRunner calls it for --is-embedding:
    the last token's final hidden state, L2-normalised (SGLang's Pooler)."""
    model = _load_model(opt, checkpoint, checkpoint.tensors.items())
    runner = standin_runner.CPUModelRunner(model)
    g = torch.Generator().manual_seed(2)
    vocab = checkpoint.config.vocab_size
    prompts = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in (7, 4)]
    out = runner.extend([0, 1], prompts, get_embedding=True)
    expected = torch.stack(
        [_hf_last_hidden(checkpoint, input_ids=torch.tensor([p]))[-1] for p in prompts]
    )
    expected = torch.nn.functional.normalize(expected, p=2, dim=1)
    assert out.embeddings.shape == (2, checkpoint.config.word_embed_proj_dim)
    torch.testing.assert_close(out.embeddings, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        out.embeddings.norm(dim=1), torch.ones(2), rtol=1e-5, atol=1e-5
    )


def test_input_embeds_path(opt, checkpoint):
    """forward(input_embeds=...) in place of token ids (ModelRunner hands them
    over in bfloat16), then decode by ids on top of the cached prefix."""
    model = _load_model(opt, checkpoint, checkpoint.tensors.items())
    runner = standin_runner.CPUModelRunner(model)
    config = checkpoint.config
    g = torch.Generator().manual_seed(3)
    # Embeddings no token has, so that ids could not stand in for them.
    embeds = torch.randn(5, config.word_embed_proj_dim, generator=g).bfloat16()
    extra = torch.randint(3, config.vocab_size, (2,), generator=g).tolist()
    hf_embeds = torch.cat(
        [
            embeds.float(),
            checkpoint.hf_model.get_input_embeddings()(torch.tensor(extra)),
        ]
    )
    with torch.no_grad():
        ref = checkpoint.hf_model(inputs_embeds=hf_embeds[None]).logits[0]
    unused_ids = [0] * len(embeds)
    out = runner.extend([0], [unused_ids], input_embeds=embeds)
    torch.testing.assert_close(out.next_token_logits[0], ref[4], rtol=1e-4, atol=1e-4)
    for i, token in enumerate(extra):
        out = runner.decode([0], [token])
        torch.testing.assert_close(
            out.next_token_logits[0], ref[5 + i], rtol=1e-4, atol=1e-4
        )


@contextlib.contextmanager
def pp_stage(rank, size):
    """The stand-in's pipeline group set to ``rank`` of ``size`` (like
    v0.5.1's initialize_model_parallel sets _PP), restored afterwards."""
    dist = sys.modules["sglang.srt.distributed"]
    saved = dist._PP
    dist._PP = dist._single_rank_group(rank, size)
    try:
        yield
    finally:
        dist._PP = saved


def test_two_pipeline_stages_equal_one(opt, checkpoint):
    """Rank 0 and rank 1 of a PP group of two, each loading the whole
    checkpoint, chained through PPProxyTensors by hand: the logits are HF's,
    and each stage holds only its own layers and ends."""
    config = checkpoint.config
    stages = []
    for rank in (0, 1):
        with pp_stage(rank, 2):
            stages.append(_load_model(opt, checkpoint, checkpoint.tensors.items()))
    first, last = stages
    # ModelRunner passes pp_proxy_tensors only to a forward that names it.
    assert "pp_proxy_tensors" in inspect.signature(type(first).forward).parameters
    n = config.num_hidden_layers
    assert (first.start_layer, first.end_layer) == (0, n // 2)
    assert (last.start_layer, last.end_layer) == (n // 2, n)
    first_params = {name for name, _ in first.named_parameters()}
    last_params = {name for name, _ in last.named_parameters()}
    assert not first_params & last_params, first_params & last_params
    single = set(opt.opt_param_shapes(config))
    # The last stage's own lm_head when the head is tied across stages.
    extra = {"lm_head.weight"} if config.tie_word_embeddings else set()
    assert first_params | last_params == single | extra
    assert "model.decoder.embed_tokens.weight" in first_params
    for i in range(n):
        owner = first_params if i < n // 2 else last_params
        assert f"model.decoder.layers.{i}.fc1.weight" in owner
    if config.tie_word_embeddings:
        torch.testing.assert_close(
            last.lm_head.weight, first.model.decoder.embed_tokens.weight
        )

    runners = [standin_runner.CPUModelRunner(m) for m in stages]

    proxy_class = sys.modules[PP_PROXY_MODULE].PPProxyTensors
    g = torch.Generator().manual_seed(4)

    def chained(method):
        def step(reqs, tokens):
            proxy = getattr(runners[0], method)(reqs, tokens)
            assert isinstance(proxy, proxy_class)
            # The keys v0.5.1's CUDA-graph runner keeps buffers for.
            assert set(proxy.tensors) == {"hidden_states", "residual"}
            hidden = proxy["hidden_states"] + proxy["residual"]
            assert hidden.shape == (len(proxy["hidden_states"]), config.hidden_size)
            # The pair means their sum: split it another way.
            residual = torch.randn(hidden.shape, generator=g)
            proxy = proxy_class(
                {"hidden_states": hidden - residual, "residual": residual}
            )
            return getattr(runners[1], method)(reqs, tokens, pp_proxy_tensors=proxy)

        return step

    _check_scenario(checkpoint, chained("extend"), chained("decode"), True)


PP_PROXY_MODULE = "sglang.srt.model_executor.forward_batch_info"


def test_load_weights_names_an_unknown_tensor(opt, checkpoint):
    model = opt.OPTForCausalLM(checkpoint.config)
    weights = dict(checkpoint.tensors)
    weights["model.decoder.layers.0.fc1.weigth"] = weights.pop(
        "model.decoder.layers.0.fc1.weight"
    )
    with pytest.raises(KeyError) as err:
        model.load_weights(iter(weights.items()))
    message = str(err.value)
    assert "'model.decoder.layers.0.fc1.weigth'" in message
    assert "nearest: model.decoder.layers.0.fc1.weight" in message


def test_load_weights_names_a_missing_parameter(opt, checkpoint):
    model = opt.OPTForCausalLM(checkpoint.config)
    weights = dict(checkpoint.tensors)
    del weights["model.decoder.layers.1.fc2.weight"]
    with pytest.raises(ValueError, match=r"model\.decoder\.layers\.1\.fc2\.weight"):
        model.load_weights(iter(weights.items()))


def test_misnamed_checkpoint_fails_on_its_first_tensor(opt, checkpoint):
    """The seed fork's failure: every tensor one level off (here: an extra
    ``model.`` prefix) must not load as nothing."""
    model = opt.OPTForCausalLM(checkpoint.config)
    weights = [("model." + n, w) for n, w in checkpoint.tensors.items()]
    with pytest.raises(KeyError, match="matches no parameter"):
        model.load_weights(iter(weights))


def test_weight_updates_may_carry_a_subset(opt, ckpt_350m):
    """update_weights_from_tensor & co. pass lists of some tensors (also to a
    model never loaded, after --load-format dummy); a stream from a loader
    must be complete."""
    name = "model.decoder.layers.2.fc1.weight"
    new = torch.full_like(ckpt_350m.tensors[name], 0.5)
    for model in (
        _load_model(opt, ckpt_350m, ckpt_350m.tensors.items()),
        opt.OPTForCausalLM(ckpt_350m.config),
    ):
        model.load_weights([(name, new)])
        assert torch.equal(dict(model.named_parameters())[name], new)
        with pytest.raises(ValueError, match="layers.2.fc2.weight"):
            model.load_weights(iter([(name, new)]))


def test_known_extra_tensors_are_skipped(opt, ckpt_350m):
    """fairseq's decoder.version and a stored tied head load as nothing;
    FP8 KV-cache scales are skipped when the KV cache is not quantized."""
    weights = dict(ckpt_350m.tensors)
    weights["decoder.version"] = torch.tensor([3.0])
    weights["lm_head.weight"] = torch.zeros(1)
    weights.update(_kv_scale_tensors())
    model = _load_model(opt, ckpt_350m, weights.items())
    _check_logits(model, ckpt_350m)


# ---- quantization: a toy config in the shape of v0.5.1's ------------------


def _toy_quant_config(quantize_linears=False, kv_cache=False):
    """A QuantizationConfig on the stand-ins' bases: optionally an int8
    weight-only method (``qweight`` + per-row ``weight_scale``) for every
    linear layer, like GPTQ/AWQ configs quantize every LinearBase, and
    optionally an FP8 KV cache (k/v scales on RadixAttention)."""
    from torch.nn.parameter import Parameter

    from sglang.srt.layers.linear import LinearBase
    from sglang.srt.layers.quantization.base_config import (
        LinearMethodBase,
        QuantizationConfig,
    )
    from sglang.srt.layers.quantization.kv_cache import BaseKVCacheMethod
    from sglang.srt.layers.quantization.unquant import UnquantizedLinearMethod
    from sglang.srt.layers.radix_attention import RadixAttention
    from sglang.srt.utils import set_weight_attrs

    class Int8WeightOnly(LinearMethodBase):
        def create_weights(
            self,
            layer,
            input_size_per_partition,
            output_partition_sizes,
            input_size,
            output_size,
            params_dtype,
            **extra_weight_attrs,
        ):
            rows = sum(output_partition_sizes)
            qweight = Parameter(
                torch.empty(rows, input_size_per_partition, dtype=torch.int8),
                requires_grad=False,
            )
            scale = Parameter(
                torch.empty(rows, dtype=params_dtype), requires_grad=False
            )
            set_weight_attrs(qweight, {"input_dim": 1, "output_dim": 0})
            set_weight_attrs(scale, {"output_dim": 0})
            layer.register_parameter("qweight", qweight)
            layer.register_parameter("weight_scale", scale)
            set_weight_attrs(qweight, extra_weight_attrs)
            set_weight_attrs(scale, extra_weight_attrs)

        def apply(self, layer, x, bias=None):
            weight = layer.qweight.to(x.dtype) * layer.weight_scale[:, None]
            return torch.nn.functional.linear(x, weight, bias)

    class ToyConfig(QuantizationConfig):
        def __init__(self):
            super().__init__()
            self.prefixes = {}

        def get_name(self):
            return "toy"

        def get_scaled_act_names(self):
            return []

        def get_quant_method(self, layer, prefix):
            self.prefixes[prefix] = type(layer).__name__
            if isinstance(layer, RadixAttention):
                return BaseKVCacheMethod(self) if kv_cache else None
            if isinstance(layer, LinearBase):
                return (
                    Int8WeightOnly() if quantize_linears else UnquantizedLinearMethod()
                )
            return None

    return ToyConfig()


_LINEARS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def _quantize(ckpt, skip=()):
    """The checkpoint with every linear weight int8-quantized per row (except
    names containing an entry of ``skip``), and an HF model holding exactly
    the dequantized weights."""
    tensors, hf_model = {}, copy.deepcopy(ckpt.hf_model)
    hf_params = dict(hf_model.named_parameters())
    for name, weight in ckpt.tensors.items():
        module = name.rsplit(".", 2)[-2]
        is_linear = module in _LINEARS + ("project_in", "project_out")
        if not (is_linear and name.endswith(".weight")) or any(s in name for s in skip):
            tensors[name] = weight
            continue
        scale = weight.abs().amax(dim=1) / 127
        qweight = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
        base = name[: -len(".weight")]
        tensors[base + ".qweight"] = qweight
        tensors[base + ".weight_scale"] = scale
        with torch.no_grad():
            hf_params[name].copy_(qweight.float() * scale[:, None])
    return Checkpoint(ckpt.config, hf_model, tensors)


def test_quantized_project_in_and_out(opt, ckpt_350m):
    """A checkpoint that quantizes project_in/project_out (with everything
    else): they get the quant config and their prefixes, and load."""
    quant = _toy_quant_config(quantize_linears=True)
    qckpt = _quantize(ckpt_350m)
    assert "model.decoder.project_in.qweight" in qckpt.tensors
    model = _load_model(opt, qckpt, qckpt.tensors.items(), quant)
    assert quant.prefixes["model.decoder.project_in"] == "ReplicatedLinear"
    assert quant.prefixes["model.decoder.project_out"] == "ReplicatedLinear"
    assert quant.prefixes["model.decoder.layers.1.self_attn.qkv_proj"]
    assert model.model.decoder.project_in.qweight.dtype == torch.int8
    _check_logits(model, qckpt)


def test_unquantized_projections_in_a_quantized_checkpoint(opt, ckpt_350m):
    """AutoGPTQ-style: every layer linear quantized, project_in/project_out
    stored as plain weights: those two load unquantized."""
    quant = _toy_quant_config(quantize_linears=True)
    qckpt = _quantize(ckpt_350m, skip=("project_in", "project_out"))
    assert "model.decoder.project_in.weight" in qckpt.tensors
    model = _load_model(opt, qckpt, qckpt.tensors.items(), quant)
    decoder = model.model.decoder
    assert {n for n, _ in decoder.project_in.named_parameters()} == {"weight"}
    assert decoder.layers[0].fc1.qweight.dtype == torch.int8
    _check_logits(model, qckpt)


def test_quantized_checkpoint_extra_bias_is_skipped(opt, tmp_path_factory):
    """GPTQ stores a bias for every linear, also in a model without biases."""
    ckpt = _make_checkpoint("untied_no_bias_gelu", tmp_path_factory)
    qckpt = _quantize(ckpt)
    weights = dict(qckpt.tensors)
    weights["model.decoder.layers.0.fc1.bias"] = torch.zeros(ckpt.config.ffn_dim)
    model = _load_model(opt, qckpt, weights.items(), _toy_quant_config(True))
    _check_logits(model, qckpt)
    # Unquantized, the same tensor is unknown.
    plain = dict(ckpt.tensors)
    plain["model.decoder.layers.0.fc1.bias"] = torch.zeros(ckpt.config.ffn_dim)
    with pytest.raises(KeyError, match="layers.0.fc1.bias"):
        opt.OPTForCausalLM(ckpt.config).load_weights(iter(plain.items()))


def _kv_scale_tensors():
    """FP8 KV-cache scales in the three namings v0.5.1 remaps."""
    return {
        # ModelOpt
        "model.decoder.layers.0.self_attn.k_proj.k_scale": torch.tensor(0.5),
        "model.decoder.layers.0.self_attn.v_proj.v_scale": torch.tensor(0.25),
        # plain per-attention scales (without the model. prefix)
        "decoder.layers.1.self_attn.k_scale": torch.tensor([0.75]),
        "decoder.layers.1.self_attn.v_scale": torch.tensor([1.5]),
        # deprecated single kv_scale
        "model.decoder.layers.2.self_attn.kv_scale": torch.tensor(2.0),
    }


def test_fp8_kv_cache_scales_load(opt, ckpt_350m):
    quant = _toy_quant_config(kv_cache=True)
    weights = dict(ckpt_350m.tensors)
    weights.update(_kv_scale_tensors())
    model = _load_model(opt, ckpt_350m, weights.items(), quant)
    attns = [layer.self_attn.attn for layer in model.model.decoder.layers]
    got = [(a.k_scale_float, a.v_scale_float) for a in attns]
    # Layer 2's kv_scale serves both (BaseKVCacheMethod duplicates it).
    assert got == [(0.5, 0.25), (0.75, 1.5), (2.0, 2.0)]
    assert [a.k_scale.item() for a in attns] == [0.5, 0.75, 2.0]
    _check_logits(model, ckpt_350m)
    # A checkpoint without scales: they default to 1.0, nothing is missing.
    model = _load_model(opt, ckpt_350m, ckpt_350m.tensors.items(), quant)
    attn = model.model.decoder.layers[0].self_attn.attn
    assert (attn.k_scale_float, attn.v_scale_float) == (1.0, 1.0)


@pytest.mark.parametrize("kv_cache", [False, True])
def test_load_kv_cache_scales(opt, ckpt_350m, tmp_path, kv_cache):
    """--quantization-param-path: ModelRunner calls load_kv_cache_scales."""
    quant = _toy_quant_config(kv_cache=True) if kv_cache else None
    model = _load_model(opt, ckpt_350m, ckpt_350m.tensors.items(), quant)
    path = tmp_path / "kv_cache_scales.json"
    scales = {"0": 0.5, "1": 0.25, "2": 4.0}
    path.write_text(
        json.dumps(
            {
                "model_type": "opt",
                "kv_cache": {"dtype": "float8_e4m3fn", "scaling_factor": {"0": scales}},
            }
        )
    )
    model.load_kv_cache_scales(str(path))
    for layer, scale in zip(model.model.decoder.layers, scales.values()):
        attn = layer.self_attn.attn
        assert attn.k_scale_float == attn.v_scale_float == scale
        assert float(attn.k_scale) == float(attn.v_scale) == scale
        assert isinstance(attn.k_scale, torch.Tensor) == kv_cache


def test_packed_modules_mapping(opt, checkpoint):
    """Every fused parameter is listed with the checkpoint modules it is
    loaded from, in shard order."""
    mapping = opt.OPTForCausalLM.packed_modules_mapping
    assert mapping == {"qkv_proj": ["q_proj", "k_proj", "v_proj"]}
    for name in checkpoint.tensors:
        mapped = opt.opt_hf_to_sglang(name, checkpoint.config.tie_word_embeddings)
        if mapped is None or mapped[1] is None:
            continue
        fused = mapped[0].rsplit(".", 2)[-2]
        original = name.rsplit(".", 2)[-2]
        assert original in mapping[fused]
        assert mapping[fused].index(original) == "qkv".index(mapped[1])


@pytest.mark.parametrize("name", ["pre_ln", "untied_no_bias_gelu"])
def test_eagle_embed_and_head_sharing(opt, tmp_path_factory, name):
    """An EAGLE draft takes its target's embedding and head: a model whose
    own embedding and head are wrong gives HF's logits after taking them."""
    checkpoint = _make_checkpoint(name, tmp_path_factory)
    target = _load_model(opt, checkpoint, checkpoint.tensors.items())
    embed, head = target.get_embed_and_head()
    assert embed is target.model.decoder.embed_tokens.weight
    assert head is target.lm_head.weight
    assert (embed is head) == checkpoint.config.tie_word_embeddings
    wrong = dict(checkpoint.tensors)
    for name in ("model.decoder.embed_tokens.weight", "lm_head.weight"):
        if name in wrong:
            wrong[name] = torch.randn_like(wrong[name])
    draft = _load_model(opt, checkpoint, wrong.items())
    draft.set_embed_and_head(embed, head)
    draft_embed, draft_head = draft.get_embed_and_head()
    assert draft_embed is embed and draft_head is head
    assert any(p is embed for p in draft.parameters())
    _check_logits(draft, checkpoint)
    if checkpoint.config.tie_word_embeddings:
        with pytest.raises(ValueError, match="tie_word_embeddings"):
            draft.set_embed_and_head(embed, torch.nn.Parameter(embed.clone()))


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
    checked = set()
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
            checked.add(f"{module}.{name}")
    # The interfaces behind pipeline parallelism, pooling, KV-cache scales and
    # quantize methods are among those checked (a stand-in renamed private,
    # or moved to another module, would silently drop out).
    assert {
        "sglang.srt.distributed.get_pp_group",
        "sglang.srt.distributed.get_pp_indices",
        "sglang.srt.distributed.GroupCoordinator.__init__",
        "sglang.srt.distributed.GroupCoordinator.is_first_rank",
        "sglang.srt.distributed.GroupCoordinator.is_last_rank",
        "sglang.srt.utils.make_layers",
        "sglang.srt.layers.utils.PPMissingLayer.__init__",
        "sglang.srt.layers.utils.get_layer_id",
        "sglang.srt.model_executor.forward_batch_info.PPProxyTensors.<fields>",
        "sglang.srt.model_executor.forward_batch_info.PPProxyTensors.__getitem__",
        "sglang.srt.layers.pooler.Pooler.__init__",
        "sglang.srt.layers.pooler.Pooler.forward",
        "sglang.srt.layers.pooler.EmbeddingPoolerOutput.<fields>",
        "sglang.srt.model_loader.weight_utils.maybe_remap_kv_scale_name",
        "sglang.srt.model_loader.weight_utils.kv_cache_scales_loader",
        "sglang.srt.layers.quantization.base_config.LinearMethodBase.create_weights",
        "sglang.srt.layers.quantization.base_config.QuantizationConfig.get_scaled_act_names",
        "sglang.srt.layers.quantization.unquant.UnquantizedLinearMethod.create_weights",
        "sglang.srt.layers.quantization.kv_cache.BaseKVCacheMethod.create_weights",
        "sglang.srt.layers.quantization.kv_cache.BaseKVCacheMethod.process_weights_after_loading",
    } <= checked
    assert len(checked) > 50
