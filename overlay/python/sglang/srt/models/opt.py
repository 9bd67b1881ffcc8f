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

from typing import Dict, Iterable, Optional, Tuple

import torch
from torch import nn
from transformers import OPTConfig

from sglang.srt.distributed import get_tensor_model_parallel_world_size
from sglang.srt.layers.activation import get_act_fn
from sglang.srt.layers.linear import (
    ColumnParallelLinear,
    QKVParallelLinear,
    ReplicatedLinear,
    RowParallelLinear,
)
from sglang.srt.layers.logits_processor import LogitsProcessor, LogitsProcessorOutput
from sglang.srt.layers.quantization.base_config import QuantizationConfig
from sglang.srt.layers.radix_attention import RadixAttention
from sglang.srt.layers.vocab_parallel_embedding import (
    ParallelLMHead,
    VocabParallelEmbedding,
)
from sglang.srt.model_executor.forward_batch_info import ForwardBatch
from sglang.srt.model_loader.weight_utils import default_weight_loader
from sglang.srt.utils import add_prefix

# OPT reserves the first two rows of its learned position table: the token at
# position p uses row p + 2.
OPT_POSITION_OFFSET = 2

# Hugging Face keeps separate q/k/v projections; they are fused into qkv_proj.
_QKV_SHARDS = (("q_proj", "q"), ("k_proj", "k"), ("v_proj", "v"))


def opt_hf_to_sglang(
    name: str, tie_word_embeddings: bool = True
) -> Optional[Tuple[str, Optional[str]]]:
    """Map a Hugging Face OPT weight name to ``(param_name, shard_id)``.

    ``shard_id`` is "q", "k" or "v" for the fused ``qkv_proj`` and None
    otherwise. Returns None for a weight that must be skipped: ``lm_head``
    when it is tied to ``embed_tokens``. Names without the ``model.`` prefix
    (``decoder.*``), as found in some checkpoints, are accepted too.
    """
    if name.startswith("lm_head."):
        return None if tie_word_embeddings else (name, None)
    if name.startswith("decoder."):
        name = "model." + name
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
    def __init__(
        self,
        config: OPTConfig,
        quant_config: Optional[QuantizationConfig] = None,
        prefix: str = "",
    ) -> None:
        super().__init__()
        hidden_size, proj_dim = config.hidden_size, config.word_embed_proj_dim
        self.embed_tokens = VocabParallelEmbedding(
            config.vocab_size,
            proj_dim,
            quant_config=quant_config,
            prefix=add_prefix("embed_tokens", prefix),
        )
        self.embed_positions = OPTLearnedPositionalEmbedding(
            config.max_position_embeddings, hidden_size
        )
        # Models whose embedding width differs from the hidden size (opt-350m)
        # project in and out of the decoder stack. Quantized OPT checkpoints
        # keep these two small projections unquantized.
        if proj_dim != hidden_size:
            self.project_in = ReplicatedLinear(
                proj_dim,
                hidden_size,
                bias=False,
                prefix=add_prefix("project_in", prefix),
            )
            self.project_out = ReplicatedLinear(
                hidden_size,
                proj_dim,
                bias=False,
                prefix=add_prefix("project_out", prefix),
            )
        else:
            self.project_in = None
            self.project_out = None
        if _has_final_layer_norm(config):
            self.final_layer_norm = nn.LayerNorm(
                hidden_size, elementwise_affine=config.layer_norm_elementwise_affine
            )
        else:
            self.final_layer_norm = None
        self.layers = nn.ModuleList(
            [
                OPTDecoderLayer(
                    config, i, quant_config, prefix=add_prefix(f"layers.{i}", prefix)
                )
                for i in range(config.num_hidden_layers)
            ]
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        forward_batch: ForwardBatch,
        input_embeds: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        if input_embeds is None:
            input_embeds = self.embed_tokens(input_ids)
        if self.project_in is not None:
            input_embeds, _ = self.project_in(input_embeds)
        hidden_states = input_embeds + self.embed_positions(positions)
        for layer in self.layers:
            hidden_states = layer(hidden_states, forward_batch)
        if self.final_layer_norm is not None:
            hidden_states = self.final_layer_norm(hidden_states)
        if self.project_out is not None:
            hidden_states, _ = self.project_out(hidden_states)
        return hidden_states


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
    ) -> torch.Tensor:
        return self.decoder(input_ids, positions, forward_batch, input_embeds)


class OPTForCausalLM(nn.Module):
    def __init__(
        self,
        config: OPTConfig,
        quant_config: Optional[QuantizationConfig] = None,
        prefix: str = "",
    ) -> None:
        super().__init__()
        self.config = config
        self.quant_config = quant_config
        self.model = OPTModel(config, quant_config, prefix=add_prefix("model", prefix))
        if config.tie_word_embeddings:
            self.lm_head = self.model.decoder.embed_tokens
        else:
            self.lm_head = ParallelLMHead(
                config.vocab_size,
                config.word_embed_proj_dim,
                quant_config=quant_config,
                prefix=add_prefix("lm_head", prefix),
            )
        self.logits_processor = LogitsProcessor(config)

    @torch.no_grad()
    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        forward_batch: ForwardBatch,
        input_embeds: Optional[torch.Tensor] = None,
    ) -> LogitsProcessorOutput:
        hidden_states = self.model(input_ids, positions, forward_batch, input_embeds)
        return self.logits_processor(
            input_ids, hidden_states, self.lm_head, forward_batch
        )

    def load_weights(self, weights: Iterable[Tuple[str, torch.Tensor]]) -> None:
        params_dict = dict(self.named_parameters())
        for hf_name, loaded_weight in weights:
            mapped = opt_hf_to_sglang(hf_name, self.config.tie_word_embeddings)
            if mapped is None:
                continue
            name, shard_id = mapped
            if name not in params_dict:
                raise KeyError(f"Unexpected OPT weight {hf_name!r} (as {name!r})")
            param = params_dict[name]
            weight_loader = getattr(param, "weight_loader", default_weight_loader)
            if shard_id is None:
                weight_loader(param, loaded_weight)
            else:
                weight_loader(param, loaded_weight, shard_id)


EntryClass = OPTForCausalLM
