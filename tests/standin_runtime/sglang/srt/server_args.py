"""CPU stand-in for ``sglang.srt.server_args``: the ServerArgs fields expert_location.py reads.

Field names, types and defaults are v0.5.1's; the many other fields are left out.
"""

import dataclasses
from typing import Literal, Optional


@dataclasses.dataclass
class ServerArgs:
    model_path: str
    device: Optional[str] = None
    nnodes: int = 1
    ep_size: int = 1
    ep_num_redundant_experts: int = 0
    ep_dispatch_algorithm: Optional[Literal["static", "dynamic", "fake"]] = None
    init_expert_location: str = "trivial"
    eplb_algorithm: str = "auto"
