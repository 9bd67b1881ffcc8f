"""CPU stand-in package for `sglang.srt.model_loader` (see tests/standin_sglang)."""
