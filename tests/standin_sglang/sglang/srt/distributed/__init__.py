"""CPU stand-in for `sglang.srt.distributed`: one tensor-parallel rank, and a
pipeline-parallel group that a test may set to any rank of any size.

There is no ``torch.distributed`` here: the stand-in ``GroupCoordinator``
takes ``local_rank`` as the caller's rank. ``get_pp_group()`` returns the
module's ``_PP``, a group of one rank unless a test replaces it (as v0.5.1's
``initialize_model_parallel`` sets ``_PP``).
"""

import os
from typing import List, Optional, Tuple, Union


def get_tensor_model_parallel_world_size():
    return 1


def get_tensor_model_parallel_rank():
    return 0


def divide(numerator, denominator):
    assert (
        numerator % denominator == 0
    ), f"{numerator} is not divisible by {denominator}"
    return numerator // denominator


def get_pp_indices(
    num_hidden_layers: int, pp_rank: int, pp_size: int
) -> Tuple[int, int]:
    """Layers [start, end) of one pipeline stage: an even split, the last
    stage taking the remainder, or SGLANG_PP_LAYER_PARTITION's sizes."""
    sizes = os.getenv("SGLANG_PP_LAYER_PARTITION")
    if sizes is not None:
        counts = [int(n) for n in sizes.split(",")]
        if len(counts) != pp_size or sum(counts) != num_hidden_layers:
            raise ValueError(f"bad SGLANG_PP_LAYER_PARTITION {sizes!r}")
        start = sum(counts[:pp_rank])
        return start, start + counts[pp_rank]
    per_stage = num_hidden_layers // pp_size
    start = pp_rank * per_stage
    end = num_hidden_layers if pp_rank == pp_size - 1 else start + per_stage
    return start, end


class GroupCoordinator:
    def __init__(
        self,
        group_ranks: List[List[int]],
        local_rank: int,
        torch_distributed_backend: Union[str, object],
        use_pynccl: bool,
        use_pymscclpp: bool,
        use_custom_allreduce: bool,
        use_hpu_communicator: bool,
        use_xpu_communicator: bool,
        use_npu_communicator: bool,
        use_message_queue_broadcaster: bool = False,
        group_name: Optional[str] = None,
    ):
        self.unique_name = group_name or "anonymous"
        self.rank = local_rank  # one process: the caller's rank is given
        self.local_rank = local_rank
        (self.ranks,) = [ranks for ranks in group_ranks if self.rank in ranks]
        self.world_size = len(self.ranks)
        self.rank_in_group = self.ranks.index(self.rank)

    @property
    def first_rank(self):
        return self.ranks[0]

    @property
    def last_rank(self):
        return self.ranks[-1]

    @property
    def is_first_rank(self):
        return self.rank == self.first_rank

    @property
    def is_last_rank(self):
        return self.rank == self.last_rank


def _single_rank_group(rank: int = 0, size: int = 1) -> GroupCoordinator:
    return GroupCoordinator(
        group_ranks=[list(range(size))],
        local_rank=rank,
        torch_distributed_backend="gloo",
        use_pynccl=False,
        use_pymscclpp=False,
        use_custom_allreduce=False,
        use_hpu_communicator=False,
        use_xpu_communicator=False,
        use_npu_communicator=False,
        group_name="pp",
    )


_PP: Optional[GroupCoordinator] = _single_rank_group()


def get_pp_group() -> GroupCoordinator:
    assert _PP is not None, "pipeline model parallel group is not initialized"
    return _PP
