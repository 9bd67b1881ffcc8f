"""PR_BODY.md: upstream's pull request template, filled in for one unit.

The sections come from the checkout's ``.github/pull_request_template.md``
(its headings, whatever they are). Known ones are filled:

* Motivation    - the unit's description (and those of the units it needs);
* Modifications - the files the branch changes with +/- counts, its commits,
                  and how it was formatted;
* Accuracy      - the newest GPU run of `overlay test` that covers the PR's
                  models, as a table; with none, "not run" (a CPU stand-in
                  run is mentioned only as what it is: not accuracy evidence);
* Benchmark     - "not run";
* Checklist     - the template's lines, ticked where the PR does it: "Format
                  your code" when the formatters ran, "Add unit tests" when
                  it adds or changes tests, "Update documentation" when it
                  changes docs/; the rest stay unticked.

Any other section keeps the template's text. Nothing is invented: every
number comes from the diff or from a report file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .report import markdown_table

TEMPLATE_PATH = ".github/pull_request_template.md"
# checklist items a PR can do, and the words of the template's line for each
CHECK_FORMAT, CHECK_TESTS, CHECK_DOCS = "format", "tests", "docs"
CHECK_WORDS = {CHECK_FORMAT: "format your code", CHECK_TESTS: "unit test",
               CHECK_DOCS: "documentation"}
REPORTS_DIR = "reports"
GPU, STANDIN = "gpu", "cpu-standin"

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


@dataclass
class Section:
    heading: str  # the heading line as written
    title: str
    body: list[str] = field(default_factory=list)  # lines, without newlines


@dataclass
class Template:
    preamble: list[str]
    sections: list[Section]


def parse_template(text: str) -> Template:
    preamble: list[str] = []
    sections: list[Section] = []
    fence = False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
        m = None if fence else _HEADING.match(line)
        if m:
            sections.append(Section(line, m.group(2)))
        elif sections:
            sections[-1].body.append(line)
        else:
            preamble.append(line)
    return Template(preamble, sections)


DEFAULT_TEMPLATE = """## Motivation

## Modifications

## Accuracy Tests

## Benchmarking and Profiling

## Checklist
"""


@dataclass
class FileChange:
    path: str
    added: int | None  # None for binary files
    removed: int | None
    status: str  # A, M, D, R...


@dataclass
class PRInfo:
    unit_name: str
    motivation: str  # markdown
    files: list[FileChange]
    commits: list[str]  # subjects
    formatting: str  # one sentence
    models: list[str]  # hf ids the PR adds or touches
    extras: list[str] = field(default_factory=list)  # e.g. "ModelCase for ... in ..."
    checked: tuple[str, ...] = ()  # CHECK_* items the PR does


def _kind(title: str) -> str | None:
    t = title.lower()
    for key, words in (("motivation", ("motivation",)), ("modifications", ("modification",)),
                       ("accuracy", ("accuracy",)), ("benchmark", ("benchmark", "profil")),
                       ("checklist", ("checklist",))):
        if any(w in t for w in words):
            return key
    return None


def render(template_text: str | None, info: PRInfo, evidence: "Evidence") -> str:
    tpl = parse_template(template_text or DEFAULT_TEMPLATE)
    out: list[str] = list(tpl.preamble)
    while out and not out[-1].strip():
        out.pop()
    if out:
        out.append("")
    for sec in tpl.sections:
        kind = _kind(sec.title)
        out.append(sec.heading)
        out.append("")
        if kind == "motivation":
            content = info.motivation.strip().splitlines()
        elif kind == "modifications":
            content = modifications(info)
        elif kind == "accuracy":
            content = evidence.markdown()
        elif kind == "benchmark":
            content = ["Not run: no benchmark or profile was made for this change."]
        elif kind == "checklist":
            content = [_tick(line, info.checked) for line in _strip_blank(sec.body)]
        else:  # the checklist and any section we do not know: the template's text
            content = _strip_blank(sec.body)
        out.extend(content)
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def _tick(line: str, checked: tuple[str, ...]) -> str:
    """A checklist line ticked when the PR does what it asks."""
    m = re.match(r"^(\s*[-*] )\[ \](.*)$", line)
    if m and any(CHECK_WORDS[c] in m.group(2).lower() for c in checked):
        return f"{m.group(1)}[x]{m.group(2)}"
    return line


def _strip_blank(lines: list[str]) -> list[str]:
    lines = list(lines)
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def modifications(info: PRInfo) -> list[str]:
    adds = sum(f.added or 0 for f in info.files)
    dels = sum(f.removed or 0 for f in info.files)
    n = len(info.files)
    lines = [f"{n} file{'s' if n != 1 else ''} changed, +{adds} -{dels}:", ""]
    what = {"A": "new file", "D": "deleted", "R": "renamed"}
    for f in info.files:
        counts = "binary" if f.added is None else f"+{f.added} -{f.removed}"
        note = what.get(f.status[:1])
        lines.append(f"- `{f.path}` ({counts}{', ' + note if note else ''})")
    if info.extras:
        lines += ["", "Besides the change itself, this adds:", ""]
        lines += [f"- {e}" for e in info.extras]
    lines += ["", "Commits:", ""]
    lines += [f"- {s}" for s in info.commits]
    if info.formatting:
        lines += ["", info.formatting]
    return lines


# --- accuracy evidence from `overlay test` reports ---------------------------------


@dataclass
class Evidence:
    models: list[str]
    gpu: dict | None = None  # the newest GPU report covering a model
    gpu_path: str | None = None
    standin: dict | None = None  # the newest CPU stand-in report
    standin_path: str | None = None

    def markdown(self) -> list[str]:
        lines: list[str] = []
        ids = ", ".join(f"`{m}`" for m in self.models)
        if self.gpu is not None:
            r = self.gpu
            covered = [m for m in r.get("models", []) if not self.models
                       or m.get("model") in self.models]
            suite = r.get("suite") or {}
            lines.append(
                f"SGLang's generation-model suite (`{suite.get('path')}`, "
                f"`{suite.get('test')}`), run by `overlay test` on {r.get('gpu') or 'a GPU'} "
                f"with sglang {r.get('sglang_version') or '?'} and torch "
                f"{r.get('torch_version') or '?'}, {r.get('finished') or r.get('started')}"
                f" (report `{self.gpu_path}`):")
            lines.append("")
            rows = []
            for m in covered:
                tol = m.get("tolerances") or {}
                rows.append([f"`{m.get('model')}`", m.get("status", "?"),
                             _with_tol(m.get("max_prefill_diff"), tol.get("prefill")),
                             _with_tol(m.get("max_decode_diff"), tol.get("decode")),
                             _with_tol(m.get("rouge_l_min"), tol.get("rouge_l"))])
            lines += markdown_table(["Model", "Status", "Max prefill logprob diff",
                                     "Max decode logprob diff", "Min ROUGE-L"],
                                    rows).rstrip("\n").splitlines()
            lines.append("")
            commit = r.get("checkout_commit")
            lines.append("The run tested the overlay's patched build (this change together "
                         "with the overlay's other changes)"
                         + (f" at `{commit[:12]}`." if commit else "."))
            if not self.models:
                lines.append("This change adds no model; the table shows the overlay's "
                             "models, which ran with it applied.")
            return lines
        if self.models:
            lines.append(f"Not run: no GPU run of SGLang's generation-model suite is "
                         f"recorded for {ids} yet (`overlay test` on a CUDA machine "
                         "records one).")
        else:
            lines.append("Not run: this change adds no model, and no GPU run of SGLang's "
                         "generation-model suite is recorded.")
        if self.standin is not None:
            r = self.standin
            states = ", ".join(f"`{m.get('model')}` {m.get('status')}"
                               for m in r.get("models", []))
            lines += ["", f"Only a CPU stand-in run of the test runner exists "
                      f"({r.get('finished') or r.get('started')}: {states}). It ran a stand-in "
                      "suite on tiny random checkpoints on the CPU: it is not a GPU run and not "
                      "accuracy evidence."]
        return lines


def _num(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, (int, float)):
        return f"{x:.4g}"
    return str(x)


def _with_tol(value, tol) -> str:
    return _num(value) + (f" (tolerance {_num(tol)})" if tol is not None else "")


def find_evidence(root: Path, models: list[str]) -> Evidence:
    """The newest GPU report covering one of models (any, if models is empty),
    and the newest CPU stand-in report."""
    ev = Evidence(models)
    reports = sorted(_reports(root), key=lambda t: (t[1].get("finished") or "", t[0]))
    for path, data in reversed(reports):
        runner = data.get("runner")
        ids = {m.get("model") for m in data.get("models", [])}
        if runner == GPU and ev.gpu is None and (not models or ids & set(models)):
            ev.gpu, ev.gpu_path = data, path
        elif runner == STANDIN and ev.standin is None and (not models or ids & set(models)):
            ev.standin, ev.standin_path = data, path
    return ev


def _reports(root: Path):
    d = root / REPORTS_DIR
    if not d.is_dir():
        return
    for p in sorted(d.glob("test-*.json")):
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("models"), list):
            yield p.relative_to(root).as_posix(), data
