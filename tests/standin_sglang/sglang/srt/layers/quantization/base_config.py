"""CPU stand-in for `sglang.srt.layers.quantization.base_config`.

The CPU tests run unquantized, so only the type itself is needed.
"""

from abc import ABC, abstractmethod
from typing import Dict, List, Optional

import torch


class QuantizeMethodBase(ABC):
    """Base class for the quantization method of a layer."""


class QuantizationConfig(ABC):
    """Base class for quantization configs."""

    def __init__(self):
        super().__init__()
        self.packed_modules_mapping: Dict[str, List[str]] = dict()

    @abstractmethod
    def get_quant_method(
        self, layer: torch.nn.Module, prefix: str
    ) -> Optional[QuantizeMethodBase]:
        raise NotImplementedError()
