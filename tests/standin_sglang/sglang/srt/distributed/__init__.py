"""CPU stand-in for `sglang.srt.distributed`: a single tensor-parallel rank."""


def get_tensor_model_parallel_world_size():
    return 1


def get_tensor_model_parallel_rank():
    return 0


def divide(numerator, denominator):
    assert (
        numerator % denominator == 0
    ), f"{numerator} is not divisible by {denominator}"
    return numerator // denominator
