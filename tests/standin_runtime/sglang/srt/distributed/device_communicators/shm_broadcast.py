"""CPU stand-in for ``sglang.srt.distributed.device_communicators.shm_broadcast``.

parallel_state.py asks for a MessageQueue broadcaster on the TP group, but
only builds it when the group has more than one rank.
"""

from typing import List, Optional

from torch.distributed import ProcessGroup


class MessageQueue:
    def __init__(
        self,
        n_reader,
        n_local_reader,
        local_reader_ranks: Optional[List[int]] = None,
        max_chunk_bytes: int = 1024 * 1024 * 10,
        max_chunks: int = 10,
        connect_ip: Optional[str] = None,
    ):
        raise RuntimeError("CPU stand-in: MessageQueue is never built for world size 1")

    @staticmethod
    def create_from_process_group(
        pg: ProcessGroup, max_chunk_bytes, max_chunks, writer_rank=0
    ) -> "MessageQueue":
        raise RuntimeError("CPU stand-in: MessageQueue is never built for world size 1")
