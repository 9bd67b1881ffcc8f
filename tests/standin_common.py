"""The machinery behind the CPU stand-ins of SGLang (tests/standin_*/).

A stand-in tree mirrors the real package (``sglang/srt/utils.py`` stands in
for ``sglang.srt.utils``). While installed, every ``sglang`` import resolves
to a stand-in, or fails with ModuleNotFoundError: a real SGLang, even when
installed, is never imported. On exit every ``sglang`` module is dropped from
``sys.modules`` and what was there before is put back, so nothing leaks.
"""

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterator, Optional, Union

TOP_LEVEL = "sglang"


def is_sglang(name: str) -> bool:
    return name == TOP_LEVEL or name.startswith(TOP_LEVEL + ".")


class _Finder(importlib.abc.MetaPathFinder):
    """Resolve ``sglang.*`` imports to files under one stand-in root."""

    def __init__(self, root: Path):
        self.root = root

    def find_spec(self, fullname, path=None, target=None):
        if not is_sglang(fullname):
            return None
        base = self.root.joinpath(*fullname.split("."))
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
            f"{fullname!r} has no CPU stand-in in {self.root}", name=fullname
        )


@contextlib.contextmanager
def installed(root: Path) -> Iterator[None]:
    """Make ``sglang.*`` imports resolve to the stand-ins under root."""
    saved = {n: m for n, m in sys.modules.items() if is_sglang(n)}
    for name in saved:
        del sys.modules[name]
    finder = _Finder(root)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n in sys.modules if is_sglang(n)]:
            del sys.modules[name]
        sys.modules.update(saved)


def load_file(name: str, path: Union[str, Path]) -> ModuleType:
    """Import the file ``path`` as module ``name`` (inside ``installed()``).

    The module is registered in ``sys.modules`` under its real dotted name, so
    its logger has the real name and ``installed()`` removes it again on exit.
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
