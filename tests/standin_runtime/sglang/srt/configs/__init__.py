"""CPU stand-in for ``sglang.srt.configs`` (only model_config is provided)."""
