"""CPU stand-in for ``sglang.srt.distributed.device_communicators.custom_all_reduce``.

CustomAllreduce needs CUDA IPC; parallel_state.py only builds one for a group
of more than one rank, so constructing it here is a test failure.
"""

from typing import Union

import torch
from torch.distributed import ProcessGroup


class CustomAllreduce:
    _MAX_CAR_SIZE = 8192 * 1024

    def __init__(
        self,
        group: ProcessGroup,
        device: Union[int, str, torch.device],
        max_size=_MAX_CAR_SIZE,
    ) -> None:
        raise RuntimeError(
            "CPU stand-in: CustomAllreduce is never built for world size 1"
        )
