"""CPU stand-in for `sglang.srt.layers.utils`."""

import re

import torch


def get_layer_id(weight_name):
    found = re.search(r"layers\.(\d+)\.", weight_name)
    return int(found.group(1)) if found else None


class PPMissingLayer(torch.nn.Identity):
    """Holds the place of a layer that another pipeline stage owns."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.return_tuple = kwargs.get("return_tuple", False)

    def forward(self, *args, **kwargs):
        first = args[0] if args else next(iter(kwargs.values()))
        return (first,) if self.return_tuple else first
