"""CPU stand-in for the top-level ``sglang`` package (empty)."""
