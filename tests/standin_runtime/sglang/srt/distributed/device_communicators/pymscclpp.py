"""CPU stand-in for ``sglang.srt.distributed.device_communicators.pymscclpp``."""

from typing import Union

import torch
from torch.distributed import ProcessGroup


class PyMscclppCommunicator:
    _MAX_BYTES = 1 << 20

    def __init__(
        self,
        group: ProcessGroup,
        device: Union[int, str, torch.device],
        max_bytes=_MAX_BYTES,
    ) -> None:
        raise RuntimeError(
            "CPU stand-in: PyMscclppCommunicator is never built for world size 1"
        )
