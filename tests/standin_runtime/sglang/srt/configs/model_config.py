"""CPU stand-in for ``sglang.srt.configs.model_config``.

v0.5.1's expert_location.py imports ModelConfig for its annotations and hands
it on to get_model_architecture; the tests never build one (it would read a
Hugging Face config from disk or the hub).
"""

from enum import Enum
from typing import Optional, Union


class ModelImpl(str, Enum):
    AUTO = "auto"
    SGLANG = "sglang"
    TRANSFORMERS = "transformers"


class ModelConfig:
    def __init__(
        self,
        model_path: str,
        trust_remote_code: bool = True,
        revision: Optional[str] = None,
        context_length: Optional[int] = None,
        model_override_args: str = "{}",
        is_embedding: Optional[bool] = None,
        enable_multimodal: Optional[bool] = None,
        dtype: str = "auto",
        quantization: Optional[str] = None,
        override_config_file: Optional[str] = None,
        is_draft_model: bool = False,
        hybrid_kvcache_ratio: Optional[float] = None,
        model_impl: Union[str, ModelImpl] = ModelImpl.AUTO,
    ) -> None:
        raise NotImplementedError(
            "CPU stand-in: ModelConfig is not built in these tests"
        )
