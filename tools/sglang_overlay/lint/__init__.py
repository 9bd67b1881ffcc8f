"""`overlay lint`: static checks of the patched tree, before any GPU time.

Everything is read with ``ast``; nothing imports torch or sglang. The checks
look at the tree the way upstream's code would at import time:

syntax
  syntax-error           an overlay file does not parse
registry (as ``sglang.srt.models.registry`` sees it)
  entryclass-missing     an overlay model module has no ``EntryClass`` (points
                         at the class to export, or at the module's end)
  registry-import        an overlay module imports the model registry
  arch-duplicate         two modules export the same architecture
  arch-unregistered      a declared architecture has no native class, so
                         SGLang would fall back to TransformersForCausalLM
API drift
  import-unresolved      ``from sglang... import X`` does not resolve here
  kwarg-unknown          a keyword argument is not in the callee's signature
  args-too-many          more positional arguments than the callee takes
  args-missing           a required argument of the callee is not given
  arg-twice              an argument given both positionally and by keyword
  module-call            ``mod.name(...)`` through an imported sglang module
                         that defines no ``name`` here
  attr-unknown           ``param.x`` where ``param: T`` and T, an sglang
                         dataclass (ForwardBatch, ...), has no attribute x
  weight-mapping-unknown a stacked_params_mapping / expert_params_mapping
                         entry names a module or parameter the model lacks
config consistency
  multimodal-unregistered  a class with multimodal hooks, or a model declared
                           multimodal, is not in ``multimodal_model_archs``
  mla-unregistered         a model declared MLA is not in DeepSeek's MLA branch
                           (another branch setting AttentionArch.MLA is not enough)
  config-unregistered      an overlay config class (one with a model_type that no
                           other overlay class nests) is not in _CONFIG_REGISTRY,
                           or a model's declared config is defined nowhere
  config-model-type-duplicate  an overlay config's model_type already belongs
                           to an upstream config class
syntax
  syntax-error           an overlay file does not parse
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from ..manifest import table_line
from ..units import edit as edits
from .facts import FACTS_VERSION, REGISTRY_MODULE, FactsCache
from .tree import PY_ROOT, GitTree, Modules

MODELS_DIR = PY_ROOT + "sglang/srt/models/"
MODELS_PKG = "sglang.srt.models"
MULTIMODAL_HOOKS = ("pad_input_ids", "get_image_feature")
# Decorators that keep a function's signature as written.
SAFE_DECORATORS = {"lru_cache", "cache", "wraps", "cached", "torch_compile_guard",
                   "staticmethod", "classmethod"}


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


RULES = ("syntax-error", "entryclass-missing", "registry-import", "arch-duplicate",
         "arch-unregistered", "import-unresolved", "kwarg-unknown", "args-too-many",
         "args-missing", "arg-twice", "module-call", "attr-unknown",
         "weight-mapping-unknown", "multimodal-unregistered", "mla-unregistered")
# A class with one of these names, or defining load_weights, is what a model
# module exports.
MODEL_CLASS = re.compile(r"For[A-Z]\w*$|Model$")


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
            f = self.mods.facts_of_path(path, module, is_pkg, detail=True)
            if "syntax_error" in f:
                self.add(path, f["line"], "syntax-error", f"does not parse: {f['syntax_error']}",
                         "fix the syntax")
                continue
            self.registry_imports(path, f)
            self.imports(path, f)
            self.calls(path, module, f)
            self.attr_uses(path, module, f)
            self.weight_mappings(path, module, f)
            if (module.rpartition(".")[0] == MODELS_PKG and not is_pkg
                    and f["classes"] and f["entry"] is None):
                self.entry_missing(path, module, f)
        archs = self.registry()
        self.declared(archs)
        self.config(archs)
        self.configs()
        return sorted(self.findings, key=lambda x: (x.path, x.line, x.rule))

    def entry_missing(self, path: str, module: str, f: dict) -> None:
        """Point at the class to export when there is one, else at the module's end."""
        declared = {m.architecture for m in self.manifest.models}
        classes = sorted(f["classes"].items(), key=lambda kv: kv[1]["line"])
        pick = ([n for n, _ in classes if n in declared]
                or [n for n, c in classes if "load_weights" in c["methods"]]
                or [n for n, _ in classes if MODEL_CLASS.search(n)])
        if pick:
            name = pick[-1]
            line, fix = f["classes"][name]["line"], f"add EntryClass = {name} at the module's end"
        else:
            line, fix = f["end_line"], "end the module with EntryClass = <YourModelClass>"
        self.add(path, line, "entryclass-missing",
                 f"model module {module} exports no EntryClass, so the "
                 "registry never sees its classes", fix)

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
        paths = [p for p in self.tree.listdir(MODELS_DIR)
                 if p.endswith(".py") and not p.endswith("/__init__.py")]
        for path, e in self.mods.entries(paths).items():
            for arch in e["archs"]:
                archs.setdefault(arch, []).append((path, e["entry_line"]))
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

    def callee(self, path: str, module: str, f: dict, call: dict) -> tuple | None:
        """(kind, module, name, label) of an sglang class or function a call reaches."""
        func = call["func"]
        if func == "super().__init__":
            cls = f["classes"].get(call["enclosing"]) if call["enclosing"] else None
            if cls and cls["bases"]:
                found = self.mods.resolve_base(module, cls["bases"][0])
                if found and found[0] == "class":
                    return (*found, "super().__init__")
            return None
        if func.endswith("()"):
            return None
        head, *rest = func.split(".")
        if f["defs"].get(head) == "import" and head not in f["aliases"]:
            # `import sglang.srt.utils` binds the top package, sglang
            found = ("module", head, None) if self.mods.is_module(head) else None
        else:
            found = self.mods.symbol(module, head)
        if not found:
            return None
        for i, part in enumerate(rest):
            if found[0] != "module":
                return None  # an attribute of a class or an object: not checked
            mod = found[1]
            found = self.mods.symbol(mod, part)
            if found is None:
                written = ".".join([head, *rest[:i + 1]])
                self.add_module_call(path, call, mod, part, written)
                return None
        if found[0] in ("class", "function"):
            return (*found, func)
        return None

    def add_module_call(self, path: str, call: dict, mod: str, name: str, written: str) -> None:
        f = self.mods.facts(mod) or {}
        names = sorted(set(f.get("defs", {})) | set(f.get("functions", {})))
        close = difflib.get_close_matches(name, names, n=1)
        self.add(path, call["line"], "module-call",
                 f"{written}(): module {mod} defines no {name} in this tree",
                 f"did you mean {close[0]}?" if close
                 else f"find where this release defines {name}, or stop using it")

    def calls(self, path: str, module: str, f: dict) -> None:
        for call in f["calls"]:
            target = self.callee(path, module, f, call)
            if target is None:
                continue
            kind, tmod, tname, label = target
            if kind == "class":
                params = self.mods.init_params(tmod, tname)
                sig = self.mods.init_signature(tmod, tname)
            else:
                fn = self.mods.facts(tmod)["functions"].get(tname)
                params = None if fn is None or fn["kwargs"] else set(fn["params"])
                sig = fn if fn is not None and not (set(fn.get("decorators") or ())
                                                    - SAFE_DECORATORS) else None
            where = f"{tmod}.{tname}"
            if params is not None:
                for kw in call["kwargs"]:
                    if kw not in params:
                        close = difflib.get_close_matches(kw, sorted(params), n=1)
                        fix = (f"did you mean {close[0]}=?" if close
                               else f"use one of: {', '.join(sorted(params)) or 'no keywords'}")
                        self.add(path, call["line"], "kwarg-unknown",
                                 f"{label}() has no parameter '{kw}' in {where} here", fix)
            if sig is not None and "required" in sig:
                self.arity(path, call, sig, label, where)

    def arity(self, path: str, call: dict, sig: dict, label: str, where: str) -> None:
        positional, npos = sig["positional"], call["npos"]
        if not call["star"] and not sig["varargs"] and npos > len(positional):
            self.add(path, call["line"], "args-too-many",
                     f"{label}() takes {len(positional)} positional argument"
                     f"{'s' if len(positional) != 1 else ''} in {where} here; {npos} given",
                     f"pass at most {len(positional)} positionally: "
                     f"({', '.join(positional) or 'none'}), the rest by keyword")
            return
        given = positional[:npos]
        twice = [k for k in call["kwargs"] if k in given]
        for k in twice:
            self.add(path, call["line"], "arg-twice",
                     f"{label}() gets '{k}' both positionally and by keyword ({where})",
                     f"drop the keyword {k}= or the positional value")
        if call["star"] or call["dstar"]:
            return
        missing = [r for r in sig["required"] if r not in given and r not in call["kwargs"]]
        if missing:
            self.add(path, call["line"], "args-missing",
                     f"{label}() is missing required argument"
                     f"{'s' if len(missing) != 1 else ''} {', '.join(missing)} ({where} here)",
                     f"pass {', '.join(m + '=' for m in missing)}")

    # --- objects with a known shape ---------------------------------------

    def attr_uses(self, path: str, module: str, f: dict) -> None:
        shapes: dict[str, tuple | None] = {}
        for use in f["attr_uses"]:
            t = use["type"]
            if t not in shapes:
                found = self.mods.resolve_base(module, t)
                shapes[t] = None
                if found and found[0] == "class":
                    cls = self.mods.class_facts(found[1], found[2])
                    if cls and cls["dataclass"]:
                        attrs = self.mods.attributes(found[1], found[2], strict=True)
                        shapes[t] = (found, attrs) if attrs is not None else None
            shape = shapes[t]
            if shape is None or use["attr"] in shape[1] or use["attr"].startswith("__"):
                continue
            (_, tmod, tname), attrs = shape
            close = difflib.get_close_matches(use["attr"], sorted(attrs), n=1)
            self.add(path, use["line"], "attr-unknown",
                     f"{use['param']}.{use['attr']}: {tname} ({tmod}) has no attribute "
                     f"{use['attr']} in this tree",
                     f"did you mean {use['param']}.{close[0]}?" if close
                     else f"read what {tname} has in this release")

    def weight_mappings(self, path: str, module: str, f: dict) -> None:
        if not f["mappings"] or f["self_attrs_dynamic"]:
            return
        known = set(f["self_attrs"])
        # the model's own classes and the sglang classes it builds (with their
        # bases) define the submodules and parameters a mapping can name
        called = {c["func"] for c in f["calls"] if "." not in c["func"]}
        for name in sorted(set(f["classes"]) | (called & set(f["aliases"]))):
            found = self.mods.symbol(module, name)
            if not found or found[0] != "class":
                continue
            attrs = self.mods.attributes(found[1], found[2], strict=False)
            if attrs is None:
                return  # a class binds names dynamically: the mapping cannot be judged
            known |= attrs
        for name, line in f["mappings"]:
            head = next((p for p in name.split(".") if p), "")
            if not head or head in known:
                continue
            close = difflib.get_close_matches(head, sorted(known), n=1)
            self.add(path, line, "weight-mapping-unknown",
                     f"weight mapping entry {name!r}: the model defines no module or "
                     f"parameter {head}, so no checkpoint tensor loads through it",
                     f"did you mean {close[0]!r}?" if close
                     else "name a module or parameter the model defines")

    # --- config consistency -------------------------------------------------

    def config(self, archs: dict) -> None:
        key = self.tree.key(edits.MODEL_CONFIG)
        if key is None:
            return
        cached = self.mods.cache.get(f"{FACTS_VERSION}:config:{key}")
        if cached is None:
            source = self.tree.read(edits.MODEL_CONFIG).decode("utf-8")
            cached = {"mm": sorted(edits.multimodal_archs(source) or ()),
                      "mla": sorted(edits.mla_archs(source))}
            self.mods.cache.put(f"{FACTS_VERSION}:config:{key}", cached)
        mm, mla = set(cached["mm"]), set(cached["mla"])
        declared_mm = {m.architecture for m in self.manifest.models if m.multimodal}
        for path in self.overlay_paths:
            mi = Modules.module_of(path)
            if mi is None or mi[0].rpartition(".")[0] != MODELS_PKG:
                continue
            f = self.mods.facts_of_path(path, mi[0], mi[1], detail=True)
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
                         f"{m.architecture} is declared MLA but is not tested in "
                         "ModelConfig's MLA branch (the one that tests "
                         f"{edits.MLA_ANCHOR_ARCH}) after apply",
                         "add it to a register-mla edit unit",
                         unit=self.model_unit(m))


    # --- configuration classes -------------------------------------------------

    def configs(self) -> None:
        ours = [p for p in self.overlay_paths
                if p.startswith(edits.CONFIGS_DIR) and p.endswith(".py")]
        declared = {m.config: m for m in self.manifest.models if m.config}
        if not ours and not declared:
            return
        registry = edits.find_registry(self.tree.read)
        names, keys = (edits.registered_configs(self.tree.read(registry).decode("utf-8"))
                       if registry else (set(), set()))
        reg_module = Modules.module_of(registry)[0] if registry else None
        registered = {self.mods.symbol(reg_module, n) for n in names} if registry else set()
        registered = {(f[1], f[2]) for f in registered if f and f[0] == "class"}
        # model_type -> the upstream config class that has it
        theirs: dict[str, str] = {}
        for path in self.tree.listdir(edits.CONFIGS_DIR):
            if path in self.overlay_paths or not path.endswith(".py"):
                continue
            mod, is_pkg = Modules.module_of(path)
            for cname, c in self.mods.facts_of_path(path, mod, is_pkg).get("classes",
                                                                            {}).items():
                if c.get("model_type"):
                    theirs.setdefault(c["model_type"], f"{cname} ({path})")
        for key in keys:
            theirs.setdefault(key, f"the {edits.REGISTRY} entry '{key}' ({registry})")
        defined = set()
        for path in ours:
            mod, is_pkg = Modules.module_of(path)
            f = self.mods.facts_of_path(path, mod, is_pkg)
            classes = f.get("classes", {})
            defined |= set(classes)
            nested = _nested_names(self.tree.read(path) or b"", set(classes))
            for cname, c in sorted(classes.items(), key=lambda kv: kv[1]["line"]):
                mt = c.get("model_type")
                if not mt:
                    continue
                if mt in theirs:
                    self.add(path, c["line"], "config-model-type-duplicate",
                             f"{cname}'s model_type '{mt}' already belongs to upstream's "
                             f"{theirs[mt]}; only one class can be registered under it",
                             f"give {cname} a model_type of its own")
                if (mod, cname) in registered or (cname in nested and cname not in declared):
                    continue
                where = registry or " or ".join(edits.REGISTRY_FILES)
                self.add(path, c["line"], "config-unregistered",
                         f"{cname} (model_type '{mt}') is not in {edits.REGISTRY} ({where}); "
                         f"SGLang reads such checkpoints with AutoConfig, which does not "
                         f"know '{mt}'",
                         f'add it to a register-config edit unit: configs = ["{cname}"]')
        for cname, m in declared.items():
            if cname in defined or any(c == cname for _, c in registered):
                continue
            self.add("overlay.toml", 1, "config-unregistered",
                     f"{m.architecture} declares config = \"{cname}\", which no overlay file "
                     f"under {edits.CONFIGS_DIR} defines and {edits.REGISTRY} does not hold",
                     f"define {cname} in {edits.CONFIGS_DIR}<name>.py and register it with "
                     "a register-config edit unit", unit=self.model_unit(m))


def _nested_names(source: bytes, classes: set[str]) -> set[str]:
    """Classes of this file that another class of it refers to: sub-configs
    (a vision or text config) are built by their parent, not registered."""
    import ast

    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return set()
    out = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            out |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name)
                    and n.id in classes and n.id != node.name}
    return out


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
    """Lint the result of a build (its tree in the session's workspace)."""
    tree = GitTree(session.workspace.git, build.tree)
    return lint_tree(session.manifest, tree, session.cache.root / "lint-facts.sqlite")


__all__ = ["Finding", "lint_tree", "lint_build", "GitTree"]
