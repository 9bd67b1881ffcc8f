"""CPU stand-in for ``sglang.srt.distributed.device_communicators.symm_mem``.

Only v0.5.3's parallel_state.py imports it (SGLang v0.5.1 has no such module).
"""

from typing import Union

import torch
from torch.distributed import ProcessGroup


class SymmMemCommunicator:
    def __init__(self, group: ProcessGroup, device: Union[int, str, torch.device]):
        raise RuntimeError(
            "CPU stand-in: SymmMemCommunicator is never built for world size 1"
        )
