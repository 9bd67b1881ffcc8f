"""CPU stand-ins for the SGLang modules that parallel_state.py and expert_location.py import.

The overlay's runtime patches change two real upstream files,
``python/sglang/srt/distributed/parallel_state.py`` and
``python/sglang/srt/eplb/expert_location.py``. The tests import those real
files (as the overlay tool writes them) on the CPU. Real SGLang cannot be
imported here, so every ``sglang.*`` module those two files import is served
from the tree under ``standin_runtime/sglang/``, which mirrors the real
package layout (``sglang/srt/utils.py`` stands in for ``sglang.srt.utils``).
Functions and classes keep SGLang v0.5.1's signatures (test_reuse_patches.py
checks them against the real sources); the device communicators refuse to be
constructed, because with a world size of 1 parallel_state.py never builds one.

Usage::

    with install():
        ps = load_real_module("sglang.srt.distributed.parallel_state", path)

While installed, ``sglang`` imports resolve only to stand-ins (or fail with
ModuleNotFoundError): a real SGLang, even if installed, is never imported.
On exit every ``sglang`` module is dropped from ``sys.modules`` and whatever
was there before is put back, so nothing leaks into other tests.
"""

import sys
from pathlib import Path
from typing import List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, for standin_common
import standin_common  # noqa: E402

STANDIN_ROOT = Path(__file__).resolve().parent
_TOP_LEVEL = standin_common.TOP_LEVEL
_is_sglang = standin_common.is_sglang


def install():
    """Make ``sglang.*`` imports resolve to the stand-ins inside the block."""
    return standin_common.installed(STANDIN_ROOT)


def standin_files() -> List[Path]:
    """Every stand-in source file under ``STANDIN_ROOT/sglang``."""
    return sorted(STANDIN_ROOT.joinpath(_TOP_LEVEL).rglob("*.py"))


load_real_module = standin_common.load_file
