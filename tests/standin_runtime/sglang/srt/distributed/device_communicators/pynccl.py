"""CPU stand-in for ``sglang.srt.distributed.device_communicators.pynccl``.

PyNcclCommunicator needs libnccl; parallel_state.py only builds one for a
group of more than one rank, so constructing it here is a test failure.
"""

from typing import Optional, Union

import torch
from torch.distributed import ProcessGroup

# Upstream's alternative group type (sglang.srt.distributed.utils); only named
# in the annotation below.
StatelessProcessGroup = ProcessGroup


class PyNcclCommunicator:
    def __init__(
        self,
        group: Union[ProcessGroup, StatelessProcessGroup],
        device: Union[int, str, torch.device],
        library_path: Optional[str] = None,
    ):
        raise RuntimeError(
            "CPU stand-in: PyNcclCommunicator is never built for world size 1"
        )
