"""A custom MLA model: DeepSeek-V2's architecture registered under a new name.

The pattern of SGLang's "support new models" guide: subclass an existing
SGLang model and export the subclass with ``EntryClass``. The registry keys
models by class name, so a checkpoint whose config.json says
``"architectures": ["MyMLAForCausalLM"]`` now loads this class. ModelConfig
must also know the name is MLA (the overlay's `register-my-mla` edit).
"""

from sglang.srt.models.deepseek_v2 import DeepseekV2ForCausalLM


class MyMLAForCausalLM(DeepseekV2ForCausalLM):
    pass


EntryClass = MyMLAForCausalLM
