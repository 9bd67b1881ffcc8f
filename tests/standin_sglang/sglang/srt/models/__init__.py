"""CPU stand-in package for `sglang.srt.models` (see tests/standin_sglang)."""
