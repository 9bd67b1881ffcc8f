"""CPU stand-in for ``sglang.srt.distributed.device_communicators.xpu_communicator``."""

from torch.distributed import ProcessGroup


class XpuCommunicator:
    def __init__(self, group: ProcessGroup):
        raise RuntimeError(
            "CPU stand-in: XpuCommunicator is never built for world size 1"
        )
