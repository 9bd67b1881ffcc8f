"""`overlay lint`: static checks of the patched tree, before any GPU time.

Everything is read with ``ast``; nothing imports torch or sglang. The checks
look at the tree the way upstream's code would at import time:

registry (as ``sglang.srt.models.registry`` sees it)
  entryclass-missing     an overlay model module has no ``EntryClass``
  registry-import        an overlay module imports the model registry
  arch-duplicate         two modules export the same architecture
  arch-unregistered      a declared architecture has no native class, so
                         SGLang would fall back to TransformersForCausalLM
API drift
  import-unresolved      ``from sglang... import X`` does not resolve here
  kwarg-unknown          a keyword argument is not in the callee's signature
config consistency
  multimodal-unregistered  a class with multimodal hooks, or a model declared
                           multimodal, is not in ``multimodal_model_archs``
  mla-unregistered         a model declared MLA is not in the MLA branch
syntax
  syntax-error           an overlay file does not parse
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from ..manifest import table_line
from ..units import edit as edits
from .facts import REGISTRY_MODULE, FactsCache
from .tree import PY_ROOT, GitTree, Modules

MODELS_DIR = PY_ROOT + "sglang/srt/models/"
MODELS_PKG = "sglang.srt.models"
MULTIMODAL_HOOKS = ("pad_input_ids", "get_image_feature")


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    rule: str
    message: str
    fix: str
    severity: str = "error"
    unit: str | None = None  # the overlay unit the finding is about, when known

    def text(self) -> str:
        """The printed form: path:line rule-id message (fix: ...)."""
        return f"{self.path}:{self.line} {self.rule} {self.message} (fix: {self.fix})"

    __str__ = text

    def to_json(self) -> dict:
        return {"path": self.path, "line": self.line, "rule": self.rule,
                "message": self.message, "fix": self.fix, "severity": self.severity,
                "unit": self.unit}


class Linter:
    def __init__(self, manifest, tree, overlay_paths: list[str], cache: FactsCache):
        self.manifest = manifest
        self.tree = tree
        self.overlay_paths = [p for p in overlay_paths if tree.exists(p)]
        self.owner = {p: u.name for u in manifest.active_units if u.kind == "files"
                      for p in manifest.unit_files(u)}
        self.mods = Modules(tree, cache)
        self.findings: list[Finding] = []

    def shown(self, path: str) -> str:
        """Where the user fixes it: the overlay's copy of an overlay file."""
        return f"overlay/{path}" if path in self.overlay_paths else path

    def add(self, path: str, line: int, rule: str, message: str, fix: str,
            unit: str | None = None) -> None:
        self.findings.append(Finding(self.shown(path), line, rule, message, fix,
                                     unit=unit or self.owner.get(path)))

    def model_unit(self, model) -> str | None:
        """The unit a finding about a declared model belongs to."""
        return model.unit if model.unit in self.owner.values() else None

    def run(self) -> list[Finding]:
        for path in self.overlay_paths:
            mi = Modules.module_of(path)
            if mi is None:
                continue
            module, is_pkg = mi
            f = self.mods.facts_of_path(path, module, is_pkg)
            if "syntax_error" in f:
                self.add(path, f["line"], "syntax-error", f"does not parse: {f['syntax_error']}",
                         "fix the syntax")
                continue
            self.registry_imports(path, f)
            self.imports(path, f)
            self.kwargs(path, module, f)
            if (module.rpartition(".")[0] == MODELS_PKG and not is_pkg
                    and f["classes"] and f["entry"] is None):
                first = min(c["line"] for c in f["classes"].values())
                self.add(path, first, "entryclass-missing",
                         f"model module {module} exports no EntryClass, so the "
                         "registry never sees its classes",
                         "end the module with EntryClass = <YourModelClass>")
        archs = self.registry()
        self.declared(archs)
        self.config(archs)
        return sorted(self.findings, key=lambda x: (x.path, x.line, x.rule))

    # --- registry ---------------------------------------------------------

    def registry_imports(self, path: str, f: dict) -> None:
        for imp in f["imports"]:
            mod, name = imp["module"], imp["name"]
            if mod == REGISTRY_MODULE or (mod == MODELS_PKG and name == "registry") or (
                name is None and mod.startswith(REGISTRY_MODULE)
            ):
                self.add(path, imp["line"], "registry-import",
                         f"imports {REGISTRY_MODULE}; the registry imports every model "
                         "module, so this import is circular",
                         "drop the import: export the class with EntryClass and let "
                         "the registry find it")

    def registry(self) -> dict[str, list[tuple[str, int]]]:
        """Architecture name -> [(path, line)] of the modules exporting it."""
        archs: dict[str, list[tuple[str, int]]] = {}
        for path in self.tree.listdir(MODELS_DIR):
            if not path.endswith(".py") or path.endswith("/__init__.py"):
                continue
            module = Modules.module_of(path)[0]
            f = self.mods.facts_of_path(path, module, False)
            if not f.get("entry"):
                continue
            for written in f["entry"]:
                head = written.split(".")[0]
                found = self.mods.symbol(module, head) if "." not in written else None
                arch = found[2] if found and found[0] == "class" else written.split(".")[-1]
                archs.setdefault(arch, []).append((path, f["entry_line"]))
        for arch, where in sorted(archs.items()):
            if len(where) > 1:
                ours = [w for w in where if w[0] in self.overlay_paths] or where
                others = ", ".join(self.shown(p) for p, _ in where if (p, _) != ours[0])
                self.add(ours[0][0], ours[0][1], "arch-duplicate",
                         f"architecture {arch} is exported by {len(where)} modules (also "
                         f"{others}); upstream's registry asserts on duplicates at import",
                         f"export {arch} from one module only, or subclass it under a new name")
        return archs

    def declared(self, archs: dict) -> None:
        for i, m in enumerate(self.manifest.models):
            if m.architecture not in archs:
                line = table_line(self.manifest.path, "model", index=i)
                self.add("overlay.toml", line, "arch-unregistered",
                         f"declared architecture {m.architecture} has no native class in "
                         "any EntryClass; SGLang would fall back to TransformersForCausalLM",
                         f"add a model module whose EntryClass includes {m.architecture}",
                         unit=self.model_unit(m))

    # --- API drift --------------------------------------------------------

    def imports(self, path: str, f: dict) -> None:
        for imp in f["imports"]:
            mod, name = imp["module"], imp["name"]
            if not mod.startswith("sglang") or name == "*":
                continue
            if name is None:
                if not self.mods.is_module(mod):
                    self.add(path, imp["line"], "import-unresolved",
                             f"module {mod} does not exist in this tree",
                             self._near_module(mod))
                continue
            if not self.mods.is_module(mod):
                self.add(path, imp["line"], "import-unresolved",
                         f"`from {mod} import {name}`: module {mod} does not exist in "
                         "this tree", self._near_module(mod))
                continue
            if self.mods.symbol(mod, name) is None:
                self.add(path, imp["line"], "import-unresolved",
                         f"`from {mod} import {name}`: {mod} defines no {name} in this tree",
                         self._moved(name, mod))

    def _near_module(self, mod: str) -> str:
        leaf = mod.split(".")[-1]
        candidates = [Modules.module_of(p)[0] for p in self.tree_paths()
                      if p.endswith(f"/{leaf}.py")]
        if candidates:
            return f"it may have moved to {candidates[0]}"
        return "import it from where this release defines it"

    def _moved(self, name: str, mod: str) -> str:
        return f"find where this release defines {name}, or stop using it"

    def tree_paths(self) -> list[str]:
        blobs = getattr(self.tree, "blobs", None)
        if blobs is not None:
            return [p for p in blobs if p.startswith(PY_ROOT) and p.endswith(".py")]
        return []

    def kwargs(self, path: str, module: str, f: dict) -> None:
        for call in f["calls"]:
            func = call["func"]
            target = None
            if func == "super().__init__" and call["enclosing"]:
                cls = f["classes"].get(call["enclosing"])
                if cls:
                    for b in cls["bases"]:
                        found = self.mods.resolve_base(module, b)
                        if found and found[0] == "class":
                            target = found
                        break
                label = "super().__init__"
            elif "." not in func and not func.endswith("()"):
                found = self.mods.symbol(module, func)
                if found and found[0] in ("class", "function"):
                    target = found
                label = func
            if target is None:
                continue
            kind, tmod, tname = target
            if kind == "class":
                params = self.mods.init_params(tmod, tname)
            else:
                fn = self.mods.facts(tmod)["functions"].get(tname)
                params = None if fn is None or fn["kwargs"] else set(fn["params"])
            if params is None:
                continue
            for kw in call["kwargs"]:
                if kw not in params:
                    close = difflib.get_close_matches(kw, sorted(params), n=1)
                    fix = (f"did you mean {close[0]}=?" if close
                           else f"use one of: {', '.join(sorted(params)) or 'no keywords'}")
                    self.add(path, call["line"], "kwarg-unknown",
                             f"{label}() has no parameter '{kw}' in {tmod}.{tname} here",
                             fix)

    # --- config consistency -------------------------------------------------

    def config(self, archs: dict) -> None:
        text = self.tree.read(edits.MODEL_CONFIG)
        if text is None:
            return
        source = text.decode("utf-8")
        mm = edits.multimodal_archs(source) or set()
        mla = edits.mla_archs(source)
        declared_mm = {m.architecture for m in self.manifest.models if m.multimodal}
        for path in self.overlay_paths:
            mi = Modules.module_of(path)
            if mi is None or mi[0].rpartition(".")[0] != MODELS_PKG:
                continue
            f = self.mods.facts_of_path(path, mi[0], mi[1])
            for written in f.get("entry") or []:
                found = self.mods.symbol(mi[0], written) if "." not in written else None
                if not found or found[0] != "class":
                    continue
                hooks = set(MULTIMODAL_HOOKS) & self.mods.methods(found[1], found[2])
                arch = found[2]
                if hooks and arch not in mm and arch not in declared_mm:
                    self.add(path, f["entry_line"], "multimodal-unregistered",
                             f"{arch} has multimodal hooks ({', '.join(sorted(hooks))}) "
                             "but is not in multimodal_model_archs",
                             "declare it with multimodal = true and add a "
                             "register-multimodal edit unit")
        for m in self.manifest.models:
            if m.multimodal and m.architecture not in mm:
                self.add(edits.MODEL_CONFIG, 1, "multimodal-unregistered",
                         f"{m.architecture} is declared multimodal but is not in "
                         "multimodal_model_archs after apply",
                         "add it to a register-multimodal edit unit",
                         unit=self.model_unit(m))
            if m.mla and m.architecture not in mla:
                self.add(edits.MODEL_CONFIG, 1, "mla-unregistered",
                         f"{m.architecture} is declared MLA but no MLA branch of "
                         "ModelConfig names it after apply",
                         "add it to a register-mla edit unit",
                         unit=self.model_unit(m))


def overlay_paths(manifest) -> list[str]:
    return [p for u in manifest.active_units if u.kind == "files"
            for p in manifest.unit_files(u)]


def lint_tree(manifest, tree, cache_path=None) -> list[Finding]:
    cache = FactsCache(cache_path)
    try:
        return Linter(manifest, tree, overlay_paths(manifest), cache).run()
    finally:
        cache.close()


def lint_build(session, build) -> list[Finding]:
    """Lint the result of a build (a commit in the session's workspace)."""
    tree = GitTree(session.workspace.git, build.head)
    return lint_tree(session.manifest, tree, session.cache.root / "lint-facts.sqlite")


__all__ = ["Finding", "lint_tree", "lint_build", "GitTree"]
