"""A read-only view of a patched tree, and the Python modules in it.

``GitTree`` reads a commit without checking it out. ``Modules`` maps dotted module names of
upstream's ``python/`` project to files and answers where a name comes from,
following ``from x import y`` aliases, ``import *`` and packages.
"""

from __future__ import annotations

from ..gitutil import Git
from .facts import FACTS_VERSION, FactsCache, entry_facts, extract, instance_attrs

PY_ROOT = "python/"


class GitTree:
    def __init__(self, git: Git, commit: str):
        self.git = git
        self.commit = commit
        out = git.run("ls-tree", "-r", "--full-tree", commit)
        self.blobs: dict[str, str] = {}
        for line in out.splitlines():
            meta, _, path = line.partition("\t")
            _mode, kind, sha = meta.split()
            if kind == "blob":
                self.blobs[path] = sha

    def key(self, path: str) -> str | None:
        return self.blobs.get(path)

    def read(self, path: str) -> bytes | None:
        sha = self.blobs.get(path)
        return self.git.object_bytes(sha) if sha else None

    def exists(self, path: str) -> bool:
        return path in self.blobs

    def read_many(self, paths: list[str]) -> dict[str, bytes]:
        """Several files in one `git cat-file --batch` round trip."""
        shas = [self.blobs[p] for p in paths if p in self.blobs]
        if not shas:
            return {}
        out = self.git.run_bytes("cat-file", "--batch", stdin="\n".join(shas).encode() + b"\n")
        data: dict[str, bytes] = {}
        pos = 0
        for sha in shas:
            nl = out.index(b"\n", pos)
            head = out[pos:nl].split(b" ")
            if len(head) != 3:  # "<sha> missing": read() answers None for it
                pos = nl + 1
                continue
            oid, _kind, size = head
            start = nl + 1
            data[oid.decode()] = out[start:start + int(size)]
            pos = start + int(size) + 1
        return {p: data[self.blobs[p]] for p in paths if self.blobs.get(p) in data}

    def listdir(self, prefix: str) -> list[str]:
        """Paths directly under a directory prefix (ending in '/')."""
        return sorted(p for p in self.blobs if p.startswith(prefix)
                      and "/" not in p[len(prefix):])

    def is_dir(self, path: str) -> bool:
        if not hasattr(self, "_dirs"):
            self._dirs = {p.rsplit("/", i)[0] for p in self.blobs
                          for i in range(1, p.count("/") + 1)}
        return path in self._dirs


class Modules:
    """Dotted module names over a tree, with cached facts."""

    def __init__(self, tree, cache: FactsCache):
        self.tree = tree
        self.cache = cache

    def path_of(self, module: str) -> tuple[str, bool] | None:
        base = PY_ROOT + module.replace(".", "/")
        if self.tree.exists(base + ".py"):
            return base + ".py", False
        if self.tree.exists(base + "/__init__.py"):
            return base + "/__init__.py", True
        if self.tree.is_dir(base):
            return base + "/", True  # a namespace package (no __init__.py)
        return None

    def is_module(self, module: str) -> bool:
        return self.path_of(module) is not None

    def facts(self, module: str) -> dict | None:
        found = self.path_of(module)
        if found is None:
            return None
        path, is_pkg = found
        return self.facts_of_path(path, module, is_pkg)

    def facts_of_path(self, path: str, module: str, is_pkg: bool, detail: bool = False) -> dict:
        if path.endswith("/"):  # a namespace package defines nothing itself
            return extract(b"", module, True)
        blob = self.tree.key(path)
        key = f"{FACTS_VERSION}:{blob}:{module}:{int(is_pkg)}:{int(detail)}"
        data = self.cache.get(key)
        if data is None:
            data = extract(self.tree.read(path) or b"", module, is_pkg, detail)
            self.cache.put(key, data)
        return data

    def entries(self, paths: list[str]) -> dict[str, dict]:
        """path -> {"entry", "entry_line", "archs"} for model modules, read cheaply.

        The registry needs only each module's EntryClass: a text scan finds
        it, and the full facts are read only when the scan cannot tell.
        """
        keys = {p: f"{FACTS_VERSION}:entry:{self.tree.key(p)}" for p in paths}
        cached = self.cache.get_many(list(keys.values()))
        missing = [p for p in paths if keys[p] not in cached]
        read_many = getattr(self.tree, "read_many", None)
        texts = read_many(missing) if read_many and len(missing) > 1 else {}
        out = {}
        for path in paths:
            data = cached.get(keys[path])
            if data is None:
                text = texts[path] if path in texts else self.tree.read(path)
                data = entry_facts(text or b"")
                if data is None:  # the scan could not tell: read the module
                    module = Modules.module_of(path)[0]
                    f = self.facts_of_path(path, module, False)
                    data = {"entry": f.get("entry"), "entry_line": f.get("entry_line", 0),
                            "archs": [self._arch(module, w) for w in f.get("entry") or []]}
                self.cache.put(keys[path], data)
            out[path] = data
        return out

    def _arch(self, module: str, written: str) -> str:
        """The architecture name an EntryClass element registers (its __name__)."""
        found = self.symbol(module, written) if "." not in written else None
        return found[2] if found and found[0] == "class" else written.split(".")[-1]

    def instance_attrs(self, module: str, name: str) -> dict | None:
        """{"attrs", "dynamic"}: what a class's methods bind on self."""
        found = self.path_of(module)
        if found is None or found[0].endswith("/"):
            return None
        key = f"{FACTS_VERSION}:self:{self.tree.key(found[0])}:{name}"
        data = self.cache.get(key)
        if data is None:
            data = instance_attrs(self.tree.read(found[0]) or b"", name) or {}
            self.cache.put(key, data)
        return data or None

    @staticmethod
    def module_of(path: str) -> tuple[str, bool] | None:
        if not path.startswith(PY_ROOT) or not path.endswith(".py"):
            return None
        dotted = path[len(PY_ROOT):-3].replace("/", ".")
        if dotted.endswith(".__init__"):
            return dotted[: -len(".__init__")], True
        return dotted, False

    # --- where names come from -------------------------------------------

    def symbol(self, module: str, name: str, depth: int = 0) -> tuple | None:
        """(kind, module, name) where module.name is really defined.

        kind: 'class', 'function', 'variable', 'module', 'external' (imported
        from outside sglang), 'dynamic' (a module __getattr__), or None.
        """
        if depth > 12:
            return ("dynamic", module, name)
        f = self.facts(module)
        if f is None or "syntax_error" in f:
            if self.is_module(f"{module}.{name}"):
                return ("module", f"{module}.{name}", None)
            return None if f is None else ("dynamic", module, name)
        if name in f["classes"]:
            return ("class", module, name)
        if name in f["functions"]:
            return ("function", module, name)
        alias = f["aliases"].get(name)
        if alias is not None:
            src_mod, src_name = alias
            if not src_mod.startswith("sglang"):
                return ("external", src_mod, src_name)
            if src_name is None:
                return ("module", src_mod, None)
            found = self.symbol(src_mod, src_name, depth + 1)
            return found or ("external", src_mod, src_name)
        if name in f["defs"]:
            return ("variable", module, name)
        if self.is_module(f"{module}.{name}"):
            return ("module", f"{module}.{name}", None)
        for star in f["stars"]:
            if star.startswith("sglang") and not name.startswith("_"):
                sf = self.facts(star)
                if sf and sf.get("all") is not None and name not in sf["all"]:
                    continue
                found = self.symbol(star, name, depth + 1)
                if found:
                    return found
        if f["getattr"] or any(not s.startswith("sglang") for s in f["stars"]):
            return ("dynamic", module, name)
        return None

    def class_facts(self, module: str, name: str) -> dict | None:
        f = self.facts(module)
        return f["classes"].get(name) if f and "classes" in f else None

    def resolve_base(self, module: str, dotted: str) -> tuple | None:
        """A base class expression written in module, resolved."""
        head, _, rest = dotted.partition(".")
        if not rest:
            return self.symbol(module, head)
        found = self.symbol(module, head)
        if found and found[0] == "module":
            return self.symbol(found[1], rest.split(".")[-1]) if "." not in rest else None
        return ("external", dotted, None)

    def init_params(self, module: str, name: str, depth: int = 0) -> set[str] | None:
        """Keyword names the class accepts, following inheritance; None: anything."""
        if depth > 12:
            return None
        cls = self.class_facts(module, name)
        if cls is None:
            return None
        init = cls["methods"].get("__init__")
        if init is not None:
            own = set(init["params"])
            if not init["kwargs"]:
                return own
            if not init["forwards_kwargs"]:
                return None
            base = self._first_sglang_base(module, cls)
            if base is None:
                return None
            inherited = self.init_params(base[1], base[2], depth + 1)
            return None if inherited is None else own | inherited
        if cls["dataclass"]:
            fields = set(cls["fields"])
            base = self._first_sglang_base(module, cls)
            if base:
                inherited = self.init_params(base[1], base[2], depth + 1)
                return None if inherited is None else fields | inherited
            return fields
        base = self._first_sglang_base(module, cls)
        if base is None:
            return None
        return self.init_params(base[1], base[2], depth + 1)

    def _first_sglang_base(self, module: str, cls: dict) -> tuple | None:
        for b in cls["bases"]:
            found = self.resolve_base(module, b)
            if found and found[0] == "class":
                return found
            if found is None or found[0] in ("external", "dynamic", "variable"):
                return None  # the first base decides __init__, and we cannot see it
        return None

    def methods(self, module: str, name: str, depth: int = 0) -> set[str]:
        """Method names of a class, with those it inherits from sglang classes."""
        cls = self.class_facts(module, name)
        if cls is None or depth > 12:
            return set()
        out = set(cls["methods"])
        for b in cls["bases"]:
            found = self.resolve_base(module, b)
            if found and found[0] == "class":
                out |= self.methods(found[1], found[2], depth + 1)
        return out

    def init_signature(self, module: str, name: str, depth: int = 0) -> dict | None:
        """The __init__ a call of the class runs, when it can be known exactly.

        None when a decorator, metaclass, __new__, a dataclass or a base
        outside sglang could change what the call accepts.
        """
        cls = self.class_facts(module, name)
        if cls is None or depth > 12 or cls["dataclass"] or cls.get("metaclass") or (
                cls.get("decorators")) or "__new__" in cls["methods"]:
            return None
        init = cls["methods"].get("__init__")
        if init is not None:
            return None if init.get("decorators") else init
        base = self._first_sglang_base(module, cls)
        if base is None:
            return None
        return self.init_signature(base[1], base[2], depth + 1)

    def attributes(self, module: str, name: str, strict: bool, depth: int = 0) -> set[str] | None:
        """Every attribute an instance of the class can have; None: unknowable.

        strict: a base outside sglang makes it unknowable; otherwise such a
        base is taken to add nothing (nn.Module's own names do not matter to
        a weight mapping).
        """
        cls = self.class_facts(module, name)
        if cls is None or depth > 12:
            return None
        if {"__getattr__", "__getattribute__", "__setattr__"} & set(cls["methods"]):
            return None
        own = self.instance_attrs(module, name)
        if own is None or own["dynamic"]:
            return None
        out = set(cls["methods"]) | set(cls["fields"]) | set(cls.get("attrs", ())) | set(
            own["attrs"])
        for b in cls["bases"]:
            if b in ("object", "ABC", "abc.ABC", "Generic") or b.startswith("typing."):
                continue
            found = self.resolve_base(module, b)
            if not found or found[0] != "class":
                if strict or found is None or found[0] == "dynamic":
                    return None
                continue
            inherited = self.attributes(found[1], found[2], strict, depth + 1)
            if inherited is None:
                return None
            out |= inherited
        return out
