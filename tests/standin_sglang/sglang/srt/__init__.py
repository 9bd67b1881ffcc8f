"""CPU stand-in package for `sglang.srt` (see tests/standin_sglang)."""
