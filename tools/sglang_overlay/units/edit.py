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
    add them to the MLA branch of ``ModelConfig``: the ``if``/``elif`` in
    which ``"DeepseekV2ForCausalLM" in self.hf_config.architectures`` is
    tested (however its condition is written) and that sets
    ``AttentionArch.MLA``; other MLA branches have other head dimensions.
``register-config``
    export configuration classes the overlay defines under
    ``python/sglang/srt/configs/`` from that package's ``__init__.py`` (the
    import, and ``__all__``) and add them to ``_CONFIG_REGISTRY``, in each
    release's shape: a ``{C.model_type: C}`` dict (v0.5.1 .. v0.5.4, first in
    ``srt/``, then ``srt/utils/``), a list (v0.5.5 on), the list inside a
    ``{cls.model_type: cls for cls in [...]}`` comprehension in
    ``srt/utils/hf_transformers/common.py`` (v0.5.12 on).
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


def _append_to_list(text: str, node: ast.List | ast.Dict, items: list[str]) -> str:
    """Add items (source snippets; ``key: value`` for a dict) as the last
    elements of a list or dict literal."""
    lines = text.splitlines(keepends=True)
    is_dict = isinstance(node, ast.Dict)
    elts = node.values if is_dict else node.elts
    opening, closing = ("{", "}") if is_dict else ("[", "]")
    if node.lineno == node.end_lineno:
        # a one-line literal: rewrite it exploded, one element per line
        line = lines[node.lineno - 1]
        start = len(line.encode()[: node.col_offset].decode())
        end = len(line.encode()[: node.end_col_offset].decode())
        inner = _indent(line) + "    "
        seg = lambda e: ast.get_source_segment(text, e)
        old = ([f"{seg(k)}: {seg(v)}" for k, v in zip(node.keys, node.values)] if is_dict
               else [seg(e) for e in elts])
        body = "".join(f"{inner}{s},\n" for s in old + items)
        lines[node.lineno - 1] = (line[:start] + opening + "\n" + body + _indent(line)
                                  + closing + line[end:])
        return "".join(lines)
    close = lines[node.end_lineno - 1]
    if not close.lstrip().startswith(closing):
        raise MissingAnchor(f"the literal's closing {closing} is not on its own line")
    if elts:
        last = elts[-1]
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

MLA_ANCHOR_ARCH = "DeepseekV2ForCausalLM"
MLA_ANCHOR = (
    f'the MLA branch of ModelConfig: the `if`/`elif` whose condition tests '
    f'"{MLA_ANCHOR_ARCH}" in self.hf_config.architectures and that sets '
    "self.attention_arch = AttentionArch.MLA"
)


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


def _tested(test: ast.expr) -> set[str]:
    """Every architecture a condition tests, however it is nested."""
    return {n for n in (_arch_test(x) for x in ast.walk(test)) if n}


def _mla_anchor(tree: ast.Module) -> ast.If:
    """The branch of ModelConfig in which DeepseekV2ForCausalLM is tested.

    Found by what it tests, not by its shape: upstream's condition grew
    compound operands (``or ("Pixtral..." in ... and getattr(...))``) and
    other branches set AttentionArch.MLA too (MiniCPM3's, with other head
    dimensions), so "the first all-simple MLA chain" is the wrong anchor.
    """
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ModelConfig"),
               None)
    if cls is None:
        raise MissingAnchor("class ModelConfig")
    found = [n for n in ast.walk(cls)
             if isinstance(n, ast.If) and MLA_ANCHOR_ARCH in _tested(n.test)]
    if len(found) != 1 or not _sets_mla(found[0].body):
        raise MissingAnchor(MLA_ANCHOR + (f" (found {len(found)} branches testing it)"
                                          if len(found) > 1 else ""))
    return found[0]


def _operands(test: ast.expr) -> list[ast.expr]:
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.Or):
        return test.values
    return [test]


def register_mla(text: str, archs: list[str]) -> Result:
    tree = ast.parse(text)
    chain = _mla_anchor(tree)
    present = _tested(chain.test)
    missing = [a for a in archs if a not in present]
    if not missing:
        return Result(text, [])
    ops = _operands(chain.test)
    if not any(_arch_test(o) == MLA_ANCHOR_ARCH for o in ops):
        # e.g. `if ("DeepseekV2..." in ... or ...) and flag:`; an `or` added
        # at the top would bypass the flag
        raise MissingAnchor(MLA_ANCHOR + f', with "{MLA_ANCHOR_ARCH}" as an operand of '
                            "a top-level `or`")
    lines = text.splitlines(keepends=True)
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
    # black's exploded form: `if (`, one `or` operand per line, `):`. The new
    # operands go just above the closing `):`, after any compound last operand.
    indent = _indent(lines[chain.lineno - 1])
    close = next((i for i in range(last.end_lineno - 1, chain.body[0].lineno - 1)
                  if lines[i].strip().startswith("):")), None)
    if close is None or _indent(lines[close]) != indent:
        raise MissingAnchor(MLA_ANCHOR + ", written one operand per line and closed by `):`")
    inner = indent + "    "
    lines[close:close] = [f"{inner}or {t}\n" for t in new_tests]
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


def suite_layout(read) -> tuple[str, str] | None:
    """(path, list name) of the generation suite in this tree, newest layout first."""
    for path, name in SUITES:
        if read(path) is not None:
            return path, name
    return None


# --- register-config ----------------------------------------------------------

CONFIGS_DIR = "python/sglang/srt/configs/"
CONFIGS_INIT = CONFIGS_DIR + "__init__.py"
CONFIGS_PKG = "sglang.srt.configs"
# where _CONFIG_REGISTRY lives, newest layout first: a {cls.model_type: cls
# for cls in [...]} comprehension in the hf_transformers package (v0.5.12 on),
# a list (v0.5.5 .. v0.5.10) or a {Config.model_type: Config} dict (v0.5.3,
# v0.5.4) in utils/, the dict in srt/ itself (v0.5.1, v0.5.2)
REGISTRY_FILES = (
    "python/sglang/srt/utils/hf_transformers/common.py",
    "python/sglang/srt/utils/hf_transformers_utils.py",
    "python/sglang/srt/hf_transformers_utils.py",
)
REGISTRY = "_CONFIG_REGISTRY"


def _registry_literal(tree: ast.Module) -> ast.List | ast.Dict | None:
    """The literal the registry's classes are written in, in its first assignment."""
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        if not any(isinstance(t, ast.Name) and t.id == REGISTRY for t in targets):
            continue
        if isinstance(value, (ast.List, ast.Dict)):
            return value
        if (isinstance(value, ast.DictComp) and len(value.generators) == 1
                and isinstance(value.generators[0].iter, ast.List)):
            return value.generators[0].iter
        return None
    return None


def _registered_names(node: ast.List | ast.Dict) -> set[str]:
    elts = node.values if isinstance(node, ast.Dict) else node.elts
    return {e.id for e in elts if isinstance(e, ast.Name)}


def _imported(tree: ast.Module, name: str) -> bool:
    return any(isinstance(n, (ast.Import, ast.ImportFrom))
               and any((a.asname or a.name) == name for a in n.names)
               for n in tree.body)


def _insert_after(text: str, line_no: int, new: str) -> str:
    lines = text.splitlines(keepends=True)
    lines[line_no:line_no] = [new]
    return "".join(lines)


def _add_import(text: str, tree: ast.Module, module: str, name: str) -> str:
    """`from module import name`, into upstream's `from sglang.srt.configs
    import (...)` when there is one written exploded, else on its own line after
    the last module-level import from sglang.srt.configs (or any import)."""
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    if not imports:
        raise MissingAnchor("a module-level import to add the config's import after")
    lines = text.splitlines(keepends=True)
    for n in imports:
        if (isinstance(n, ast.ImportFrom) and n.level == 0 and n.module == CONFIGS_PKG
                and module == CONFIGS_PKG and n.end_lineno > n.lineno
                and lines[n.end_lineno - 1].strip() == ")"):
            inner = _indent(lines[n.end_lineno - 2])
            lines[n.end_lineno - 1 : n.end_lineno - 1] = [f"{inner}{name},\n"]
            return "".join(lines)
    ours = [n for n in imports if isinstance(n, ast.ImportFrom) and n.level == 0
            and (n.module or "").startswith(CONFIGS_PKG)]
    after = (ours or imports)[-1].end_lineno
    return _insert_after(text, after, f"from {module} import {name}\n")


def export_configs(text: str, classes: dict[str, str]) -> Result:
    """Export classes (name -> defining module) from configs/__init__.py: the
    import, and the name in __all__ where the file has one."""
    added = []
    for name, module in classes.items():
        tree = ast.parse(text)
        if not _imported(tree, name) and not any(
                isinstance(n, ast.ClassDef) and n.name == name for n in tree.body):
            text = _add_import(text, tree, module, name)
            added.append(name)
            tree = ast.parse(text)
        all_list = _module_list(tree, "__all__")
        if all_list is not None and name not in {
                e.value for e in all_list.elts if isinstance(e, ast.Constant)}:
            text = _append_to_list(text, all_list, [f'"{name}"'])
            added.append(name)
    return Result(text, list(dict.fromkeys(added)))


def register_configs(text: str, names: list[str]) -> Result:
    """Add the classes to _CONFIG_REGISTRY, in whichever shape it has here,
    and import them from sglang.srt.configs where the file does not yet."""
    tree = ast.parse(text)
    node = _registry_literal(tree)
    if node is None:
        raise MissingAnchor(f"{REGISTRY} assigned a dict, a list or a "
                            "{cls.model_type: cls for cls in [...]} comprehension")
    missing = [n for n in names if n not in _registered_names(node)]
    added = []
    for name in missing:
        tree = ast.parse(text)
        if not _imported(tree, name):
            text = _add_import(text, tree, CONFIGS_PKG, name)
        node = _registry_literal(ast.parse(text))
        item = f"{name}.model_type: {name}" if isinstance(node, ast.Dict) else name
        text = _append_to_list(text, node, [item])
        added.append(name)
    return Result(text, added)


def find_registry(read) -> str | None:
    """The file that assigns _CONFIG_REGISTRY in this tree, newest layout first."""
    for path in REGISTRY_FILES:
        data = read(path)
        if data is None:
            continue
        try:
            tree = ast.parse(data)
        except SyntaxError:
            continue
        for n in tree.body:
            targets = n.targets if isinstance(n, ast.Assign) else \
                [n.target] if isinstance(n, ast.AnnAssign) else []
            if any(isinstance(t, ast.Name) and t.id == REGISTRY for t in targets):
                return path
    return None


# --- the unit -----------------------------------------------------------------


def plan(ctx: Context, unit: Unit) -> list[tuple[str, callable]]:
    """[(path, function text -> Result)] of this unit against this tree."""
    return plan_on(ctx.manifest, unit, ctx.stage.read)


def plan_on(manifest, unit: Unit, read) -> list[tuple[str, callable]]:
    """plan() on any tree: read(path) -> bytes or None."""
    if unit.edit == "register-config":
        return config_plan(manifest, unit, read)
    models = [manifest.model(a) for a in unit.models]
    if unit.edit == "register-multimodal":
        return [(MODEL_CONFIG, lambda t: register_multimodal(t, [m.architecture for m in models]))]
    if unit.edit == "register-mla":
        return [(MODEL_CONFIG, lambda t: register_mla(t, [m.architecture for m in models]))]
    suite = suite_layout(read)
    if suite is None:
        raise MissingAnchor(
            "the generation suite (" + " or ".join(p for p, _ in SUITES) + ")"
        )
    path, list_name = suite
    return [(path, lambda t: add_model_cases(t, list_name, models))]


def config_plan(manifest, unit: Unit, read) -> list[tuple[str, callable]]:
    """register-config: the export in configs/__init__.py, then the registry."""
    defined = manifest.overlay_configs()
    classes = {}
    for name in unit.configs:
        if name not in defined:
            raise MissingAnchor(f"class {name} in the overlay's files under {CONFIGS_DIR}")
        classes[name] = defined[name][1]
    registry = find_registry(read)
    if registry is None:
        raise MissingAnchor(f"{REGISTRY} in " + " or ".join(REGISTRY_FILES))
    return [(CONFIGS_INIT, lambda t: export_configs(t, classes)),
            (registry, lambda t: register_configs(t, list(classes)))]


def apply(ctx: Context, unit: Unit) -> Outcome:
    try:
        steps = plan(ctx, unit)
    except MissingAnchor as exc:
        return Outcome(CONFLICT, [], f"missing anchor: {exc}")
    paths = [p for p, _ in steps]
    results = []
    for path, edit in steps:
        data = ctx.stage.read(path)
        if data is None:
            return Outcome(CONFLICT, [path], f"missing anchor: file {path}")
        try:
            result = edit(data.decode("utf-8"))
        except MissingAnchor as exc:
            return Outcome(CONFLICT, [path], f"missing anchor in {path}: {exc}")
        except SyntaxError as exc:
            return Outcome(CONFLICT, [path], f"cannot parse {path}: {exc}")
        ast.parse(result.text)  # the edit must leave valid Python
        results.append((path, result))
    if not any(r.added for _, r in results):
        return Outcome(ALREADY_UPSTREAM, paths, "every entry is already there")
    for path, result in results:
        if result.added:
            mode = (ctx.stage.entry(path) or ("100644", ""))[0]
            ctx.stage.write(path, result.text.encode("utf-8"), mode)
    added = list(dict.fromkeys(a for _, r in results for a in r.added))
    return Outcome(APPLIED, [p for p, r in results if r.added], "added " + ", ".join(added))


def already_upstream(manifest, unit: Unit, read) -> bool:
    """Whether this tree already has every entry the unit adds."""
    try:
        steps = plan_on(manifest, unit, read)
        return all(read(path) is not None and not fn(read(path).decode("utf-8")).added
                   for path, fn in steps)
    except (MissingAnchor, SyntaxError):
        return False


# --- reading the registrations back (used by lint) ---------------------------


def multimodal_archs(text: str) -> set[str] | None:
    """Architectures in multimodal_model_archs; None if the list is gone."""
    node = _module_list(ast.parse(text), "multimodal_model_archs")
    if node is None:
        return None
    return {e.value for e in node.elts if isinstance(e, ast.Constant)}


def registered_configs(text: str) -> tuple[set[str], set[str]]:
    """(class names, literal model_type keys) in this file's _CONFIG_REGISTRY:
    the literal, and `_CONFIG_REGISTRY["x"] = Cls` anywhere in the module."""
    tree = ast.parse(text)
    node = _registry_literal(tree)
    names = _registered_names(node) if node is not None else set()
    keys = set()
    if isinstance(node, ast.Dict):
        keys |= {k.value for k in node.keys if isinstance(k, ast.Constant)}
    for n in ast.walk(tree):
        if isinstance(n, ast.Assign) and len(n.targets) == 1:
            t = n.targets[0]
            if (isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name)
                    and t.value.id == REGISTRY):
                if isinstance(t.slice, ast.Constant) and isinstance(t.slice.value, str):
                    keys.add(t.slice.value)
                if isinstance(n.value, ast.Name):
                    names.add(n.value.id)
    return names, keys


def mla_archs(text: str) -> set[str]:
    """Architectures tested in ModelConfig's MLA branch (DeepSeek's); empty if
    that branch cannot be identified."""
    try:
        return _tested(_mla_anchor(ast.parse(text)).test)
    except MissingAnchor:
        return set()
