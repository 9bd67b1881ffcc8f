"""CPU stand-in for the parts of `sglang.srt.utils` used by model files."""

from typing import Any, Dict, Optional

import torch


def add_prefix(name: str, prefix: str) -> str:
    return name if not prefix else f"{prefix}.{name}"


def set_weight_attrs(
    weight: torch.Tensor,
    weight_attrs: Optional[Dict[str, Any]],
):
    if weight_attrs is None:
        return
    for key, value in weight_attrs.items():
        assert not hasattr(weight, key), f"Overwriting existing tensor attribute: {key}"
        setattr(weight, key, value)
