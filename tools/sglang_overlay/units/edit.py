"""`edit` units: declarative edits to upstream files, done on the syntax tree.

An edit finds its anchor with ``ast`` (a list assigned to a name, a branch of
an if/elif chain), not by line numbers or context text, so it survives
upstream moving code around. The change itself is spliced in as whole lines,
written the way black writes them, so a black-formatted file stays
black-formatted and nothing else in the file moves.

Operations (``edit = ...`` in the manifest):

``register-multimodal``
    add the architectures to ``multimodal_model_archs``, the list behind
    ``is_multimodal_model`` in ``python/sglang/srt/configs/model_config.py``.
``register-mla``
    add them to the MLA branch of ``ModelConfig``: the chain of
    ``"X" in self.hf_config.architectures`` that sets ``AttentionArch.MLA``.
``add-model-case``
    add ``ModelCase(...)`` entries to upstream's generation suite:
    ``ALL_MODELS`` in ``test/registered/models/test_generation_models.py``
    (newer releases) or ``ALL_OTHER_MODELS`` in
    ``test/srt/models/test_generation_models.py`` (older ones).

Each reports ``already-upstream`` when every entry is there, and ``conflict``
naming the missing anchor when upstream removed the structure.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from ..manifest import Model, Unit
from ..suite import SUITE_LISTS
from . import ALREADY_UPSTREAM, APPLIED, CONFLICT, Context, Outcome

LINE_LENGTH = 88  # black's default, which SGLang uses
MODEL_CONFIG = "python/sglang/srt/configs/model_config.py"
SUITES = tuple(SUITE_LISTS.items())  # (path, model list), newest first: suite.LAYOUTS


class MissingAnchor(Exception):
    pass


@dataclass
class Result:
    text: str
    added: list[str]


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _module_list(tree: ast.Module, name: str) -> ast.List | None:
    for node in tree.body:
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        for t in targets:
            if isinstance(t, ast.Name) and t.id == name and isinstance(node.value, ast.List):
                return node.value
    return None


def _append_to_list(text: str, node: ast.List, items: list[str]) -> str:
    """Add items (source snippets) as the last elements of a list literal."""
    lines = text.splitlines(keepends=True)
    if node.lineno == node.end_lineno:
        # a one-line list: rewrite it exploded, one element per line
        line = lines[node.lineno - 1]
        start = len(line.encode()[: node.col_offset].decode())
        end = len(line.encode()[: node.end_col_offset].decode())
        inner = _indent(line) + "    "
        old = [ast.get_source_segment(text, e) for e in node.elts]
        body = "".join(f"{inner}{s},\n" for s in old + items)
        lines[node.lineno - 1] = line[:start] + "[\n" + body + _indent(line) + "]" + line[end:]
        return "".join(lines)
    close = lines[node.end_lineno - 1]
    if not close.lstrip().startswith("]"):
        raise MissingAnchor("the list's closing bracket is not on its own line")
    if node.elts:
        last = node.elts[-1]
        inner = _indent(lines[last.lineno - 1]) if last.lineno > node.lineno else _indent(close) + "    "
        end_line = lines[last.end_lineno - 1]
        cut = len(end_line.encode()[: last.end_col_offset].decode())
        rest = end_line[cut:]
        if not rest.lstrip().startswith(","):
            lines[last.end_lineno - 1] = end_line[:cut] + "," + rest
    else:
        inner = _indent(close) + "    "
    new = [_fit(inner, item) for item in items]
    lines[node.end_lineno - 1 : node.end_lineno - 1] = new
    return "".join(lines)


def _fit(indent: str, item: str) -> str:
    """One list element, wrapped the way black would at 88 columns."""
    one = f"{indent}{item},\n"
    if len(one) - 1 <= LINE_LENGTH or "(" not in item:
        return one
    # split a call: first the arguments on one indented line, else one per line
    func, _, args = item.partition("(")
    args = args[:-1]
    inner = indent + "    "
    if len(inner) + len(args) <= LINE_LENGTH:
        return f"{indent}{func}(\n{inner}{args}\n{indent}),\n"
    parts = _split_args(args)
    body = "".join(f"{inner}{p},\n" for p in parts)
    return f"{indent}{func}(\n{body}{indent}),\n"


def _split_args(args: str) -> list[str]:
    call = ast.parse(f"f({args})", mode="eval").body
    src = f"f({args})"
    return [ast.get_source_segment(src, a) for a in [*call.args, *call.keywords]]


# --- register-multimodal ----------------------------------------------------


def register_multimodal(text: str, archs: list[str]) -> Result:
    tree = ast.parse(text)
    if not any(isinstance(n, ast.FunctionDef) and n.name == "is_multimodal_model"
               for n in tree.body):
        raise MissingAnchor("function is_multimodal_model")
    node = _module_list(tree, "multimodal_model_archs")
    if node is None:
        raise MissingAnchor("list multimodal_model_archs")
    present = {e.value for e in node.elts if isinstance(e, ast.Constant)}
    missing = [a for a in archs if a not in present]
    if not missing:
        return Result(text, [])
    return Result(_append_to_list(text, node, [f'"{a}"' for a in missing]), missing)


# --- register-mla -------------------------------------------------------------


def _arch_test(node: ast.expr) -> str | None:
    """'X' for a test of the form  "X" in self.hf_config.architectures."""
    if (
        isinstance(node, ast.Compare)
        and len(node.ops) == 1
        and isinstance(node.ops[0], ast.In)
        and isinstance(node.left, ast.Constant)
        and isinstance(node.left.value, str)
        and ast.unparse(node.comparators[0]) == "self.hf_config.architectures"
    ):
        return node.left.value
    return None


def _sets_mla(body: list[ast.stmt]) -> bool:
    for stmt in body:
        if (
            isinstance(stmt, ast.Assign)
            and len(stmt.targets) == 1
            and ast.unparse(stmt.targets[0]) == "self.attention_arch"
            and ast.unparse(stmt.value) == "AttentionArch.MLA"
        ):
            return True
    return False


def _mla_branches(tree: ast.Module) -> list[ast.If]:
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ModelConfig"), None)
    if cls is None:
        raise MissingAnchor("class ModelConfig")
    return [n for n in ast.walk(cls) if isinstance(n, ast.If) and _sets_mla(n.body)]


def _operands(test: ast.expr) -> list[ast.expr] | None:
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.Or):
        return test.values
    return [test]


def register_mla(text: str, archs: list[str]) -> Result:
    tree = ast.parse(text)
    branches = _mla_branches(tree)
    present: set[str] = set()
    chain: ast.If | None = None
    for br in branches:
        ops = _operands(br.test)
        names = [_arch_test(o) for o in ops]
        present.update(n for n in names if n)
        if chain is None and all(names):
            chain = br
    missing = [a for a in archs if a not in present]
    if not missing:
        return Result(text, [])
    if chain is None:
        raise MissingAnchor(
            'the MLA branch of ModelConfig (an `if "X" in self.hf_config.architectures'
            ' or ...:` that sets self.attention_arch = AttentionArch.MLA)'
        )
    lines = text.splitlines(keepends=True)
    ops = _operands(chain.test)
    new_tests = [f'"{a}" in self.hf_config.architectures' for a in missing]
    first, last = ops[0], ops[-1]
    if first.lineno == chain.lineno and last.end_lineno == chain.lineno:
        # `if "A" in ...:` on one line: rewrite it the way black would wrap it
        line = lines[chain.lineno - 1]
        indent = _indent(line)
        keyword = line.lstrip().split(" ", 1)[0]  # "if" or "elif"
        end = len(line.encode()[: last.end_col_offset].decode())
        tail = line[end:].rstrip("\n")  # ":" and any comment
        old = [ast.get_source_segment(text, o) for o in ops]
        joined = " or ".join(old + new_tests)
        inner = indent + "    "
        if len(f"{indent}{keyword} {joined}{tail}") <= LINE_LENGTH:
            head = f"{indent}{keyword} {joined}"
        elif len(inner + joined) <= LINE_LENGTH:
            head = f"{indent}{keyword} (\n{inner}{joined}\n{indent})"
        else:
            body = f"{inner}{old[0]}\n" + "".join(
                f"{inner}or {t}\n" for t in old[1:] + new_tests
            )
            head = f"{indent}{keyword} (\n{body}{indent})"
        lines[chain.lineno - 1] = head + tail + "\n"
        return Result("".join(lines), missing)
    inner = _indent(lines[last.end_lineno - 1])
    if not lines[last.lineno - 1].lstrip().startswith(("or ", '"')):
        raise MissingAnchor("the MLA branch's condition is not one test per line")
    lines[last.end_lineno : last.end_lineno] = [f"{inner}or {t}\n" for t in new_tests]
    return Result("".join(lines), missing)


# --- add-model-case -----------------------------------------------------------


def _case_source(model: Model) -> str:
    args = [f'"{model.hf_id}"'] + [f"{k}={v!r}" for k, v in model.case]
    return f"ModelCase({', '.join(args)})"


def add_model_cases(text: str, list_name: str, models: list[Model]) -> Result:
    tree = ast.parse(text)
    node = _module_list(tree, list_name)
    if node is None:
        raise MissingAnchor(f"list {list_name}")
    present = set()
    for n in ast.walk(tree):
        if (isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                and n.func.id == "ModelCase" and n.args
                and isinstance(n.args[0], ast.Constant)):
            present.add(n.args[0].value)
    missing = [m for m in models if m.hf_id not in present]
    if not missing:
        return Result(text, [])
    items = [_case_source(m) for m in missing]
    return Result(_append_to_list(text, node, items), [m.hf_id for m in missing])


def find_suite(read) -> tuple[str, str] | None:
    """(path, list name) of the generation suite in this tree, newest layout first."""
    for path, name in SUITES:
        if read(path) is not None:
            return path, name
    return None


# --- the unit -----------------------------------------------------------------


def plan(ctx: Context, unit: Unit) -> tuple[str, callable]:
    """(path, function text -> Result) for this unit against this tree."""
    models = [ctx.manifest.model(a) for a in unit.models]
    if unit.edit == "register-multimodal":
        return MODEL_CONFIG, lambda t: register_multimodal(t, [m.architecture for m in models])
    if unit.edit == "register-mla":
        return MODEL_CONFIG, lambda t: register_mla(t, [m.architecture for m in models])
    suite = find_suite(ctx.stage.read)
    if suite is None:
        raise MissingAnchor(
            "the generation suite (" + " or ".join(p for p, _ in SUITES) + ")"
        )
    path, list_name = suite
    return path, lambda t: add_model_cases(t, list_name, models)


def apply(ctx: Context, unit: Unit) -> Outcome:
    try:
        path, edit = plan(ctx, unit)
    except MissingAnchor as exc:
        return Outcome(CONFLICT, [], f"missing anchor: {exc}")
    data = ctx.stage.read(path)
    if data is None:
        return Outcome(CONFLICT, [path], f"missing anchor: file {path}")
    text = data.decode("utf-8")
    try:
        result = edit(text)
    except MissingAnchor as exc:
        return Outcome(CONFLICT, [path], f"missing anchor in {path}: {exc}")
    except SyntaxError as exc:
        return Outcome(CONFLICT, [path], f"cannot parse {path}: {exc}")
    if not result.added:
        return Outcome(ALREADY_UPSTREAM, [path], "every entry is already there")
    ast.parse(result.text)  # the edit must leave valid Python
    mode = (ctx.stage.entry(path) or ("100644", ""))[0]
    ctx.stage.write(path, result.text.encode("utf-8"), mode)
    return Outcome(APPLIED, [path], "added " + ", ".join(result.added))


# --- reading the registrations back (used by lint) ---------------------------


def multimodal_archs(text: str) -> set[str] | None:
    """Architectures in multimodal_model_archs; None if the list is gone."""
    node = _module_list(ast.parse(text), "multimodal_model_archs")
    if node is None:
        return None
    return {e.value for e in node.elts if isinstance(e, ast.Constant)}


def mla_archs(text: str) -> set[str]:
    """Architectures that ModelConfig's MLA branches name."""
    out: set[str] = set()
    try:
        branches = _mla_branches(ast.parse(text))
    except MissingAnchor:
        return out
    for br in branches:
        for op in _operands(br.test):
            for node in ast.walk(op):
                name = _arch_test(node) if isinstance(node, ast.Compare) else None
                if name:
                    out.add(name)
    return out
