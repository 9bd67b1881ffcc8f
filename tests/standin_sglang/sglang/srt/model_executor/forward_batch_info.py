"""CPU stand-in for `sglang.srt.model_executor.forward_batch_info`.

`ForwardBatch` has exactly v0.5.1's dataclass fields (names, order and
defaults); the CPU tests fill in the ones the stand-in attention backend and
logits processor read. `PPProxyTensors` carries tensors between pipeline
stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, auto
from typing import Any, Dict, List, Optional, Tuple, Union

import torch


class ForwardMode(IntEnum):
    EXTEND = auto()
    DECODE = auto()
    MIXED = auto()
    IDLE = auto()
    TARGET_VERIFY = auto()
    DRAFT_EXTEND = auto()
    DUMMY_FIRST = auto()
    SPLIT_PREFILL = auto()

    def is_extend(self):
        return self in (
            ForwardMode.EXTEND,
            ForwardMode.MIXED,
            ForwardMode.DRAFT_EXTEND,
            ForwardMode.TARGET_VERIFY,
        )

    def is_decode(self):
        return self == ForwardMode.DECODE

    def is_idle(self):
        return self == ForwardMode.IDLE

    def is_decode_or_idle(self):
        return self == ForwardMode.DECODE or self == ForwardMode.IDLE

    def is_target_verify(self):
        return self == ForwardMode.TARGET_VERIFY


@dataclass
class ForwardBatch:
    """Store all inputs of a forward pass."""

    forward_mode: ForwardMode
    batch_size: int
    input_ids: torch.Tensor
    req_pool_indices: torch.Tensor
    seq_lens: torch.Tensor
    out_cache_loc: torch.Tensor
    seq_lens_sum: int
    orig_seq_lens: Optional[torch.Tensor] = None
    seq_lens_cpu: Optional[torch.Tensor] = None
    return_logprob: bool = False
    top_logprobs_nums: Optional[List[int]] = None
    token_ids_logprobs: Optional[List[List[int]]] = None
    next_token_logits_buffer: torch.Tensor = None
    temp_scaled_logprobs: bool = False
    temperature: torch.Tensor = None
    top_p_normalized_logprobs: bool = False
    top_p: torch.Tensor = None
    positions: torch.Tensor = None
    extend_num_tokens: Optional[int] = None
    extend_seq_lens: Optional[torch.Tensor] = None
    extend_prefix_lens: Optional[torch.Tensor] = None
    extend_start_loc: Optional[torch.Tensor] = None
    extend_prefix_lens_cpu: Optional[List[int]] = None
    extend_seq_lens_cpu: Optional[List[int]] = None
    extend_logprob_start_lens_cpu: Optional[List[int]] = None
    extend_input_logprob_token_ids_gpu: Optional[torch.Tensor] = None
    hidden_states: torch.Tensor = None
    residual: torch.Tensor = None
    model_specific_states: Dict[str, Any] = None
    split_index: int = 0
    attn_attend_prefix_cache: Optional[bool] = None
    num_prefix_chunks: Optional[int] = None
    prefix_chunk_idx: Optional[int] = None
    prefix_chunk_len: Optional[int] = None
    prefix_chunk_starts: Optional[torch.Tensor] = None
    prefix_chunk_seq_lens: Optional[torch.Tensor] = None
    prefix_chunk_cu_seq_lens: Optional[torch.Tensor] = None
    prefix_chunk_max_seq_lens: Optional[List[int]] = None
    prefix_chunk_num_tokens: Optional[List[int]] = None
    prefix_chunk_kv_indices: Optional[List[torch.Tensor]] = None
    mha_return_lse: Optional[bool] = None
    mm_inputs: Optional[List[Any]] = None
    encoder_cached: Optional[List[bool]] = None
    encoder_lens: Optional[torch.Tensor] = None
    encoder_lens_cpu: Optional[List[int]] = None
    encoder_out_cache_loc: Optional[torch.Tensor] = None
    lora_ids: Optional[List[str]] = None
    input_embeds: Optional[torch.Tensor] = None
    token_type_ids: Optional[torch.Tensor] = None
    sampling_info: Any = None
    req_to_token_pool: Any = None
    token_to_kv_pool: Any = None
    attn_backend: Any = None
    global_num_tokens_cpu: Optional[List[int]] = None
    global_num_tokens_gpu: Optional[torch.Tensor] = None
    global_num_tokens_for_logprob_cpu: Optional[List[int]] = None
    global_num_tokens_for_logprob_gpu: Optional[torch.Tensor] = None
    dp_padding_mode: Optional[Any] = None
    dp_local_start_pos: Optional[torch.Tensor] = None
    dp_local_num_tokens: Optional[torch.Tensor] = None
    global_dp_buffer_len: Optional[int] = None
    is_extend_in_batch: bool = False
    can_run_dp_cuda_graph: bool = False
    global_forward_mode: Optional[ForwardMode] = None
    spec_info: Any = None
    spec_algorithm: Any = None
    capture_hidden_mode: Any = None
    padded_static_len: int = -1
    num_token_non_padded: Optional[torch.Tensor] = None
    mrope_positions: torch.Tensor = None
    tbo_split_seq_index: Optional[int] = None
    tbo_parent_token_range: Optional[Tuple[int, int]] = None
    tbo_children: Optional[List[ForwardBatch]] = None


class PPProxyTensors:
    """The tensors one pipeline stage hands to the next, by name."""

    tensors: Dict[str, torch.Tensor]

    def __init__(self, tensors):
        self.tensors = tensors

    def __getitem__(self, key: Union[str, slice]):
        if isinstance(key, slice):
            return self.__class__({k: v[key] for k, v in self.tensors.items()})
        return self.tensors[key]

    def __setitem__(self, key: str, value: torch.Tensor):
        self.tensors[key] = value

    def __len__(self):
        return len(self.tensors)

    def __repr__(self) -> str:
        return f"PPProxyTensors(tensors={self.tensors})"
