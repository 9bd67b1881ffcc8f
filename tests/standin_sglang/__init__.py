"""CPU stand-ins for the SGLang v0.5.1 modules that the overlay's model files import.

Real SGLang cannot be imported without a GPU, so the tests import a model file
such as ``overlay/python/sglang/srt/models/opt.py`` against these stand-ins.
The tree under ``standin_sglang/sglang/`` mirrors the real package: the file
``sglang/srt/layers/linear.py`` here stands in for ``sglang.srt.layers.linear``.
Each stand-in class or function keeps its v0.5.1 signature (parameter names
and defaults) and is implemented in plain torch for one tensor-parallel rank.

Usage::

    with install():
        opt = import_overlay_module("sglang.srt.models.opt", path_to_opt_py)
        ...

While installed, every ``sglang`` / ``sglang.*`` import resolves to a stand-in
(or fails with ModuleNotFoundError when there is none): the real package, even
if installed, is never imported. On exit all ``sglang`` modules are removed
from ``sys.modules`` and any that were there before are put back.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, for standin_common
import standin_common  # noqa: E402

STANDIN_ROOT = Path(__file__).resolve().parent
_TOP_LEVEL = standin_common.TOP_LEVEL
_is_sglang = standin_common.is_sglang


def install():
    """Make ``sglang.*`` imports resolve to the stand-ins inside the block."""
    return standin_common.installed(STANDIN_ROOT)


def standin_module_names() -> list:
    """Dotted names of every stand-in module (packages included)."""
    names = []
    for path in sorted(STANDIN_ROOT.joinpath(_TOP_LEVEL).rglob("*.py")):
        parts = path.relative_to(STANDIN_ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


import_overlay_module = standin_common.load_file
