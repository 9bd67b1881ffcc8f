"""CPU stand-in package for `sglang.srt.layers.quantization` (see tests/standin_sglang)."""
