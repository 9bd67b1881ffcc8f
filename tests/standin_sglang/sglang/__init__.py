"""CPU stand-in package for `sglang` (see tests/standin_sglang)."""
