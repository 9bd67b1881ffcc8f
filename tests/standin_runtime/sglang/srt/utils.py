"""CPU stand-in for the parts of ``sglang.srt.utils`` that parallel_state.py imports.

Same names and signatures as SGLang v0.5.1 (``is_cpu`` is also imported by
v0.5.3's parallel_state.py; its signature is the same in both releases).
Platform probes answer for this CPU-only torch build.
"""

import logging
import os
import platform
from typing import Callable, Dict, List, Optional

import torch
from torch.library import Library

logger = logging.getLogger(__name__)

_BOOL_TRUE = ("true", "1")
_BOOL_FALSE = ("false", "0")

# Custom ops that parallel_state.py asked to register: name -> registration.
# Upstream registers them into the "sglang" torch library with the CUDA
# dispatch key; on the CPU nothing dispatches to them, and registering them
# for real would pin them into torch's global registry for the whole test
# process (and refuse a second load of parallel_state.py).
REGISTERED_OPS: Dict[str, dict] = {}


def is_hip() -> bool:
    return getattr(torch.version, "hip", None) is not None


def is_cuda():
    return torch.cuda.is_available() and torch.version.cuda


def is_cuda_alike():
    return bool(is_cuda()) or is_hip()


def is_npu() -> bool:
    npu = getattr(torch, "npu", None)
    return npu is not None and npu.is_available()


def is_cpu() -> bool:
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    return os.getenv("SGLANG_USE_CPU_ENGINE", "0") == "1" and x86


def get_bool_env_var(name: str, default: str = "false") -> bool:
    value = os.getenv(name, default).lower()
    if value not in _BOOL_TRUE and value not in _BOOL_FALSE:
        logger.warning(
            "get_bool_env_var(%s): %r is not a boolean, read as false", name, value
        )
    return value in _BOOL_TRUE


def get_int_env_var(name: str, default: int = 0) -> int:
    value = os.getenv(name)
    if value is None or not value.strip():
        return default
    try:
        return int(value)
    except ValueError:
        return default


def supports_custom_op() -> bool:
    return hasattr(torch.library, "custom_op")


def direct_register_custom_op(
    op_name: str,
    op_func: Callable,
    mutates_args: List[str],
    fake_impl: Optional[Callable] = None,
    target_lib: Optional[Library] = None,
):
    if op_name in REGISTERED_OPS:
        raise RuntimeError(f"custom op {op_name!r} registered twice")
    if not callable(op_func) or (fake_impl is not None and not callable(fake_impl)):
        raise TypeError(f"custom op {op_name!r}: op_func/fake_impl must be callable")
    REGISTERED_OPS[op_name] = dict(
        op_func=op_func, mutates_args=list(mutates_args), fake_impl=fake_impl
    )


def is_shm_available(dtype, world_size, local_size):
    # The shared-memory all-reduce needs sgl-kernel's AMX CPU ops, which are
    # not installed here; upstream answers False without them too.
    return False
