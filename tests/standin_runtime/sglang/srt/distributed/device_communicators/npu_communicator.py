"""CPU stand-in for ``sglang.srt.distributed.device_communicators.npu_communicator``."""

from torch.distributed import ProcessGroup


class NpuCommunicator:
    def __init__(self, group: ProcessGroup):
        raise RuntimeError(
            "CPU stand-in: NpuCommunicator is never built for world size 1"
        )
