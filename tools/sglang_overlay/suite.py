"""SGLang's generation-model suite: finding it, running one model, reading its output.

Upstream compares SGLang with Hugging Face in
``test/srt/models/test_generation_models.py`` (``ALL_OTHER_MODELS``, run by
``TestGenerationModels.test_others``; older releases) or
``test/registered/models/test_generation_models.py`` (``ALL_MODELS``, run by
``TestGenerationModels.test_all_models``; newer ones). Which one a checkout
has is decided by the files present and by reading them with ``ast`` (the test
method that exists and the list it loops over), never by version number.

Each model runs alone (``ONLY_RUN=<hf id>``) in its own process, under pytest
with ``--junitxml`` when the target interpreter has pytest, else under
``python -m unittest`` with a JUnit XML file written here from its output. The
full log is kept. The suite's own output gives the numbers: per prompt
``prefill logprobs max_diff tensor(0.0123)`` and ``decode logprobs max_diff
tensor(0.0045)``, and once per run ``rouge_l_scores=[1.0, 0.96, ...]``.

Nothing here imports torch or sglang; the target interpreter is only ever
run as a subprocess.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
import shlex
import subprocess
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BadInput, Findings

SUITE_FILE = "test_generation_models.py"
# Newest layout first: (path in the checkout, test method, model list).
LAYOUTS = (
    ("test/registered/models/" + SUITE_FILE, "test_all_models", "ALL_MODELS"),
    ("test/srt/models/" + SUITE_FILE, "test_others", "ALL_OTHER_MODELS"),
)
SUITE_LISTS = {rel: list_name for rel, _, list_name in LAYOUTS}  # path -> model list
TEST_CLASS = "TestGenerationModels"
CASE_CLASS = "ModelCase"
TOLERANCES = ("prefill_tolerance", "decode_tolerance", "rouge_l_tolerance")

PASSED, FAILED, ERROR = "passed", "failed", "error"
RUNNER_GPU = "gpu"
RUNNER_STANDIN = "cpu-standin"

# Environment every model run gets, besides ONLY_RUN:
#  - SGLANG_IS_IN_CI=false: with it true, test_others returns at once and
#    test_all_models is skipped, so nothing would be compared;
#  - unbuffered output, so the log interleaves as it happened;
#  - no bytecode files, so the patched checkout stays clean.
RUN_ENV = {
    "SGLANG_IS_IN_CI": "false",
    "PYTHONUNBUFFERED": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
}


# --- finding and reading the suite ------------------------------------------


@dataclass
class Case:
    hf_id: str
    fields: dict[str, Any]  # every ModelCase field, defaults filled in

    @property
    def tolerances(self) -> dict[str, Any]:
        return {k.removesuffix("_tolerance"): self.fields.get(k) for k in TOLERANCES}


@dataclass
class Suite:
    path: Path  # the suite file
    rel: str  # its path in the checkout (or its name, for a stand-in)
    test_class: str
    test_method: str
    list_name: str
    cases: dict[str, Case]

    @property
    def module(self) -> str:
        return self.path.stem

    def to_json(self) -> dict:
        return {"path": self.rel, "test": f"{self.test_class}.{self.test_method}",
                "list": self.list_name}


def find_suite(checkout: Path) -> Suite:
    """The generation suite of a patched checkout, whichever layout it has."""
    present = [(rel, m, n) for rel, m, n in LAYOUTS if (checkout / rel).is_file()]
    if not present:
        raise BadInput(
            f"{checkout}: no generation suite (looked for "
            + " and ".join(rel for rel, _, _ in LAYOUTS) + ")",
            "pass --worktree the checkout `overlay apply` made",
        )
    problems = []
    for rel, _, _ in present:
        try:
            return load_suite(checkout / rel, rel)
        except Findings as exc:
            problems.append(exc.message)
    raise Findings("; ".join(problems),
                   "upstream changed the suite's shape; run it by hand or update sglang-overlay")


def load_suite(path: Path, rel: str | None = None) -> Suite:
    """Read a suite file with ast: its test class, test method, model list and cases."""
    rel = rel or path.name
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError) as exc:
        raise Findings(f"{rel}: cannot read it ({exc})", "check the checkout") from None
    lists = _module_lists(tree)
    cls = _test_class(tree)
    if cls is None:
        raise Findings(f"{rel}: no class {TEST_CLASS} with test_all_models or test_others",
                       "upstream changed the suite's shape")
    method = next((name for _, name, _ in LAYOUTS if _method(cls, name)), None)
    list_name = _iterated_list(_method(cls, method), lists)
    if list_name is None:
        list_name = next((n for _, _, n in LAYOUTS if n in lists), None)
    if list_name is None:
        raise Findings(f"{rel}: {cls.name}.{method} loops over no module-level model list",
                       "upstream changed the suite's shape")
    defaults = _case_defaults(tree)
    cases: dict[str, Case] = {}
    for call in _list_calls(lists, list_name, set()):
        case = _case(call, defaults)
        if case is not None and case.hf_id not in cases:
            cases[case.hf_id] = case
    return Suite(path=path.resolve(), rel=rel, test_class=cls.name, test_method=method,
                 list_name=list_name, cases=cases)


def _module_lists(tree: ast.Module) -> dict[str, ast.List]:
    out = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) and node.value else [])
        for t in targets:
            if isinstance(t, ast.Name) and isinstance(node.value, ast.List):
                out[t.id] = node.value
    return out


def _method(cls: ast.ClassDef, name: str | None) -> ast.FunctionDef | None:
    return next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == name),
                None)


def _test_class(tree: ast.Module) -> ast.ClassDef | None:
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    usable = [c for c in classes if any(_method(c, m) for _, m, _ in LAYOUTS)]
    named = [c for c in usable if c.name == TEST_CLASS]
    return (named or usable or [None])[0]


def _iterated_list(method: ast.FunctionDef, lists: dict[str, ast.List]) -> str | None:
    for node in ast.walk(method):
        if isinstance(node, ast.For) and isinstance(node.iter, ast.Name) \
                and node.iter.id in lists:
            return node.iter.id
    return None


def _literal(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        return ast.unparse(node)


def _case_defaults(tree: ast.Module) -> list[tuple[str, Any]]:
    """The ModelCase dataclass's fields in order, with their literal defaults."""
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == CASE_CLASS),
               None)
    fields_: list[tuple[str, Any]] = []
    for node in cls.body if cls else []:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            fields_.append((node.target.id, _literal(node.value) if node.value else None))
    return fields_


def _list_calls(lists: dict[str, ast.List], name: str, seen: set[str]):
    """The ModelCase(...) calls of a list, with *OTHER_LIST entries expanded."""
    if name in seen or name not in lists:
        return
    seen.add(name)
    for elt in lists[name].elts:
        if isinstance(elt, ast.Starred) and isinstance(elt.value, ast.Name):
            yield from _list_calls(lists, elt.value.id, seen)
        elif isinstance(elt, ast.Call) and isinstance(elt.func, ast.Name) \
                and elt.func.id == CASE_CLASS:
            yield elt


def _case(call: ast.Call, defaults: list[tuple[str, Any]]) -> Case | None:
    values = dict(defaults)
    names = [n for n, _ in defaults] or ["model_path"]
    for i, arg in enumerate(call.args):
        if i < len(names):
            values[names[i]] = _literal(arg)
    for kw in call.keywords:
        if kw.arg:
            values[kw.arg] = _literal(kw.value)
    hf_id = values.get("model_path")
    if not isinstance(hf_id, str):
        return None
    return Case(hf_id=hf_id, fields=values)


# --- the suite's output --------------------------------------------------------

_NUM = r"[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|nan|inf)"
_MAX_DIFF = {
    kind: re.compile(rf"\b{kind} logprobs max_diff\s+(?:tensor\(\s*)?({_NUM})")
    for kind in ("prefill", "decode")
}
_ROUGE = re.compile(r"\brouge_l_scores=\[([^\]]*)\]")
_NP_SCALAR = re.compile(r"np\.float\d+\(([^)]*)\)")


@dataclass
class Metrics:
    prefill: list[float] = field(default_factory=list)  # one max diff per prompt
    decode: list[float] = field(default_factory=list)
    rouge_l: list[float] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.prefill or self.decode or self.rouge_l)

    @property
    def max_prefill(self) -> float | None:
        return _max(self.prefill)

    @property
    def max_decode(self) -> float | None:
        return _max(self.decode)

    @property
    def min_rouge_l(self) -> float | None:
        return min(self.rouge_l, key=lambda x: -math.inf if math.isnan(x) else x) \
            if self.rouge_l else None


def _max(values: list[float]) -> float | None:
    if not values:
        return None
    if any(math.isnan(v) for v in values):
        return math.nan
    return max(values)


def parse_output(text: str) -> Metrics:
    """The max logprob differences and ROUGE-L scores the suite printed."""
    m = Metrics()
    for line in text.splitlines():
        for kind, rx in _MAX_DIFF.items():
            hit = rx.search(line)
            if hit:
                getattr(m, kind).append(float(hit.group(1)))
        hit = _ROUGE.search(line)
        if hit:
            inner = _NP_SCALAR.sub(r"\1", hit.group(1))
            m.rouge_l.extend(float(x) for x in re.findall(_NUM, inner))
    return m


def json_number(x: float | None) -> float | str | None:
    """A float for JSON; NaN and infinities as strings (JSON has no such numbers)."""
    if x is None or math.isfinite(x):
        return x
    return str(x)


# --- the target interpreter ------------------------------------------------------

_PROBE = r"""
import importlib.util, json, sys
import importlib.metadata as md
info = {"python": sys.version.split()[0],
        "pytest": importlib.util.find_spec("pytest") is not None}
for dist in ("sglang", "torch"):
    try:
        info[dist] = md.version(dist)
    except md.PackageNotFoundError:
        info[dist] = None
if "--cuda" in sys.argv:
    try:
        import torch
        info["cuda"] = bool(torch.cuda.is_available())
        info["gpu"] = torch.cuda.get_device_name(0) if info["cuda"] else None
    except Exception as exc:
        info["cuda"] = False
        info["torch_error"] = f"{type(exc).__name__}: {exc}"
print("OVERLAY-PROBE " + json.dumps(info))
"""


@dataclass
class Probe:
    python: str
    info: dict

    @property
    def has_pytest(self) -> bool:
        return bool(self.info.get("pytest"))

    @property
    def gpu(self) -> str | None:
        return self.info.get("gpu")


def probe(python: str, cuda: bool) -> Probe:
    """What the target interpreter has (pytest, sglang, torch; CUDA if asked)."""
    argv = [python, "-c", _PROBE] + (["--cuda"] if cuda else [])
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    except OSError as exc:
        raise BadInput(f"--python {python}: cannot run it ({exc.strerror})",
                       "pass the interpreter of the environment with the patched sglang")
    for line in r.stdout.splitlines():
        if line.startswith("OVERLAY-PROBE "):
            return Probe(python, json.loads(line[len("OVERLAY-PROBE "):]))
    last = (r.stderr.strip().splitlines() or ["no output"])[-1]
    raise BadInput(f"--python {python}: is not a working Python interpreter ({last})",
                   "pass the interpreter of the environment with the patched sglang")


# --- running one model -------------------------------------------------------------


@dataclass
class Invocation:
    hf_id: str
    mode: str  # "pytest" or "unittest"
    cwd: Path
    env: dict[str, str]  # set on top of the caller's environment
    argv: list[str]
    log: Path
    junit: Path
    suite: Suite

    def shell(self) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return f"cd {shlex.quote(str(self.cwd))} && {env} {shlex.join(self.argv)}"

    def to_json(self) -> dict:
        return {"model": self.hf_id, "mode": self.mode, "cwd": str(self.cwd),
                "env": self.env, "argv": self.argv, "log": str(self.log),
                "junit": str(self.junit), "shell": self.shell()}


def file_stem(hf_id: str) -> str:
    """A file name (without suffix) for a model id: org/name -> org--name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "--", hf_id).strip("-") or "model"


def invocation(suite: Suite, hf_id: str, python: str, out_dir: Path,
               mode: str = "pytest") -> Invocation:
    """The command that runs hf_id alone: cd <suite dir> && ONLY_RUN=... python -m ..."""
    base = out_dir / file_stem(hf_id)
    log, junit = base.with_suffix(".log"), base.with_suffix(".junit.xml")
    if mode == "pytest":
        argv = [python, "-m", "pytest",
                f"{suite.path.name}::{suite.test_class}::{suite.test_method}",
                "-p", "no:cacheprovider", "-s", "-v", f"--junitxml={junit}"]
    elif mode == "unittest":
        argv = [python, "-m", "unittest", "-v",
                f"{suite.module}.{suite.test_class}.{suite.test_method}"]
    else:
        raise ValueError(mode)
    env = {"ONLY_RUN": hf_id, **RUN_ENV}
    return Invocation(hf_id, mode, suite.path.parent, env, argv, log, junit, suite)


@dataclass
class ModelOutcome:
    hf_id: str
    status: str
    detail: str
    metrics: Metrics
    duration: float
    returncode: int | None
    invocation: Invocation


def run(inv: Invocation, timeout: float | None = None) -> ModelOutcome:
    """Run one model, keep its full log and JUnit XML, and read the numbers back."""
    inv.log.parent.mkdir(parents=True, exist_ok=True)
    for stale in (inv.log, inv.junit):
        stale.unlink(missing_ok=True)
    env = {**os.environ, **inv.env}
    start = time.monotonic()
    rc: int | None
    with open(inv.log, "w", encoding="utf-8") as log:
        log.write(f"# {inv.shell()}\n")
        log.flush()
        try:
            rc = subprocess.run(inv.argv, cwd=inv.cwd, env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = None
    duration = time.monotonic() - start
    text = inv.log.read_text(encoding="utf-8", errors="replace")
    if inv.mode == "unittest":
        write_unittest_junit(inv, text, rc, duration)
    metrics = parse_output(text)
    status, detail = judge(inv, rc, metrics)
    return ModelOutcome(inv.hf_id, status, detail, metrics, duration, rc, inv)


def judge(inv: Invocation, rc: int | None, metrics: Metrics) -> tuple[str, str]:
    """passed / failed / error, from the JUnit XML first, then the exit code."""
    if rc is None:
        return ERROR, "timed out"
    try:
        cases = list(ET.parse(inv.junit).getroot().iter("testcase"))
    except (OSError, ET.ParseError):
        return ERROR, f"the test process exited with {rc} and wrote no JUnit XML"
    if not cases:
        return ERROR, f"no test ran ({inv.suite.test_class}.{inv.suite.test_method} not collected)"
    for tag, status in (("error", ERROR), ("failure", FAILED)):
        for case in cases:
            node = case.find(tag)
            if node is not None:
                return status, _first_line(node.get("message") or node.text or tag)
    skipped = [c.find("skipped") for c in cases if c.find("skipped") is not None]
    if len(skipped) == len(cases):
        return ERROR, "skipped: " + _first_line(skipped[0].get("message") or "no reason given")
    if rc != 0:
        return ERROR, f"the test passed but the process exited with {rc}"
    if metrics.empty:
        return ERROR, (f"the suite printed no logprob or ROUGE-L lines: ONLY_RUN={inv.hf_id} "
                       "matched no case, or the test returned early")
    return PASSED, ""


def _first_line(text: str, limit: int = 240) -> str:
    line = next((s.strip() for s in text.strip().splitlines() if s.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


# --- JUnit XML for unittest runs ---------------------------------------------------

_UNITTEST_SUMMARY = re.compile(r"^(OK|FAILED)\b(?:\s*\((.*)\))?\s*$", re.M)


def write_unittest_junit(inv: Invocation, text: str, rc: int | None, duration: float) -> None:
    """A JUnit XML file for one `python -m unittest` run of the suite's test method."""
    counts = {"failures": 0, "errors": 0, "skipped": 0}
    summary = list(_UNITTEST_SUMMARY.finditer(text))
    ran = bool(re.search(r"^Ran [1-9]\d* tests? in ", text, re.M))
    if summary:
        for part in (summary[-1].group(2) or "").split(","):
            key, _, value = part.strip().partition("=")
            if key in counts and value.isdigit():
                counts[key] = int(value)
    if rc not in (0, None) and not summary:
        counts["errors"] = 1  # the process died before unittest summed up
    suite_el = ET.Element("testsuite", name=inv.suite.module, tests="1" if ran or summary else "0",
                          failures=str(min(counts["failures"], 1)),
                          errors=str(min(counts["errors"], 1)),
                          skipped=str(min(counts["skipped"], 1)), time=f"{duration:.3f}")
    if ran or summary or rc not in (0, None):
        case = ET.SubElement(suite_el, "testcase",
                             classname=f"{inv.suite.module}.{inv.suite.test_class}",
                             name=inv.suite.test_method, time=f"{duration:.3f}")
        trace = _traceback(text)
        if counts["errors"]:
            ET.SubElement(case, "error", message=_last_exception(trace) or
                          f"exit code {rc}").text = trace
        elif counts["failures"]:
            ET.SubElement(case, "failure", message=_last_exception(trace) or
                          "assertion failed").text = trace
        elif counts["skipped"]:
            reason = re.search(r"skipped '([^']*)'", text)
            ET.SubElement(case, "skipped", message=reason.group(1) if reason else "skipped")
        ET.SubElement(case, "system-out").text = text
    root = ET.Element("testsuites")
    root.append(suite_el)
    ET.ElementTree(root).write(inv.junit, encoding="utf-8", xml_declaration=True)


def _traceback(text: str) -> str:
    start = text.rfind("Traceback (most recent call last)")
    if start < 0:
        return ""
    end = text.find("\n----------------------------------------------------------------------",
                    start)
    return text[start: end if end >= 0 else len(text)].strip()


def _last_exception(trace: str) -> str:
    lines = [s for s in trace.splitlines() if s and not s.startswith(" ")]
    return lines[-1].strip() if len(lines) > 1 else ""
