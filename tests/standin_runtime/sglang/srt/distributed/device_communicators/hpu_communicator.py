"""CPU stand-in for ``sglang.srt.distributed.device_communicators.hpu_communicator``."""

from torch.distributed import ProcessGroup


class HpuCommunicator:
    def __init__(self, group: ProcessGroup):
        raise RuntimeError(
            "CPU stand-in: HpuCommunicator is never built for world size 1"
        )
