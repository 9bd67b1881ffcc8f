"""CPU stand-in for `sglang.srt.model_loader.weight_utils`."""

import json
import logging
from typing import Iterable, Optional, Tuple

import torch

logger = logging.getLogger(__name__)


def default_weight_loader(param: torch.Tensor, loaded_weight: torch.Tensor) -> None:
    if param.numel() == 1 and loaded_weight.numel() == 1:
        param.data.fill_(loaded_weight.item())
    else:
        assert param.size() == loaded_weight.size(), (
            f"Attempted to load weight ({loaded_weight.size()}) "
            f"into parameter ({param.size()})"
        )
        param.data.copy_(loaded_weight)


# Checkpoint suffix -> RadixAttention parameter suffix, as v0.5.1 remaps them.
_QUARK_SCALES = {
    ".q_proj.output_scale": ".attn.q_scale",
    ".k_proj.output_scale": ".attn.k_scale",
    ".v_proj.output_scale": ".attn.v_scale",
    "self_attn.prob_output_scale": ".attn.prob_scale",
}


def maybe_remap_kv_scale_name(name: str, params_dict: dict) -> Optional[str]:
    """The model's name for an FP8 KV-cache scale of a checkpoint, None when
    the model has no such parameter, or ``name`` itself when it is none."""
    if name.endswith(".kv_scale"):  # deprecated: one scale, loaded as k_scale
        target = name.replace(".kv_scale", ".attn.k_scale")
        return target if target in params_dict else None
    for kv in ("k", "v"):
        suffix = f".{kv}_scale"
        if not name.endswith(suffix):
            continue
        modelopt = f".self_attn.{kv}_proj{suffix}"
        if modelopt in name:
            target = name.replace(modelopt, f".self_attn.attn{suffix}")
        else:
            target = name.replace(suffix, f".attn{suffix}")
        if target not in params_dict:
            logger.warning("%s is not loaded: the model has no %s", name, target)
            return None
        return target
    for suffix, target in _QUARK_SCALES.items():
        if name.endswith(suffix):
            return name.replace(suffix, target)
    return name


def kv_cache_scales_loader(
    filename: str,
    tp_rank: int,
    tp_size: int,
    num_hidden_layers: int,
    model_type: Optional[str],
) -> Iterable[Tuple[int, float]]:
    """(layer, scale) pairs of ``tp_rank`` from a JSON file shaped like
    ``{"model_type": ..., "kv_cache": {"dtype": ..., "scaling_factor":
    {tp_rank: {layer: scale}}}}``; nothing (scales stay 1.0) if unreadable."""
    try:
        with open(filename) as f:
            schema = json.load(f)
        if model_type is not None and schema["model_type"] != model_type:
            raise ValueError(f"scales of a {schema['model_type']} model")
        per_rank = schema["kv_cache"]["scaling_factor"]
        if len(per_rank) != tp_size:
            raise ValueError(f"scales for {len(per_rank)} TP ranks, not {tp_size}")
        scales = {int(k): float(v) for k, v in per_rank[str(tp_rank)].items()}
        if sorted(scales) != list(range(num_hidden_layers)):
            raise ValueError(f"scales for layers {sorted(scales)}")
        return scales.items()
    except (OSError, ValueError, KeyError, TypeError) as err:
        logger.error("Cannot read KV cache scales from %s: %s", filename, err)
    logger.warning("Defaulting to KV cache scaling factors = 1.0 (rank %d)", tp_rank)
    return []
