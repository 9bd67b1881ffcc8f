# Copyright 2023-2024 SGLang Team
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
# ==============================================================================
"""Inference-only OPT model compatible with HuggingFace weights."""

import collections.abc
import difflib
import logging
from typing import Dict, Iterable, Optional, Set, Tuple, Union

import torch
from torch import nn
from transformers import OPTConfig

from sglang.srt.distributed import (
    get_pp_group,
    get_tensor_model_parallel_rank,
    get_tensor_model_parallel_world_size,
)
from sglang.srt.layers.activation import get_act_fn
from sglang.srt.layers.linear import (
    ColumnParallelLinear,
    QKVParallelLinear,
    ReplicatedLinear,
    RowParallelLinear,
)
from sglang.srt.layers.logits_processor import LogitsProcessor, LogitsProcessorOutput
from sglang.srt.layers.pooler import EmbeddingPoolerOutput, Pooler, PoolingType
from sglang.srt.layers.quantization.base_config import QuantizationConfig
from sglang.srt.layers.radix_attention import RadixAttention
from sglang.srt.layers.utils import PPMissingLayer
from sglang.srt.layers.vocab_parallel_embedding import (
    ParallelLMHead,
    VocabParallelEmbedding,
)
from sglang.srt.model_executor.forward_batch_info import ForwardBatch, PPProxyTensors
from sglang.srt.model_loader.weight_utils import (
    default_weight_loader,
    kv_cache_scales_loader,
    maybe_remap_kv_scale_name,
)
from sglang.srt.utils import add_prefix, make_layers

logger = logging.getLogger(__name__)

# OPT reserves the first two rows of its learned position table: the token at
# position p uses row p + 2.
OPT_POSITION_OFFSET = 2

# Hugging Face keeps separate q/k/v projections; they are fused into qkv_proj.
_QKV_SHARDS = (("q_proj", "q"), ("k_proj", "k"), ("v_proj", "v"))

# Tensors some OPT checkpoints carry that hold no weight (fairseq's version).
_EXTRA_TENSORS = frozenset({"model.decoder.version"})

_EMBED_WEIGHT = "model.decoder.embed_tokens.weight"
# Per-tensor FP8 KV-cache scales a quantization config may give RadixAttention;
# a checkpoint without them leaves the defaults (see BaseKVCacheMethod).
_OPTIONAL_PARAM_SUFFIXES = (".attn.k_scale", ".attn.v_scale")


def opt_hf_to_sglang(
    name: str, tie_word_embeddings: bool = True
) -> Optional[Tuple[str, Optional[str]]]:
    """Map a Hugging Face OPT weight name to ``(param_name, shard_id)``.

    ``shard_id`` is "q", "k" or "v" for the fused ``qkv_proj`` and None
    otherwise. Returns None for a weight that must be skipped: ``lm_head``
    when it is tied to ``embed_tokens``, and fairseq's ``decoder.version``
    that metaseq-converted checkpoints carry. Names without the ``model.`` prefix
    (``decoder.*``), as found in some checkpoints, are accepted too.
    """
    if name.startswith("lm_head."):
        return None if tie_word_embeddings else (name, None)
    if name.startswith("decoder."):
        name = "model." + name
    if name in _EXTRA_TENSORS:
        return None
    for hf_proj, shard_id in _QKV_SHARDS:
        if f".self_attn.{hf_proj}." in name:
            return name.replace(f".{hf_proj}.", ".qkv_proj."), shard_id
    return name, None


def opt_param_shapes(config: OPTConfig) -> Dict[str, Tuple[int, ...]]:
    """Parameter names of ``OPTForCausalLM`` and the full (unsharded, unpadded)
    shapes of the checkpoint data they hold; ``qkv_proj`` stacks q, k and v."""
    hidden, proj, ffn = config.hidden_size, config.word_embed_proj_dim, config.ffn_dim
    affine = config.layer_norm_elementwise_affine
    num_positions = config.max_position_embeddings + OPT_POSITION_OFFSET
    prefix = "model.decoder."
    shapes = {
        prefix + "embed_tokens.weight": (config.vocab_size, proj),
        prefix + "embed_positions.weight": (num_positions, hidden),
    }
    if proj != hidden:
        shapes[prefix + "project_in.weight"] = (hidden, proj)
        shapes[prefix + "project_out.weight"] = (proj, hidden)
    if _has_final_layer_norm(config) and affine:
        shapes[prefix + "final_layer_norm.weight"] = (hidden,)
        shapes[prefix + "final_layer_norm.bias"] = (hidden,)
    linears = {
        "self_attn.qkv_proj": (3 * hidden, hidden),
        "self_attn.out_proj": (hidden, hidden),
        "fc1": (ffn, hidden),
        "fc2": (hidden, ffn),
    }
    for i in range(config.num_hidden_layers):
        layer = f"{prefix}layers.{i}."
        for module, shape in linears.items():
            shapes[layer + module + ".weight"] = shape
            if config.enable_bias:
                shapes[layer + module + ".bias"] = shape[:1]
        if affine:
            for norm in ("self_attn_layer_norm", "final_layer_norm"):
                shapes[layer + norm + ".weight"] = (hidden,)
                shapes[layer + norm + ".bias"] = (hidden,)
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (config.vocab_size, proj)
    return shapes


def _has_final_layer_norm(config: OPTConfig) -> bool:
    # `_remove_final_layer_norm` only exists for checkpoints fine-tuned before
    # transformers v4.20.1; post-LN models (opt-350m) never have the norm.
    return config.do_layer_norm_before and not getattr(
        config, "_remove_final_layer_norm", False
    )


class OPTLearnedPositionalEmbedding(nn.Embedding):
    """Learned absolute position embeddings, shifted by OPT's offset of 2."""

    def __init__(self, num_embeddings: int, embedding_dim: int):
        super().__init__(num_embeddings + OPT_POSITION_OFFSET, embedding_dim)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return super().forward(positions + OPT_POSITION_OFFSET)


class OPTAttention(nn.Module):
    def __init__(
        self,
        config: OPTConfig,
        layer_id: int,
        quant_config: Optional[QuantizationConfig] = None,
        prefix: str = "",
    ) -> None:
        super().__init__()
        self.embed_dim = config.hidden_size
        total_num_heads = config.num_attention_heads
        tp_size = get_tensor_model_parallel_world_size()
        assert total_num_heads % tp_size == 0
        self.num_heads = total_num_heads // tp_size
        self.head_dim = self.embed_dim // total_num_heads
        self.scaling = self.head_dim**-0.5

        self.qkv_proj = QKVParallelLinear(
            self.embed_dim,
            self.head_dim,
            total_num_heads,
            bias=config.enable_bias,
            quant_config=quant_config,
            prefix=add_prefix("qkv_proj", prefix),
        )
        self.out_proj = RowParallelLinear(
            self.embed_dim,
            self.embed_dim,
            bias=config.enable_bias,
            quant_config=quant_config,
            prefix=add_prefix("out_proj", prefix),
        )
        self.attn = RadixAttention(
            self.num_heads,
            self.head_dim,
            scaling=self.scaling,
            num_kv_heads=self.num_heads,
            layer_id=layer_id,
            quant_config=quant_config,
            prefix=add_prefix("attn", prefix),
        )

    def forward(
        self, hidden_states: torch.Tensor, forward_batch: ForwardBatch
    ) -> torch.Tensor:
        qkv, _ = self.qkv_proj(hidden_states)
        q, k, v = qkv.chunk(chunks=3, dim=-1)
        attn_output = self.attn(q, k, v, forward_batch)
        output, _ = self.out_proj(attn_output)
        return output


class OPTDecoderLayer(nn.Module):
    def __init__(
        self,
        config: OPTConfig,
        layer_id: int,
        quant_config: Optional[QuantizationConfig] = None,
        prefix: str = "",
    ) -> None:
        super().__init__()
        hidden_size = config.hidden_size
        affine = config.layer_norm_elementwise_affine
        # Most OPT sizes are pre-LN; opt-350m normalises after each residual.
        self.do_layer_norm_before = config.do_layer_norm_before
        self.self_attn = OPTAttention(
            config, layer_id, quant_config, prefix=add_prefix("self_attn", prefix)
        )
        self.self_attn_layer_norm = nn.LayerNorm(hidden_size, elementwise_affine=affine)
        self.fc1 = ColumnParallelLinear(
            hidden_size,
            config.ffn_dim,
            bias=config.enable_bias,
            quant_config=quant_config,
            prefix=add_prefix("fc1", prefix),
        )
        # SGLang's activation registry has no plain ReLU, which OPT uses.
        if config.activation_function == "relu":
            self.activation_fn = nn.ReLU()
        else:
            self.activation_fn = get_act_fn(
                config.activation_function, quant_config, config.ffn_dim
            )
        self.fc2 = RowParallelLinear(
            config.ffn_dim,
            hidden_size,
            bias=config.enable_bias,
            quant_config=quant_config,
            prefix=add_prefix("fc2", prefix),
        )
        self.final_layer_norm = nn.LayerNorm(hidden_size, elementwise_affine=affine)

    def forward(
        self, hidden_states: torch.Tensor, forward_batch: ForwardBatch
    ) -> torch.Tensor:
        residual = hidden_states
        if self.do_layer_norm_before:
            hidden_states = self.self_attn_layer_norm(hidden_states)
        hidden_states = residual + self.self_attn(hidden_states, forward_batch)
        if not self.do_layer_norm_before:
            hidden_states = self.self_attn_layer_norm(hidden_states)

        residual = hidden_states
        if self.do_layer_norm_before:
            hidden_states = self.final_layer_norm(hidden_states)
        hidden_states, _ = self.fc1(hidden_states)
        hidden_states = self.activation_fn(hidden_states)
        hidden_states, _ = self.fc2(hidden_states)
        hidden_states = residual + hidden_states
        if not self.do_layer_norm_before:
            hidden_states = self.final_layer_norm(hidden_states)
        return hidden_states


class OPTDecoder(nn.Module):
    """The decoder stack, or this pipeline stage's part of it.

    The first stage embeds tokens and positions (and projects them in), the
    last one applies the final layer norm (and projects out); the layers are
    split across the stages by ``make_layers``. Modules another stage owns
    are ``PPMissingLayer``; those the config has no use for are None.
    """

    def __init__(
        self,
        config: OPTConfig,
        quant_config: Optional[QuantizationConfig] = None,
        prefix: str = "",
    ) -> None:
        super().__init__()
        hidden_size, proj_dim = config.hidden_size, config.word_embed_proj_dim
        self.prefix = prefix
        self.pp_group = get_pp_group()
        first, last = self.pp_group.is_first_rank, self.pp_group.is_last_rank
        projected = proj_dim != hidden_size
        if first:
            self.embed_tokens = VocabParallelEmbedding(
                config.vocab_size,
                proj_dim,
                quant_config=quant_config,
                prefix=add_prefix("embed_tokens", prefix),
            )
            self.embed_positions = OPTLearnedPositionalEmbedding(
                config.max_position_embeddings, hidden_size
            )
        else:
            self.embed_tokens = PPMissingLayer()
            self.embed_positions = PPMissingLayer()
        # Models whose embedding width differs from the hidden size (opt-350m)
        # project in and out of the decoder stack. The quantization config
        # decides by prefix whether these are quantized; a checkpoint that
        # stores them unquantized anyway is handled in load_weights.
        self.project_in = self.project_out = None
        if projected:
            self.project_in = (
                _projection(proj_dim, hidden_size, quant_config, prefix, "project_in")
                if first
                else PPMissingLayer()
            )
            self.project_out = (
                _projection(hidden_size, proj_dim, quant_config, prefix, "project_out")
                if last
                else PPMissingLayer()
            )
        self.final_layer_norm = None
        if _has_final_layer_norm(config):
            self.final_layer_norm = (
                nn.LayerNorm(
                    hidden_size,
                    elementwise_affine=config.layer_norm_elementwise_affine,
                )
                if last
                else PPMissingLayer()
            )
        self.layers, self.start_layer, self.end_layer = make_layers(
            config.num_hidden_layers,
            lambda idx, prefix: OPTDecoderLayer(
                config, idx, quant_config, prefix=prefix
            ),
            pp_rank=self.pp_group.rank_in_group,
            pp_size=self.pp_group.world_size,
            prefix=add_prefix("layers", prefix),
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        forward_batch: ForwardBatch,
        input_embeds: Optional[torch.Tensor] = None,
        pp_proxy_tensors: Optional[PPProxyTensors] = None,
    ) -> Union[torch.Tensor, PPProxyTensors]:
        if self.pp_group.is_first_rank:
            if input_embeds is None:
                input_embeds = self.embed_tokens(input_ids)
            else:
                # ModelRunner hands embeddings over in bfloat16.
                input_embeds = input_embeds.to(self.embed_positions.weight.dtype)
            if self.project_in is not None:
                input_embeds, _ = self.project_in(input_embeds)
            hidden_states = input_embeds + self.embed_positions(positions)
        else:
            assert pp_proxy_tensors is not None, "a later stage needs its input"
            hidden_states = (
                pp_proxy_tensors["hidden_states"] + pp_proxy_tensors["residual"]
            )
        for i in range(self.start_layer, self.end_layer):
            hidden_states = self.layers[i](hidden_states, forward_batch)
        if not self.pp_group.is_last_rank:
            # v0.5.1's CUDA-graph runner replays a later stage from fixed
            # "hidden_states" and "residual" buffers (llama's pair). OPT's
            # layers carry no separate residual: the state goes whole, with a
            # zero residual, and the next stage adds the two.
            return PPProxyTensors(
                {
                    "hidden_states": hidden_states,
                    "residual": torch.zeros_like(hidden_states),
                }
            )
        if self.final_layer_norm is not None:
            hidden_states = self.final_layer_norm(hidden_states)
        if self.project_out is not None:
            hidden_states, _ = self.project_out(hidden_states)
        return hidden_states


def _projection(
    input_size: int,
    output_size: int,
    quant_config: Optional[QuantizationConfig],
    prefix: str,
    name: str,
) -> ReplicatedLinear:
    return ReplicatedLinear(
        input_size,
        output_size,
        bias=False,
        quant_config=quant_config,
        prefix=add_prefix(name, prefix),
    )


class OPTModel(nn.Module):
    def __init__(
        self,
        config: OPTConfig,
        quant_config: Optional[QuantizationConfig] = None,
        prefix: str = "",
    ) -> None:
        super().__init__()
        self.decoder = OPTDecoder(
            config, quant_config, prefix=add_prefix("decoder", prefix)
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        forward_batch: ForwardBatch,
        input_embeds: Optional[torch.Tensor] = None,
        pp_proxy_tensors: Optional[PPProxyTensors] = None,
    ) -> Union[torch.Tensor, PPProxyTensors]:
        return self.decoder(
            input_ids,
            positions,
            forward_batch,
            input_embeds,
            pp_proxy_tensors=pp_proxy_tensors,
        )


class OPTForCausalLM(nn.Module):
    # Checkpoint modules fused into one of ours (quantization configs and the
    # loader read this to match their per-module settings).
    packed_modules_mapping = {"qkv_proj": ["q_proj", "k_proj", "v_proj"]}

    def __init__(
        self,
        config: OPTConfig,
        quant_config: Optional[QuantizationConfig] = None,
        prefix: str = "",
    ) -> None:
        super().__init__()
        self.config = config
        self.quant_config = quant_config
        self.pp_group = get_pp_group()
        self.model = OPTModel(config, quant_config, prefix=add_prefix("model", prefix))
        if not self.pp_group.is_last_rank:
            self.lm_head = PPMissingLayer()
        elif config.tie_word_embeddings and self.pp_group.is_first_rank:
            self.lm_head = self.model.decoder.embed_tokens
        else:
            # Untied, or tied across pipeline stages: the last stage keeps its
            # own copy, which load_weights fills from embed_tokens when tied.
            self.lm_head = ParallelLMHead(
                config.vocab_size,
                config.word_embed_proj_dim,
                quant_config=quant_config,
                prefix=add_prefix("lm_head", prefix),
            )
        self.logits_processor = LogitsProcessor(config)
        self.pooler = Pooler(pooling_type=PoolingType.LAST, normalize=True)

    @torch.no_grad()
    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        forward_batch: ForwardBatch,
        input_embeds: Optional[torch.Tensor] = None,
        get_embedding: bool = False,
        pp_proxy_tensors: Optional[PPProxyTensors] = None,
    ) -> Union[LogitsProcessorOutput, EmbeddingPoolerOutput, PPProxyTensors]:
        hidden_states = self.model(
            input_ids,
            positions,
            forward_batch,
            input_embeds,
            pp_proxy_tensors=pp_proxy_tensors,
        )
        if not self.pp_group.is_last_rank:
            return hidden_states
        if get_embedding:
            return self.pooler(hidden_states, forward_batch)
        return self.logits_processor(
            input_ids, hidden_states, self.lm_head, forward_batch
        )

    @property
    def start_layer(self) -> int:
        return self.model.decoder.start_layer

    @property
    def end_layer(self) -> int:
        return self.model.decoder.end_layer

    def get_input_embeddings(self) -> nn.Module:
        return self.model.decoder.embed_tokens

    def get_embed_and_head(self) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.model.decoder.embed_tokens.weight, self.lm_head.weight

    def set_embed_and_head(self, embed: torch.Tensor, head: torch.Tensor) -> None:
        """Share another model's embedding and head (an EAGLE draft model
        takes its target's)."""
        embed_tokens = self.model.decoder.embed_tokens
        tied = self.lm_head is embed_tokens
        if tied and head is not embed:
            raise ValueError(
                "OPT with tie_word_embeddings holds one matrix for its "
                "embedding and head; it cannot take two different ones"
            )
        del embed_tokens.weight
        embed_tokens.weight = embed
        if not tied:
            del self.lm_head.weight
            self.lm_head.weight = head
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.synchronize()

    def load_kv_cache_scales(self, quantization_param_path: str) -> None:
        """Per-layer FP8 KV-cache scales from --quantization-param-path's JSON."""
        decoder = self.model.decoder
        for layer_idx, scale in kv_cache_scales_loader(
            quantization_param_path,
            get_tensor_model_parallel_rank(),
            get_tensor_model_parallel_world_size(),
            self.config.num_hidden_layers,
            self.config.__class__.model_type,
        ):
            if not decoder.start_layer <= layer_idx < decoder.end_layer:
                continue
            attn = decoder.layers[layer_idx].self_attn.attn
            for kv in ("k", "v"):
                current = getattr(attn, f"{kv}_scale")
                if isinstance(current, torch.Tensor):
                    current.data.fill_(scale)
                else:
                    setattr(attn, f"{kv}_scale", scale)
                setattr(attn, f"{kv}_scale_float", scale)

    def load_weights(self, weights: Iterable[Tuple[str, torch.Tensor]]) -> None:
        """Load Hugging Face OPT tensors.

        q/k/v are fused into qkv_proj; FP8 KV-cache scales are renamed to the
        attention's (and skipped when the KV cache is not quantized); tensors
        of another pipeline stage are skipped, and so are a tied head and
        fairseq's ``decoder.version``. Any other tensor without a parameter is
        an error naming it.

        A checkpoint streamed by a loader (an iterator, as the model loaders
        and update_weights_from_disk pass) must also provide every parameter:
        one that received no tensor is an error naming it. A list or tuple,
        as update_weights_from_tensor / _from_distributed pass (in buckets,
        also after a dummy load), may carry a subset.
        """
        complete = not isinstance(weights, collections.abc.Sequence)
        params = dict(self.named_parameters())
        tie = self.config.tie_word_embeddings
        loaded: Dict[str, Set[Optional[str]]] = {}
        for hf_name, loaded_weight in weights:
            name = hf_name
            if "scale" in name:  # FP8 KV-cache scales: modelopt, plain, quark
                name = maybe_remap_kv_scale_name(
                    "model." + name if name.startswith("decoder.") else name, params
                )
                if name is None:
                    continue  # the model's KV cache has no scales to load
            mapped = opt_hf_to_sglang(name, tie)
            if mapped is None:
                continue
            param_name, shard_id = mapped
            targets = [param_name]
            if tie and param_name == _EMBED_WEIGHT and "lm_head.weight" in params:
                targets.append("lm_head.weight")  # tied across pipeline stages
            for target in targets:
                if target not in params:
                    if self._owned_by_another_stage(target):
                        continue
                    if self._unquantize_projection(target, loaded_weight):
                        params = dict(self.named_parameters())
                    elif self._is_extra_bias(target):
                        continue
                    else:
                        raise KeyError(self._unknown(hf_name, target, params))
                param = params[target]
                weight_loader = getattr(param, "weight_loader", default_weight_loader)
                if shard_id is None:
                    weight_loader(param, loaded_weight)
                else:
                    weight_loader(param, loaded_weight, shard_id)
                loaded.setdefault(target, set()).add(shard_id)
        missing = [n for n in params if not _fully_loaded(n, loaded.get(n))]
        if complete and missing:
            raise ValueError(
                f"OPT checkpoint provides no tensor for parameter(s) "
                f"{', '.join(missing)}; its tensor names or config do not "
                f"match this model"
            )

    def _submodule(self, path: str) -> Optional[nn.Module]:
        module = self
        for part in path.split(".") if path else []:
            module = getattr(module, part, None)
            if not isinstance(module, nn.Module):
                return None
        return module

    def _owned_by_another_stage(self, param_name: str) -> bool:
        module = self
        for part in param_name.split(".")[:-1]:
            module = getattr(module, part, None)
            if isinstance(module, PPMissingLayer):
                return True
            if not isinstance(module, nn.Module):
                return False
        return False

    def _unquantize_projection(self, name: str, loaded_weight: torch.Tensor) -> bool:
        """A checkpoint quantized by a config that covers every linear layer
        may still store project_in/project_out unquantized (AutoGPTQ does):
        the layer is rebuilt unquantized, where it lives, to take the weight."""
        decoder = self.model.decoder
        for attr in ("project_in", "project_out"):
            layer = getattr(decoder, attr)
            if (
                name != f"model.decoder.{attr}.weight"
                or not isinstance(layer, ReplicatedLinear)
                or "weight" in dict(layer.named_parameters())
            ):
                continue
            reference = next(layer.parameters(), loaded_weight)
            with torch.device(reference.device):
                plain = ReplicatedLinear(
                    layer.input_size,
                    layer.output_size,
                    bias=False,
                    params_dtype=layer.params_dtype,
                    prefix=add_prefix(attr, decoder.prefix),
                )
            setattr(decoder, attr, plain)
            logger.info("%s is not quantized in the checkpoint: loaded as is", attr)
            return True
        return False

    def _is_extra_bias(self, name: str) -> bool:
        # GPTQ checkpoints store a bias for every linear layer, also where
        # the model has none (enable_bias=False).
        if self.quant_config is None or not name.endswith(".bias"):
            return False
        layer = self._submodule(name[: -len(".bias")])
        return layer is not None and getattr(layer, "bias", 0) is None

    @staticmethod
    def _unknown(hf_name: str, name: str, params: Dict[str, nn.Parameter]) -> str:
        nearest = difflib.get_close_matches(name, list(params), n=3, cutoff=0.0)
        return (
            f"OPT checkpoint tensor {hf_name!r} (as {name!r}) matches no "
            f"parameter of the model; nearest: {', '.join(nearest) or 'none'}"
        )


def _fully_loaded(name: str, shards: Optional[Set[Optional[str]]]) -> bool:
    if name.endswith(_OPTIONAL_PARAM_SUFFIXES):
        return True
    if not shards:
        return False
    if ".qkv_proj." in name:
        return None in shards or {"q", "k", "v"} <= shards
    return True


EntryClass = OPTForCausalLM
