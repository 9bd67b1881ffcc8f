"""A custom multimodal model: Qwen2.5-VL registered under a new name.

It inherits Qwen2.5-VL's multimodal hooks (pad_input_ids,
get_image_feature), so SGLang must treat it as multimodal: the overlay's
`register-my-vl` edit adds it to multimodal_model_archs.
"""

from sglang.srt.models.qwen2_5_vl import Qwen2_5_VLForConditionalGeneration


class MyVLForConditionalGeneration(Qwen2_5_VLForConditionalGeneration):
    pass


EntryClass = MyVLForConditionalGeneration
