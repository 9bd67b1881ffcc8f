"""What lint needs to know about one module, read with ``ast`` only.

Facts are plain JSON-able dicts, cached by blob sha (the same file in ten
releases is parsed once), in a small sqlite database in the cache.
"""

from __future__ import annotations

import ast
import json
import re
import sqlite3
from pathlib import Path

FACTS_VERSION = "7"  # 5: classes carry their model_type; 6: arity, attrs, decorators
REGISTRY_MODULE = "sglang.srt.models.registry"


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    if isinstance(node, ast.Subscript):  # Generic[T] and friends
        return _dotted(node.value)
    if isinstance(node, ast.Call):  # super() and the like
        return _dotted(node.func) + "()" if _dotted(node.func) else None
    return None


def _signature(fn: ast.FunctionDef | ast.AsyncFunctionDef, method: bool) -> dict:
    a = fn.args
    names = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]
    if method and names and names[0] in ("self", "cls"):
        names = names[1:]
    forwards = False
    if a.kwarg is not None:
        kw = a.kwarg.arg
        for node in ast.walk(fn):
            if isinstance(node, ast.Call) and any(
                k.arg is None and isinstance(k.value, ast.Name) and k.value.id == kw
                for k in node.keywords
            ):
                func = _dotted(node.func) or ""
                if func.endswith("__init__") or func == "super().__init__":
                    forwards = True
    positional = [p.arg for p in a.posonlyargs + a.args]
    with_default = positional[len(positional) - len(a.defaults):] if a.defaults else []
    required = [p for p in positional if p not in with_default]
    required += [p.arg for p, d in zip(a.kwonlyargs, a.kw_defaults) if d is None]
    if method and positional and positional[0] in ("self", "cls"):
        positional = positional[1:]
        required = required[1:] if required and required[0] in ("self", "cls") else required
    decorators = [(_dotted(d.func if isinstance(d, ast.Call) else d) or "?").split(".")[-1]
                  for d in fn.decorator_list]
    return {
        "required": required,
        "decorators": decorators,
        "params": names,
        "positional": positional,
        "kwargs": a.kwarg is not None,
        "varargs": a.vararg is not None,
        "forwards_kwargs": forwards,
        "line": fn.lineno,
    }


def _is_dataclass(cls: ast.ClassDef) -> bool:
    for d in cls.decorator_list:
        name = _dotted(d.func if isinstance(d, ast.Call) else d) or ""
        if name.split(".")[-1] == "dataclass":
            return True
    return False


def _class(cls: ast.ClassDef) -> dict:
    methods: dict[str, dict] = {}
    fields: list[str] = []
    model_type = None
    attrs: list[str] = []  # names the class body binds (fields, constants, nested classes)
    for node in cls.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "model_type"
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            model_type = node.value.value
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            methods[node.name] = _signature(node, method=True)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            fields.append(node.target.id)
        elif isinstance(node, ast.Assign):
            attrs += [n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name)]
        elif isinstance(node, ast.ClassDef):
            attrs.append(node.name)
    return {
        "bases": [b for b in (_dotted(x) for x in cls.bases) if b],
        "methods": methods,
        "dataclass": _is_dataclass(cls),
        "decorators": [(_dotted(d.func if isinstance(d, ast.Call) else d) or "?")
                       for d in cls.decorator_list],
        "metaclass": any(k.arg == "metaclass" for k in cls.keywords),
        "fields": fields,
        "model_type": model_type,  # a PretrainedConfig's `model_type = "..."`
        "attrs": attrs,
        "line": cls.lineno,
    }


# Calls that bind a name on a module: setattr(self, "x", ...), register_parameter("x", ...).
SELF_BINDERS = ("setattr", "register_parameter", "register_buffer", "register_module",
                "add_module", "__setattr__")


def _binds(call: ast.Call, func: str, names: set[str]) -> bool:
    """For a setattr-like call (func's last part in SELF_BINDERS): add the
    attribute it binds on self to names. True when that name is computed."""
    leaf = func.split(".")[-1]
    if leaf not in SELF_BINDERS:
        return False
    args = call.args[1:] if leaf == "setattr" else call.args
    first = args[0] if args else None
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        names.add(first.value)
        return False
    return True


def _self_attrs(cls: ast.ClassDef) -> tuple[list[str], bool]:
    """Attribute names a class's methods bind on self; True if some are dynamic."""
    names: set[str] = set()
    dynamic = False
    for node in ast.walk(cls):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and (
                isinstance(node.value, ast.Name) and node.value.id == "self"):
            names.add(node.attr)
        elif isinstance(node, ast.Call):
            dynamic = _binds(node, _dotted(node.func) or "", names) or dynamic
        elif isinstance(node, ast.Attribute) and node.attr == "__dict__":
            dynamic = True
    return sorted(names), dynamic


def instance_attrs(source: bytes, name: str) -> dict | None:
    """What instances of top-level class `name` get bound on self in its methods."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            names, dynamic = _self_attrs(node)
            return {"attrs": names, "dynamic": dynamic}
    return None


MAPPING_NAMES = ("stacked_params_mapping", "expert_params_mapping")


def _mapping_entries(value: ast.expr) -> list[tuple[str, int]]:
    """(SGLang-side name, line) of literal (param, weight, shard) tuples."""
    out = []
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.List, ast.Tuple)) and not (
                isinstance(node, ast.Tuple) and node.elts and isinstance(node.elts[0], ast.Constant)):
            stack.extend(node.elts)
        elif isinstance(node, ast.BinOp):
            stack += [node.left, node.right]
        elif isinstance(node, ast.Tuple) and len(node.elts) >= 2:
            first = node.elts[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                out.append((first.value, node.lineno))
    return out


def _details(tree: ast.Module, defs: dict) -> dict:
    """Facts only lint's checks of overlay files need, in one pass over the tree:
    calls, attribute uses, weight mappings, names bound on self, and imports
    inside functions."""
    calls = []
    attr_uses = []
    mappings = []
    fn_imports = []
    self_attrs: set[str] = set()
    dynamic = False
    stack = [(node, None, False) for node in tree.body]
    while stack:
        node, cls, in_fn = stack.pop()
        if isinstance(node, ast.ClassDef):
            cls = node.name
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if not in_fn:
                attr_uses += _attr_uses(node)
            in_fn = True
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if in_fn:
                fn_imports.append(node)
        elif isinstance(node, ast.Call):
            func = _dotted(node.func)
            if func and (func == "super().__init__" or func.split(".")[0] in defs):
                calls.append({
                    "func": func, "line": node.lineno,
                    "kwargs": [k.arg for k in node.keywords if k.arg],
                    "npos": sum(1 for a in node.args if not isinstance(a, ast.Starred)),
                    "star": any(isinstance(a, ast.Starred) for a in node.args),
                    "dstar": any(k.arg is None for k in node.keywords),
                    "enclosing": cls if func == "super().__init__" else None})
            if isinstance(node.func, ast.Attribute) and node.func.attr in (
                    "append", "extend", "insert") and (
                    _dotted(node.func.value) or "").split(".")[-1] in MAPPING_NAMES:
                # stacked_params_mapping.append((...)) / .extend([...])
                for a in node.args:
                    mappings += _mapping_entries(
                        ast.List([a]) if node.func.attr != "extend" else a)
            if cls is not None:
                dynamic = _binds(node, func or "", self_attrs) or dynamic
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)) and node.value:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = {t.id if isinstance(t, ast.Name) else getattr(t, "attr", None)
                     for t in targets}
            if names & set(MAPPING_NAMES):
                mappings += _mapping_entries(node.value)
        elif isinstance(node, ast.Attribute) and cls is not None:
            if isinstance(node.ctx, ast.Store) and isinstance(node.value, ast.Name) and (
                    node.value.id == "self"):
                self_attrs.add(node.attr)
            elif node.attr == "__dict__":
                dynamic = True
        stack.extend((child, cls, in_fn) for child in ast.iter_child_nodes(node))
    return {"calls": calls, "attr_uses": attr_uses, "mappings": mappings,
            "self_attrs": sorted(self_attrs), "self_attrs_dynamic": dynamic,
            "fn_imports": fn_imports}


def _annotation(node: ast.expr | None) -> str | None:
    """The class an annotation names: X, mod.X, "X", Optional[X]."""
    if node is None:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            node = ast.parse(node.value, mode="eval").body
        except SyntaxError:
            return None
    if isinstance(node, ast.Subscript) and (_dotted(node.value) or "").split(".")[-1] == "Optional":
        return _annotation(node.slice)
    if isinstance(node, (ast.Name, ast.Attribute)):
        return _dotted(node)
    return None


def _attr_uses(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[dict]:
    """Attributes read from annotated parameters: forward_batch.x with forward_batch: T."""
    a = fn.args
    typed = {}
    for p in a.posonlyargs + a.args + a.kwonlyargs:
        t = _annotation(p.annotation)
        if t and p.arg not in ("self", "cls"):
            typed[p.arg] = t
    if not typed:
        return []
    rebound: set[str] = set()
    guarded: set[tuple[str, str]] = set()
    body_nodes = [n for stmt in fn.body for n in ast.walk(stmt)]
    for n in body_nodes:
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            rebound.add(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            rebound.update(x.arg for x in n.args.posonlyargs + n.args.args + n.args.kwonlyargs)
        elif isinstance(n, ast.Call) and _dotted(n.func) in ("hasattr", "getattr") and len(
                n.args) >= 2 and isinstance(n.args[0], ast.Name) and isinstance(
                n.args[1], ast.Constant):
            guarded.add((n.args[0].id, n.args[1].value))
    uses = []
    seen = set()
    for n in body_nodes:
        if (isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Load)
                and isinstance(n.value, ast.Name) and n.value.id in typed
                and n.value.id not in rebound and (n.value.id, n.attr) not in guarded
                and (n.value.id, n.attr) not in seen):
            seen.add((n.value.id, n.attr))
            uses.append({"param": n.value.id, "type": typed[n.value.id], "attr": n.attr,
                         "line": n.lineno})
    return uses


def _absolute(module: str | None, level: int, current: str, is_package: bool) -> str:
    if level == 0:
        return module or ""
    parts = current.split(".")
    if not is_package:
        parts = parts[:-1]
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    base = ".".join(parts)
    return f"{base}.{module}" if module else base


def extract(source: bytes, module: str, is_package: bool, detail: bool = False) -> dict:
    """Facts of one module; {'syntax_error': ...} when it does not parse.

    detail: also the facts only an overlay file's checks need (calls,
    attribute uses, weight mappings, imports inside functions). Upstream
    modules are read for their top level only, which is most of the speed.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError) as exc:
        return {"syntax_error": f"{getattr(exc, 'msg', exc)}",
                "line": getattr(exc, "lineno", 1) or 1}
    top = _TopLevel(module, is_package)
    top.visit(tree.body)
    imports = top.imports
    out = {
        "defs": top.defs,
        "aliases": top.aliases,
        "imports": imports,
        "stars": top.stars,
        "all": top.dunder_all,
        "getattr": top.has_getattr,
        "classes": top.classes,
        "functions": top.functions,
        "entry": top.entry,
        "entry_line": top.entry_line,
        "end_line": source.count(b"\n") + 1,
    }
    if detail:
        d = _details(tree, top.defs)
        # imports inside functions matter for the registry rule
        for sub in d.pop("fn_imports"):
            imports += _import_rows(sub, module, is_package, top=False)
        out.update(d)
    return out


def _import_rows(node: ast.Import | ast.ImportFrom, module: str, is_package: bool,
                 top: bool) -> list[dict]:
    """One row per name an import statement imports."""
    if isinstance(node, ast.ImportFrom):
        mod = _absolute(node.module, node.level, module, is_package)
        return [{"module": mod, "name": a.name, "asname": a.asname,
                 "line": node.lineno, "top": top} for a in node.names]
    return [{"module": a.name, "name": None, "asname": a.asname,
             "line": node.lineno, "top": top} for a in node.names]


class _TopLevel:
    """What a module's top level defines and imports, blocks under if/try/with
    included (extract's facts, before the details)."""

    def __init__(self, module: str, is_package: bool):
        self.module, self.is_package = module, is_package
        self.defs: dict[str, str] = {}
        self.aliases: dict[str, list] = {}  # local name -> [module, name] it was imported as
        self.imports: list[dict] = []
        self.stars: list[str] = []
        self.classes: dict[str, dict] = {}
        self.functions: dict[str, dict] = {}
        self.entry: list[str] | None = None
        self.entry_line = 0
        self.dunder_all = None
        self.has_getattr = False

    def visit(self, body: list[ast.stmt], top: bool = True) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                self.defs[node.name] = "class"
                self.classes[node.name] = _class(node)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.defs[node.name] = "function"
                self.functions[node.name] = _signature(node, method=False)
                if node.name == "__getattr__":
                    self.has_getattr = True
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                self._assign(node)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                self._import(node, top)
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                for block in ("body", "orelse", "finalbody"):
                    self.visit(getattr(node, block, []) or [], top)
                for h in getattr(node, "handlers", []) or []:
                    self.visit(h.body, top)

    def _assign(self, node: ast.Assign | ast.AnnAssign | ast.AugAssign) -> None:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for t in targets:
            for n in ast.walk(t):
                if isinstance(n, ast.Name):
                    self.defs.setdefault(n.id, "variable")
            if isinstance(t, ast.Name) and t.id == "EntryClass" and node.value is not None:
                self.entry_line = node.lineno
                v = node.value
                elts = v.elts if isinstance(v, (ast.List, ast.Tuple)) else [v]
                self.entry = [_dotted(e) or "?" for e in elts]
            if isinstance(t, ast.Name) and t.id == "__all__" and isinstance(
                node.value, (ast.List, ast.Tuple)
            ):
                self.dunder_all = [e.value for e in node.value.elts
                                   if isinstance(e, ast.Constant)]

    def _import(self, node: ast.Import | ast.ImportFrom, top: bool) -> None:
        for row in _import_rows(node, self.module, self.is_package, top):
            self.imports.append(row)
            if isinstance(node, ast.Import):
                local = row["asname"] or row["module"].split(".")[0]
                self.defs.setdefault(local, "import")
                if row["asname"]:
                    self.aliases[local] = [row["module"], None]
            elif row["name"] == "*":
                self.stars.append(row["module"])
            else:
                local = row["asname"] or row["name"]
                self.defs.setdefault(local, "import")
                self.aliases[local] = [row["module"], row["name"]]


class FactsCache:
    """blob sha -> facts, in sqlite, shared by concurrent processes.

    The cache only saves time: any sqlite error (a locked or damaged
    database, a full disk) counts as a miss, and the facts are computed again.
    """

    def __init__(self, path: Path | None):
        self.db = None
        self.memory: dict[str, dict] = {}
        self.pending: dict[str, str] = {}
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self.db = sqlite3.connect(str(path), timeout=10)
                self.db.execute("PRAGMA busy_timeout = 10000")
                self.db.execute("PRAGMA journal_mode = WAL")
                self.db.execute(
                    "CREATE TABLE IF NOT EXISTS facts (key TEXT PRIMARY KEY, data TEXT)")
            except (sqlite3.Error, OSError):
                self._drop()

    def _drop(self) -> None:
        if self.db is not None:
            try:
                self.db.close()
            except sqlite3.Error:
                pass
        self.db = None

    def get(self, key: str) -> dict | None:
        return self.get_many([key]).get(key)

    def get_many(self, keys: list[str]) -> dict[str, dict]:
        """The cached facts among keys (missing keys are left out)."""
        out = {k: self.memory[k] for k in keys if k in self.memory}
        wanted = [k for k in keys if k not in out]
        if not wanted or self.db is None:
            return out
        try:
            for i in range(0, len(wanted), 500):
                chunk = wanted[i:i + 500]
                rows = self.db.execute(
                    f"SELECT key, data FROM facts WHERE key IN ({','.join('?' * len(chunk))})",
                    chunk).fetchall()
                for key, data in rows:
                    self.memory[key] = out[key] = json.loads(data)
        except (sqlite3.Error, ValueError):
            pass  # a miss: the caller computes the facts
        return out

    def put(self, key: str, data: dict) -> None:
        self.memory[key] = data
        if self.db is not None:
            self.pending[key] = json.dumps(data)

    def close(self) -> None:
        """Write what was computed, in one transaction; a failure loses only time."""
        if self.db is not None and self.pending:
            try:
                with self.db:
                    self.db.executemany("INSERT OR REPLACE INTO facts VALUES (?, ?)",
                                        list(self.pending.items()))
            except sqlite3.Error:
                pass
        self.pending = {}
        self._drop()


ENTRY_RE = re.compile(rb"^([ \t]*)EntryClass\b[^=\n]*=", re.M)


def entry_facts(source: bytes) -> dict | None:
    """A model module's EntryClass read from its text, without parsing the module.

    {"entry", "entry_line", "archs"}; None when the text alone cannot tell
    (several assignments, an indented one, a name not defined by a class
    statement here), and the caller reads the full facts instead.
    """
    found = list(ENTRY_RE.finditer(source))
    if not found:
        return {"entry": None, "entry_line": 0, "archs": []}
    m = found[0]
    if len(found) > 1 or m.group(1):
        return None
    start = m.start()
    line = source.count(b"\n", 0, start) + 1
    end, depth = m.end(), 0
    while end < len(source):  # the statement ends at a newline outside brackets
        c = source[end]
        if c in b"([{":
            depth += 1
        elif c in b")]}":
            depth -= 1
        elif c == 10 and depth <= 0 and source[end - 1] != 92:  # 92: backslash
            break
        end += 1
    try:
        stmt = ast.parse(source[start:end]).body
    except (SyntaxError, ValueError):
        return None
    if len(stmt) != 1 or not isinstance(stmt[0], (ast.Assign, ast.AnnAssign)) or (
            stmt[0].value is None):
        return None
    value = stmt[0].value
    elts = value.elts if isinstance(value, (ast.List, ast.Tuple)) else [value]
    entry = [_dotted(e) or "?" for e in elts]
    archs = []
    for written in entry:
        if "." in written:
            archs.append(written.split(".")[-1])
        elif _defines_class(source, written):
            archs.append(written)
        else:
            return None  # imported or aliased: the full facts resolve it
    return {"entry": entry, "entry_line": line, "archs": archs}


def _defines_class(source: bytes, name: str) -> bool:
    """A `class name` statement at the start of a line (the module's top level)."""
    needle = b"class " + name.encode()
    pos = source.find(needle)
    while pos != -1:
        after = source[pos + len(needle):pos + len(needle) + 1]
        if (pos == 0 or source[pos - 1] == 10) and after in (b"(", b":", b" "):
            return True
        pos = source.find(needle, pos + 1)
    return False
