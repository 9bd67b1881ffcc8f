"""CPU stand-in for `sglang.srt.layers.logits_processor`.

Like v0.5.1 without input logprobs: extend batches yield the logits of each
sequence's last token, decode batches the logits of every token, cut to
``config.vocab_size`` (the lm_head weight is padded) and cast to float32.
"""

import dataclasses
from typing import List, Optional

import torch
from torch import nn

from sglang.srt.layers.vocab_parallel_embedding import VocabParallelEmbedding
from sglang.srt.model_executor.forward_batch_info import ForwardBatch


@dataclasses.dataclass
class LogitsProcessorOutput:
    next_token_logits: torch.Tensor
    hidden_states: Optional[torch.Tensor] = None
    next_token_logprobs: Optional[torch.Tensor] = None
    next_token_top_logprobs_val: Optional[List] = None
    next_token_top_logprobs_idx: Optional[List] = None
    next_token_token_ids_logprobs_val: Optional[List] = None
    next_token_token_ids_logprobs_idx: Optional[List] = None
    input_token_logprobs: Optional[torch.Tensor] = None
    input_top_logprobs_val: List = None
    input_top_logprobs_idx: List = None
    input_token_ids_logprobs_val: Optional[List] = None
    input_token_ids_logprobs_idx: Optional[List] = None


class LogitsProcessor(nn.Module):
    def __init__(
        self, config, skip_all_gather: bool = False, logit_scale: Optional[float] = None
    ):
        super().__init__()
        self.config = config
        self.logit_scale = logit_scale

    def forward(
        self,
        input_ids,
        hidden_states,
        lm_head: VocabParallelEmbedding,
        logits_metadata: ForwardBatch,
        aux_hidden_states: Optional[torch.Tensor] = None,
    ) -> LogitsProcessorOutput:
        mode = logits_metadata.forward_mode
        if mode.is_decode_or_idle() or mode.is_target_verify():
            pruned_states = hidden_states
        elif mode.is_extend() and not logits_metadata.return_logprob:
            last_index = torch.cumsum(logits_metadata.extend_seq_lens, dim=0) - 1
            pruned_states = hidden_states[last_index]
        else:
            raise NotImplementedError("input logprobs are not in the CPU stand-in")
        logits = torch.matmul(pruned_states.to(lm_head.weight.dtype), lm_head.weight.T)
        if self.logit_scale is not None:
            logits.mul_(self.logit_scale)
        logits = logits[:, : self.config.vocab_size].float()
        return LogitsProcessorOutput(next_token_logits=logits)
