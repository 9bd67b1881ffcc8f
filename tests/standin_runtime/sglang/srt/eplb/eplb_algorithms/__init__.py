"""CPU stand-in for ``sglang.srt.eplb.eplb_algorithms``.

expert_location.py imports this module; only its EPLB rebalancing path
(``ExpertLocationMetadata.init_by_eplb``) calls into it, and the tests do not
take that path, so the functions refuse to run.
"""

from enum import Enum, auto
from typing import Optional

import torch


class EplbAlgorithm(Enum):
    deepseek = auto()
    deepseek_hierarchical = auto()
    deepseek_vec = auto()
    deepseek_vec_hierarchical = auto()


def rebalance_experts(
    tokens_per_expert: torch.Tensor,
    num_physical_experts: int,
    num_local_physical_experts: int,
    num_groups: Optional[int],
    num_nodes: int,
    algorithm: EplbAlgorithm,
):
    raise NotImplementedError("CPU stand-in: EPLB rebalancing is not exercised")


def compute_algorithm(
    raw_algorithm: str,
    num_groups: Optional[int],
    num_nodes: int,
) -> EplbAlgorithm:
    raise NotImplementedError("CPU stand-in: EPLB rebalancing is not exercised")
