"""CPU stand-in package for `sglang.srt.layers` (see tests/standin_sglang)."""
