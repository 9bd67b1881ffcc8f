"""CPU stand-in for ``sglang.srt.model_loader`` (only ``get_model_architecture``).

Upstream re-exports it from ``sglang.srt.model_loader.utils``. expert_location.py
calls it to look up a model class in SGLang's registry, which the tests do
not need (they build ExpertLocationMetadata from explicit maps).
"""

from typing import Tuple, Type

from sglang.srt.configs.model_config import ModelConfig
from torch import nn


def get_model_architecture(model_config: ModelConfig) -> Tuple[Type[nn.Module], str]:
    raise NotImplementedError("CPU stand-in: the model registry is not available")
