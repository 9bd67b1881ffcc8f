"""CPU stand-in for ``sglang.srt.eplb`` (empty, as upstream)."""
