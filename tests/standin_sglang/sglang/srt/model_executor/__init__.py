"""CPU stand-in package for `sglang.srt.model_executor` (see tests/standin_sglang)."""
