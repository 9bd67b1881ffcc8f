"""CPU stand-in for `sglang.srt.layers.activation` (no scaled activations)."""

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from sglang.srt.layers.quantization.base_config import QuantizationConfig


class NewGELU(nn.Module):
    def forward_native(self, x: torch.Tensor) -> torch.Tensor:
        c = math.sqrt(2.0 / math.pi)
        return 0.5 * x * (1.0 + torch.tanh(c * (x + 0.044715 * torch.pow(x, 3.0))))

    forward = forward_native


class ReLU2(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        return x * x


# Same names as v0.5.1's registry, which has no plain "relu".
_ACTIVATION_REGISTRY = {
    "gelu": nn.GELU(),
    "gelu_pytorch_tanh": nn.GELU(approximate="tanh"),
    "gelu_new": NewGELU(),
    "relu2": ReLU2(),
}


def get_act_fn(
    act_fn_name: str,
    quant_config: Optional[QuantizationConfig] = None,
    intermediate_size: Optional[int] = None,
    input_is_parallel: bool = True,
    params_dtype: Optional[torch.dtype] = None,
) -> nn.Module:
    act_fn_name = act_fn_name.lower()
    if act_fn_name not in _ACTIVATION_REGISTRY:
        raise ValueError(f"Activation function {act_fn_name!r} is not supported.")
    if quant_config is not None and act_fn_name in quant_config.get_scaled_act_names():
        raise NotImplementedError("the CPU stand-in has no scaled activations")
    return _ACTIVATION_REGISTRY[act_fn_name]
