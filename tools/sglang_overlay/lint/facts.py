"""What lint needs to know about one module, read with ``ast`` only.

Facts are plain JSON-able dicts, cached by blob sha (the same file in ten
releases is parsed once), in a small sqlite database in the cache.
"""

from __future__ import annotations

import ast
import json
import sqlite3
from pathlib import Path

FACTS_VERSION = "5"  # 5: classes carry their model_type
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
    if method and positional and positional[0] in ("self", "cls"):
        positional = positional[1:]
    return {
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
    return {
        "bases": [b for b in (_dotted(x) for x in cls.bases) if b],
        "methods": methods,
        "dataclass": _is_dataclass(cls),
        "fields": fields,
        "model_type": model_type,  # a PretrainedConfig's `model_type = "..."`
        "line": cls.lineno,
    }


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


def extract(source: bytes, module: str, is_package: bool) -> dict:
    """Facts of one module; {'syntax_error': ...} when it does not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError) as exc:
        return {"syntax_error": f"{getattr(exc, 'msg', exc)}",
                "line": getattr(exc, "lineno", 1) or 1}
    defs: dict[str, str] = {}
    aliases: dict[str, list] = {}  # local name -> [module, name] it was imported as
    imports: list[dict] = []
    stars: list[str] = []
    classes: dict[str, dict] = {}
    functions: dict[str, dict] = {}
    entry: list[str] | None = None
    entry_line = 0
    dunder_all = None
    has_getattr = False

    def visit_block(body, top: bool):
        nonlocal entry, entry_line, dunder_all, has_getattr
        for node in body:
            if isinstance(node, ast.ClassDef):
                defs[node.name] = "class"
                classes[node.name] = _class(node)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                defs[node.name] = "function"
                functions[node.name] = _signature(node, method=False)
                if node.name == "__getattr__":
                    has_getattr = True
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    for n in ast.walk(t):
                        if isinstance(n, ast.Name):
                            defs.setdefault(n.id, "variable")
                    if isinstance(t, ast.Name) and t.id == "EntryClass" and node.value is not None:
                        entry_line = node.lineno
                        v = node.value
                        elts = v.elts if isinstance(v, (ast.List, ast.Tuple)) else [v]
                        entry = [_dotted(e) or "?" for e in elts]
                    if isinstance(t, ast.Name) and t.id == "__all__" and isinstance(
                        node.value, (ast.List, ast.Tuple)
                    ):
                        dunder_all = [e.value for e in node.value.elts
                                      if isinstance(e, ast.Constant)]
            elif isinstance(node, ast.Import):
                for a in node.names:
                    local = a.asname or a.name.split(".")[0]
                    defs.setdefault(local, "import")
                    if a.asname:
                        aliases[local] = [a.name, None]
                    imports.append({"module": a.name, "name": None, "asname": a.asname,
                                    "line": node.lineno, "top": top})
            elif isinstance(node, ast.ImportFrom):
                mod = _absolute(node.module, node.level, module, is_package)
                for a in node.names:
                    imports.append({"module": mod, "name": a.name, "asname": a.asname,
                                    "line": node.lineno, "top": top})
                    if a.name == "*":
                        stars.append(mod)
                        continue
                    local = a.asname or a.name
                    defs.setdefault(local, "import")
                    aliases[local] = [mod, a.name]
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                for block in ("body", "orelse", "finalbody"):
                    visit_block(getattr(node, block, []) or [], top)
                for h in getattr(node, "handlers", []) or []:
                    visit_block(h.body, top)

    visit_block(tree.body, True)
    # imports inside functions matter for the registry rule
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                if isinstance(sub, ast.ImportFrom):
                    mod = _absolute(sub.module, sub.level, module, is_package)
                    for a in sub.names:
                        imports.append({"module": mod, "name": a.name, "asname": a.asname,
                                        "line": sub.lineno, "top": False})
                elif isinstance(sub, ast.Import):
                    for a in sub.names:
                        imports.append({"module": a.name, "name": None, "asname": a.asname,
                                        "line": sub.lineno, "top": False})

    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and any(k.arg for k in node.keywords):
            func = _dotted(node.func)
            if func:
                calls.append({"func": func, "kwargs": [k.arg for k in node.keywords if k.arg],
                              "line": node.lineno, "enclosing": None})
    # which class a super().__init__ call is in
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        for sub in ast.walk(cls):
            if isinstance(sub, ast.Call) and _dotted(sub.func) == "super().__init__":
                for c in calls:
                    if c["line"] == sub.lineno and c["func"] == "super().__init__":
                        c["enclosing"] = cls.name

    return {
        "defs": defs,
        "aliases": aliases,
        "imports": imports,
        "stars": stars,
        "all": dunder_all,
        "getattr": has_getattr,
        "classes": classes,
        "functions": functions,
        "entry": entry,
        "entry_line": entry_line,
        "calls": calls,
    }


class FactsCache:
    """blob sha -> facts, in sqlite, shared by concurrent processes."""

    def __init__(self, path: Path | None):
        self.db = None
        self.memory: dict[str, dict] = {}
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self.db = sqlite3.connect(str(path), timeout=30)
                self.db.execute(
                    "CREATE TABLE IF NOT EXISTS facts (key TEXT PRIMARY KEY, data TEXT)")
            except sqlite3.Error:
                self.db = None

    def get(self, key: str) -> dict | None:
        if key in self.memory:
            return self.memory[key]
        if self.db is None:
            return None
        row = self.db.execute("SELECT data FROM facts WHERE key = ?", (key,)).fetchone()
        if row:
            self.memory[key] = json.loads(row[0])
            return self.memory[key]
        return None

    def put(self, key: str, data: dict) -> None:
        self.memory[key] = data
        if self.db is not None:
            try:
                self.db.execute("INSERT OR REPLACE INTO facts VALUES (?, ?)",
                                (key, json.dumps(data)))
            except sqlite3.Error:
                pass

    def close(self) -> None:
        if self.db is not None:
            try:
                self.db.commit()
            except sqlite3.Error:
                pass
            self.db.close()
            self.db = None
