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

import contextlib
import importlib.abc
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterator, Optional, Union

STANDIN_ROOT = Path(__file__).resolve().parent
_TOP_LEVEL = "sglang"


def _is_sglang(name: str) -> bool:
    return name == _TOP_LEVEL or name.startswith(_TOP_LEVEL + ".")


class _StandinFinder(importlib.abc.MetaPathFinder):
    """Resolve ``sglang.*`` imports to files under ``STANDIN_ROOT``."""

    def find_spec(self, fullname, path=None, target=None):
        if not _is_sglang(fullname):
            return None
        base = STANDIN_ROOT.joinpath(*fullname.split("."))
        if (base / "__init__.py").is_file():
            return importlib.util.spec_from_file_location(
                fullname, base / "__init__.py", submodule_search_locations=[str(base)]
            )
        if base.with_suffix(".py").is_file():
            return importlib.util.spec_from_file_location(
                fullname, base.with_suffix(".py")
            )
        raise ModuleNotFoundError(
            f"{fullname!r} has no CPU stand-in in {STANDIN_ROOT}", name=fullname
        )


def standin_module_names() -> list:
    """Dotted names of every stand-in module (packages included)."""
    names = []
    for path in sorted(STANDIN_ROOT.joinpath(_TOP_LEVEL).rglob("*.py")):
        parts = path.relative_to(STANDIN_ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@contextlib.contextmanager
def install() -> Iterator[None]:
    """Make ``sglang.*`` imports resolve to the stand-ins inside the block."""
    saved = {n: m for n, m in sys.modules.items() if _is_sglang(n)}
    for name in saved:
        del sys.modules[name]
    finder = _StandinFinder()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n in sys.modules if _is_sglang(n)]:
            del sys.modules[name]
        sys.modules.update(saved)


def import_overlay_module(name: str, path: Union[str, Path]) -> ModuleType:
    """Import the overlay file ``path`` as module ``name`` (inside ``install()``).

    The module is registered in ``sys.modules`` so that ``install()`` removes it
    again on exit.
    """
    parent: Optional[str] = name.rpartition(".")[0] or None
    if parent:
        importlib.import_module(parent)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
