"""`overlay test`: SGLang's generation-model suite for the overlay's models (CUDA).

For each model (every [[model]] with an hf-id, or each --model), in the
patched checkout `overlay apply` made::

    cd <checkout>/test/srt/models && ONLY_RUN=<hf id> SGLANG_IS_IN_CI=false ... \\
        <python> -m pytest test_generation_models.py::TestGenerationModels::test_others \\
        -p no:cacheprovider -s -v --junitxml=<reports>/test-<ref>-<stamp>/<model>.junit.xml

(``python -m unittest`` plus a JUnit file written by the runner when the
target environment has no pytest). The full log and the JUnit XML of each
model, and a JSON and a markdown report, go under ``<overlay>/reports/``.

Every model must already have its ``ModelCase`` in the suite's list: the
runner never edits the checkout (the case belongs in the overlay, as an
``add-model-case`` edit unit, so the PR and every later apply carry it).

A CPU stand-in suite of the same shape can take the checkout's place
(``$SGLANG_OVERLAY_STANDIN_SUITE``, a suite file or its directory): it is run
exactly the same way, only the CUDA check is skipped, and everything it
produces is labelled ``cpu-standin``; it is never accuracy evidence.

Exit codes: 0 every model passed (or --dry-run), 1 a model failed or errored
or has no ModelCase, 2 bad input, 3 no CUDA in the target environment.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

import click

from .. import durable, repolock, report, shards, suite as suite_mod, target
from ..output import progress
from ..errors import FINDINGS, OK, BadInput, Findings, NeedsGPU
from ..gitutil import Git
from ..interpreters import interpreter
from ..manifest import load
from . import open_root

STANDIN_ENV = "SGLANG_OVERLAY_STANDIN_SUITE"
REPORTS_DIR = "reports"
HEADERS = ("MODEL", "STATUS", "PREFILL", "DECODE", "ROUGE-L MIN", "TIME", "DETAIL")


def run(opts, models, dry_run, sglang_ref, worktree, python, as_json,
        standin_suite: Path | None = None, shard: str | None = None,
        merge_reports: bool = False, report_dirs: tuple = ()) -> int:
    if report_dirs and not merge_reports:
        raise BadInput(f"unexpected argument {report_dirs[0]}",
                       "pass --merge-reports DIR... to merge shard reports")
    shard_of = shards.parse(shard) if shard else None
    root = open_root(opts)  # checked, and an interrupted change finished
    if merge_reports:
        if shard or dry_run or models:
            raise BadInput("--merge-reports runs nothing: it takes no --shard, --dry-run "
                           "or --model", "merge in a separate `overlay test --merge-reports`")
        return _merge(opts, root, report_dirs, as_json)
    manifest = load(root)
    ref = manifest.ref_or(sglang_ref)
    runner, suite, checkout = _suite(opts, root, ref, worktree, standin_suite)
    hf_ids = _models(manifest, models, suite)
    if shard_of:
        hf_ids = shards.take(hf_ids, *shard_of)
        if not hf_ids:
            if as_json:
                report.emit_json({"shard": shard, "models": [], "exit_code": OK})
            else:
                click.echo(f"shard {shard}: no model falls in it (fewer models than shards)")
            return OK
    missing = [h for h in hf_ids if h not in suite.cases]
    if missing:
        raise Findings(
            f"{suite.rel}: {suite.list_name} has no ModelCase for " + ", ".join(missing),
            "add an add-model-case edit unit for it to overlay.toml and run `overlay apply` "
            "(the test never edits the checkout)")

    # a relative --python is taken from DIR (-C), as install and verify take it:
    # the suite's commands run from the suite's directory
    python = interpreter(python, opts.directory)
    probe = suite_mod.probe(python, cuda=runner == suite_mod.RUNNER_GPU and not dry_run)
    if runner == suite_mod.RUNNER_GPU and not dry_run:
        _require_cuda(probe)
    mode = "pytest" if probe.has_pytest else "unittest"

    started = datetime.now(timezone.utc)
    name = _report_name(root, ref, runner, started)
    run_dir = root / REPORTS_DIR / name
    invocations = [suite_mod.invocation(suite, h, python, run_dir, mode) for h in hf_ids]
    if dry_run:
        note = None
        if runner == suite_mod.RUNNER_GPU and python == sys.executable \
                and not probe.info.get("sglang"):
            note = (f"--python not given: these commands use this tool's own interpreter "
                    f"({python}), which has no sglang; pass --python with the environment "
                    "`overlay install` set up")
        return _print_plan(invocations, runner, suite, checkout, as_json, note, shard)

    outcomes = []
    for inv in invocations:
        progress(f"{inv.hf_id}: running (log: {inv.log})")
        out = suite_mod.run(inv)
        progress(f"{inv.hf_id}: {out.status} in {out.duration:.1f}s")
        outcomes.append(out)
    code = OK if all(o.status == suite_mod.PASSED for o in outcomes) else FINDINGS
    data = _report(root, manifest, ref, runner, suite, checkout, probe, started, outcomes,
                   code)
    paths = _write_reports(root, name, data)
    data["report"] = {k: str(v) for k, v in paths.items()}

    if as_json:
        report.emit_json(data)
        return code
    rows = _rows(data)
    if runner == suite_mod.RUNNER_STANDIN:
        click.echo("CPU stand-in suite, not a GPU run: these numbers prove the runner, "
                   "not the model's accuracy.")
    click.echo(report.table(HEADERS, rows, color_col=1))
    click.echo("")
    click.echo(f"report: {paths['markdown']} (logs and JUnit XML in {run_dir})")
    return code


def _suite(opts, root: Path, ref: str, worktree, standin: Path | None):
    """(runner, suite, checkout): the CPU stand-in suite when one is given (the
    option or its envvar, $SGLANG_OVERLAY_STANDIN_SUITE, cli.py), else the
    generation suite of the patched checkout."""
    if standin is not None:
        return (suite_mod.RUNNER_STANDIN,
                _standin_suite(opts.existing(standin, "--standin-suite")), None)
    checkout = opts.path(worktree) if worktree else target.default_target(root, ref)
    if not checkout.is_dir():
        raise BadInput(f"{checkout}: no patched checkout there",
                       f"run `overlay apply --sglang-ref {ref}` first, or pass --worktree")
    return suite_mod.RUNNER_GPU, suite_mod.find_suite(checkout), checkout


def _models(manifest, models: tuple, suite: suite_mod.Suite) -> list[str]:
    """The hf-ids to test: --model's, else every declared model's; bad input
    for a --model neither declared nor in the suite."""
    hf_ids = list(dict.fromkeys(models)) or list(dict.fromkeys(
        m.hf_id for m in manifest.models if m.hf_id))
    if not hf_ids:
        raise BadInput(f"{manifest.path}: no [[model]] has an hf-id and no --model was given",
                       'add hf-id = "org/name" to a [[model]], or pass --model HF_ID')
    declared = {m.hf_id for m in manifest.models if m.hf_id}
    unknown = [h for h in models if h not in declared and h not in suite.cases]
    if unknown:
        raise BadInput(f"--model {unknown[0]}: no [[model]] declares it and {suite.rel} has "
                       "no ModelCase for it",
                       "pass the hf-id of a declared model, or of a model in the suite")
    return hf_ids


def _standin_suite(path: Path) -> suite_mod.Suite:
    path = path.absolute()
    file = path / suite_mod.SUITE_FILE if path.is_dir() else path
    if not file.is_file():
        raise BadInput(f"{STANDIN_ENV}={path}: no {suite_mod.SUITE_FILE} there",
                       "point it at a stand-in suite file or its directory")
    try:
        return suite_mod.load_suite(file, f"{file.name} (CPU stand-in)")
    except Findings as exc:  # not a suite at all: the option is wrong, not the checkout
        raise BadInput(f"--standin-suite {file}: not a generation suite ({exc.message})",
                       "point it at tests/cpu_standin_suite or a file of the same shape")


def _require_cuda(probe: suite_mod.Probe) -> None:
    info, py = probe.info, probe.python
    if info.get("torch") is None:
        raise NeedsGPU(f"torch is not installed for {py}: needs a GPU environment",
                       "run on a CUDA machine with --python the interpreter of the "
                       "environment `overlay install` set up")
    if info.get("torch_error"):
        raise NeedsGPU(f"torch does not import for {py} ({info['torch_error']}): "
                       "needs a GPU environment", "run on a CUDA machine")
    if not info.get("cuda"):
        raise NeedsGPU(f"no CUDA device for {py} (torch.cuda.is_available() is False): "
                       "needs a GPU environment", "run on a CUDA machine")


def _report_name(root: Path, ref: str, runner: str, started: datetime) -> str:
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    label = "-cpu-standin" if runner == suite_mod.RUNNER_STANDIN else ""
    base = f"test-{re.sub(r'[^A-Za-z0-9._-]+', '-', ref)}{label}-{stamp}"
    name, n = base, 1
    reports = root / REPORTS_DIR
    while (reports / name).exists() or (reports / f"{name}.json").exists():
        n += 1
        name = f"{base}-{n}"
    return name


def _print_plan(invocations, runner, suite, checkout, as_json, note=None, shard=None) -> int:
    plan = {"runner": runner, "dry_run": True, "checkout": str(checkout) if checkout else None,
            "suite": suite.to_json(), "shard": shard, "note": note,
            "runs": [inv.to_json() for inv in invocations]}
    if as_json:
        report.emit_json(plan, OK)
        return OK
    if note:
        click.echo(f"# note: {note}")
    if shard:
        click.echo(f"# shard {shard}: " + ", ".join(inv.hf_id for inv in invocations))
    if runner == suite_mod.RUNNER_STANDIN:
        click.echo("# CPU stand-in suite, not a GPU run")
    for inv in invocations:
        click.echo(f"# {inv.hf_id}")
        click.echo(f"#   cwd:   {inv.cwd}")
        click.echo("#   env:   " + " ".join(f"{k}={v}" for k, v in inv.env.items()))
        click.echo(f"#   argv:  {json.dumps(inv.argv)}")
        click.echo(f"#   log:   {inv.log}")
        click.echo(f"#   junit: {inv.junit}")
        click.echo(inv.shell())
    return OK


def _checkout_commit(checkout: Path | None) -> str | None:
    if checkout is None:
        return None
    return Git(checkout).rev("HEAD")


def _report(root, manifest, ref, runner, suite, checkout, probe, started, outcomes,
            code) -> dict:
    finished = datetime.now(timezone.utc)
    by_id = {m.hf_id: m for m in manifest.models if m.hf_id}
    models = []
    for o in outcomes:
        case = suite.cases[o.hf_id]
        declared = by_id.get(o.hf_id)
        models.append({
            "model": o.hf_id,
            "architecture": declared.architecture if declared else None,
            "unit": declared.unit if declared else None,
            "status": o.status,
            "detail": o.detail,
            "max_prefill_diff": suite_mod.json_number(o.metrics.max_prefill),
            "max_decode_diff": suite_mod.json_number(o.metrics.max_decode),
            "rouge_l_min": suite_mod.json_number(o.metrics.min_rouge_l),
            "rouge_l": [suite_mod.json_number(x) for x in o.metrics.rouge_l],
            "prefill_diffs": [suite_mod.json_number(x) for x in o.metrics.prefill],
            "decode_diffs": [suite_mod.json_number(x) for x in o.metrics.decode],
            "tolerances": case.tolerances,
            "model_case": case.fields,
            "log": _rel(root, o.invocation.log),
            "junit": _rel(root, o.invocation.junit),
            "returncode": o.returncode,
            "duration_s": round(o.duration, 3),
            "gpu": probe.gpu,
            "runner": runner,
        })
    return {
        "runner": runner,
        "ref": ref,
        "checkout": str(checkout) if checkout else None,
        "checkout_commit": _checkout_commit(checkout),
        "suite": suite.to_json(),
        "mode": outcomes[0].invocation.mode if outcomes else None,
        "python": probe.python,
        "python_version": probe.info.get("python"),
        "sglang_version": probe.info.get("sglang"),
        "torch_version": probe.info.get("torch"),
        "gpu": probe.gpu,
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "exit_code": code,
        "models": models,
    }


def _rows(data: dict) -> list[list[str]]:
    return [[m["model"], m["status"], _fmt(m["max_prefill_diff"]), _fmt(m["max_decode_diff"]),
             _fmt(m["rouge_l_min"]), f"{m['duration_s']:.1f}s", m["detail"]]
            for m in data["models"]]


def _rel(root: Path, path: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    return f"{x:.4g}"


def markdown(data: dict) -> str:
    standin = data["runner"] == suite_mod.RUNNER_STANDIN
    if standin:
        title = f"# overlay test on {data['ref']}: CPU stand-in, not a GPU run"
    else:
        title = f"# overlay test on {data['ref']}: SGLang generation suite on {data['gpu']}"
    lines = [title, ""]
    if standin:
        lines += ["This run used the CPU stand-in suite. It proves that the runner finds, runs "
                  "and reads the suite; its numbers come from tiny random checkpoints on the "
                  "CPU and are **not** accuracy evidence.", ""]
    lines += [
        f"- runner: `{data['runner']}`",
        f"- suite: `{data['suite']['path']}` ({data['suite']['test']}, {data['suite']['list']})",
        f"- checkout: `{data['checkout']}` at `{data['checkout_commit']}`"
        if data["checkout"] else "- checkout: none (stand-in suite)",
        f"- python: `{data['python']}` ({data['python_version']}); sglang "
        f"{data['sglang_version'] or 'not installed'}; torch {data['torch_version'] or '-'}",
        f"- GPU: {data['gpu'] or 'none'}",
        f"- started {data['started']}, finished {data['finished']}",
        "",
    ]
    rows = []
    for m in data["models"]:
        tol = m["tolerances"]
        rows.append([
            f"`{m['model']}`", m["status"],
            f"{_fmt(m['max_prefill_diff'])} (tol {_fmt(tol.get('prefill'))})",
            f"{_fmt(m['max_decode_diff'])} (tol {_fmt(tol.get('decode'))})",
            f"{_fmt(m['rouge_l_min'])} (tol {_fmt(tol.get('rouge_l'))})",
            ", ".join(_fmt(x) for x in m["rouge_l"]) or "-",
            f"{m['duration_s']:.1f}s", m["gpu"] or "-", m["runner"],
            f"[log]({_link(m['log'])}), [junit]({_link(m['junit'])})",
        ])
    lines.append(report.markdown_table(
        ["Model", "Status", "Max prefill diff", "Max decode diff", "Min ROUGE-L",
         "ROUGE-L", "Duration", "GPU", "Runner", "Files"], rows).rstrip("\n"))
    notes = [m for m in data["models"] if m["detail"]]
    if notes:
        lines += ["", "## Details", ""]
        lines += [f"- `{m['model']}`: {m['detail']}" for m in notes]
    return "\n".join(lines) + "\n"


def _link(path: str) -> str:
    return path.removeprefix(REPORTS_DIR + "/")


def _write_reports(root: Path, name: str, data: dict) -> dict[str, Path]:
    reports = root / REPORTS_DIR
    paths = {"json": reports / f"{name}.json", "markdown": reports / f"{name}.md",
             "latest": reports / "latest.json"}
    text = json.dumps(data, indent=2) + "\n"
    # a long suite run does not hold the repository's lock; writing its reports does
    with repolock.hold(root, "test"):
        reports.mkdir(parents=True, exist_ok=True)
        for key, content in (("json", text), ("markdown", markdown(data)), ("latest", text)):
            durable.write_text(paths[key], content)
    return paths


def _merge(opts, root: Path, report_dirs: tuple, as_json: bool) -> int:
    """`--merge-reports DIR...`: the shards' reports as one, in reports/merged.*."""
    found = [shards.find_report(opts.existing(d, "--merge-reports")) for d in report_dirs]
    data = shards.merge([(p, shards.load(p)) for p in found], root)
    junits = sorted({root / m["junit"] for m in data["models"] if m.get("junit")})
    reports = root / REPORTS_DIR
    with repolock.hold(root, "test"):  # the merged JUnit file and reports together
        reports.mkdir(parents=True, exist_ok=True)
        suites = shards.merge_junit([j for j in junits if j.is_file()],
                                    reports / "merged.junit.xml")
        paths = _write_reports(root, "merged", data)
    data["report"] = {**{k: str(v) for k, v in paths.items()},
                      "junit": str(reports / "merged.junit.xml")}
    code = FINDINGS if data["exit_code"] else OK
    if as_json:
        report.emit_json(data)
        return code
    rows = _rows(data)
    click.echo(report.table(HEADERS, rows, color_col=1))
    click.echo("")
    n = len(found)
    click.echo(f"merged {n} shard{'s' if n != 1 else ''}: {paths['markdown']} "
               f"(JUnit: {suites} suite{'s' if suites != 1 else ''} in "
               f"{reports / 'merged.junit.xml'})")
    return code
