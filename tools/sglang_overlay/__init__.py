"""sglang-overlay: keep your changes to SGLang outside a fork."""

__version__ = "0.1.0"
