"""CPU stand-in for `sglang.srt.layers.pooler` (embedding pooling).

v0.5.1 pools the last (or first) token of each sequence of an extend batch
and L2-normalises it when asked to.
"""

from dataclasses import dataclass
from enum import IntEnum

import torch
import torch.nn as nn

from sglang.srt.model_executor.forward_batch_info import ForwardBatch


class PoolingType(IntEnum):
    LAST = 0
    CLS = 1


@dataclass
class EmbeddingPoolerOutput:
    embeddings: torch.Tensor


class Pooler(nn.Module):
    def __init__(self, pooling_type: PoolingType, normalize: bool):
        super().__init__()
        self.pooling_type = pooling_type
        self.normalize = normalize

    def forward(
        self, hidden_states: torch.Tensor, forward_batch: ForwardBatch
    ) -> EmbeddingPoolerOutput:
        ends = torch.cumsum(forward_batch.extend_seq_lens, dim=0)
        if self.pooling_type == PoolingType.LAST:
            index = ends - 1
        elif self.pooling_type == PoolingType.CLS:
            index = ends - forward_batch.extend_seq_lens
        else:
            raise ValueError(f"Invalid pooling type: {self.pooling_type}")
        pooled = hidden_states[index]
        if self.normalize:
            pooled = nn.functional.normalize(pooled, p=2, dim=1)
        return EmbeddingPoolerOutput(embeddings=pooled)
