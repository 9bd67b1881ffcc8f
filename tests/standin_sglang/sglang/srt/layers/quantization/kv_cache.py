"""CPU stand-in for `sglang.srt.layers.quantization.kv_cache`.

The method a quantization config gives RadixAttention when the KV cache is
FP8: per-tensor ``k_scale`` / ``v_scale`` parameters, -1.0 (invalid) until a
checkpoint provides them, resolved after loading as in v0.5.1 (both missing:
1.0; only a deprecated ``kv_scale``, loaded as k_scale: used for both).
"""

import torch

from sglang.srt.layers.quantization.base_config import (
    QuantizationConfig,
    QuantizeMethodBase,
)


class BaseKVCacheMethod(QuantizeMethodBase):
    def __init__(self, quant_config: QuantizationConfig):
        self.quant_config = quant_config

    def create_weights(self, layer: torch.nn.Module):
        for name in ("k_scale", "v_scale"):
            setattr(
                layer,
                name,
                torch.nn.Parameter(
                    torch.tensor(-1.0, dtype=torch.float32), requires_grad=False
                ),
            )

    def apply(self, layer: torch.nn.Module) -> torch.Tensor:
        raise RuntimeError(f"{self.__class__.__name__}.apply should not be called.")

    def process_weights_after_loading(self, layer) -> None:
        k, v = layer.k_scale.item(), layer.v_scale.item()
        if k < 0.0 and v < 0.0:
            k = v = 1.0
        elif k < 0.0 or v < 0.0:
            k = v = max(k, v)
        layer.k_scale.fill_(k)
        layer.v_scale.fill_(v)
        layer.k_scale_float = k
        layer.v_scale_float = v
