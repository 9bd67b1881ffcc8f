"""CPU stand-in for the parts of `sglang.srt.utils` used by model files."""

from typing import Any, Callable, Dict, Optional

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


def make_layers(
    num_hidden_layers: int,
    layer_fn: Callable[..., torch.nn.Module],
    pp_rank: Optional[int] = None,
    pp_size: Optional[int] = None,
    prefix: str = "",
    return_tuple: bool = False,
    offloader_kwargs: Dict[str, Any] = {},
):
    """This stage's layers built by ``layer_fn(idx=, prefix=)``, the others
    PPMissingLayer; with pp_rank and pp_size also (layers, start, end).
    (No offloading: ``offloader_kwargs`` is accepted and unused.)"""
    from sglang.srt.distributed import get_pp_indices
    from sglang.srt.layers.utils import PPMissingLayer

    assert not pp_size or num_hidden_layers >= pp_size
    staged = pp_rank is not None and pp_size is not None
    start, end = (
        get_pp_indices(num_hidden_layers, pp_rank, pp_size)
        if staged
        else (0, num_hidden_layers)
    )
    modules = torch.nn.ModuleList(
        (
            layer_fn(idx=i, prefix=add_prefix(i, prefix))
            if start <= i < end
            else PPMissingLayer(return_tuple=return_tuple)
        )
        for i in range(num_hidden_layers)
    )
    return (modules, start, end) if staged else modules
