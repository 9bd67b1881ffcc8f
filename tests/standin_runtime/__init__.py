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

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterator, List, Optional, Union

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
        if base.is_dir():  # a namespace package upstream too (no __init__.py)
            spec = importlib.machinery.ModuleSpec(fullname, None, is_package=True)
            spec.submodule_search_locations = [str(base)]
            return spec
        raise ModuleNotFoundError(
            f"{fullname!r} has no CPU stand-in in {STANDIN_ROOT}", name=fullname
        )


def standin_files() -> List[Path]:
    """Every stand-in source file under ``STANDIN_ROOT/sglang``."""
    return sorted(STANDIN_ROOT.joinpath(_TOP_LEVEL).rglob("*.py"))


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


def load_real_module(name: str, path: Union[str, Path]) -> ModuleType:
    """Import the real SGLang file ``path`` as module ``name`` (inside ``install()``).

    The module is registered in ``sys.modules`` under its real dotted name, so
    its logger has the real name and ``install()`` removes it again on exit.
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
