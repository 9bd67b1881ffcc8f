"""`overlay pr`: an upstream-ready pull request for one unit.

1. The unit and the units it `requires` (recursively, in manifest order) are
   applied on the base (default: the pinned ref) with ``Session.build``.
2. Each is replayed in a temporary worktree as one commit in upstream's style
   (plain imperative subject, details in the body, no overlay trailers). A
   model unit (a files unit some [[model]] names) also gets the model's
   ``ModelCase`` in the generation suite and its row in
   ``docs/supported_models/generative_models.md``. The changed .py files are
   formatted with the black and isort versions the checkout pins in
   ``.pre-commit-config.yaml`` (a cached tool environment).
3. Only then is anything written: the branch ``pr/<unit>`` in the overlay's
   workspace repository, ``git format-patch`` files and ``PR_BODY.md`` in the
   output directory (default ``<overlay>/pr/<unit>/``), the unit's
   ``forwarded`` key in overlay.toml, and, with --push only, the branch on
   the remote.

Author: the user configured in git (user.name/user.email, as the overlay
repository sees it), else a fixed identity; dates: the base commit's, so the
same inputs give the same commits and patch files.

``forwarded`` (DEP-3: anything but "no"/"not-needed" means forwarded) is set
to ``<remote url>#pr/<unit>`` after --push, else ``prepared:pr/<unit>``. A
value that neither ``overlay pr`` wrote nor is "no"/"not-needed" (the URL of
the real pull request, once you record it) is kept.

Exit codes: 0 ok, 1 the units conflict on the base or change nothing there,
2 bad input (unknown unit, base, remote; formatter environment unavailable).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import click

from .. import manifest as manifest_mod
from .. import modeldocs, prbody, report
from ..errors import OK, BadInput, Findings
from ..formatters import PRE_COMMIT_CONFIG, ToolEnv, parse_pins
from ..gitutil import IDENTITY_EMAIL, IDENTITY_NAME, Git, identity_env
from ..manifest import Manifest, Model, Unit
from ..units import UPSTREAM_PROVIDES
from ..units import edit as edit_mod
from ..upstream import is_url
from . import open_overlay

BRANCH_PREFIX = "pr/"
PREPARED_PREFIX = "prepared:"
PATCH_RE = re.compile(r"^\d{4}-.*\.patch$")
BODY_NAME = "PR_BODY.md"

# First words that already make a subject imperative.
IMPERATIVE = {
    "add", "allow", "avoid", "bump", "cache", "check", "clean", "disable", "drop",
    "enable", "ensure", "expose", "extend", "fix", "handle", "implement", "improve",
    "introduce", "keep", "let", "make", "merge", "move", "optimize", "pass", "raise",
    "refactor", "register", "remove", "rename", "replace", "reset", "return", "reuse",
    "revert", "run", "set", "simplify", "skip", "speed", "split", "support", "update",
    "use",
}


def run(opts, unit_name, base, out, push, upstream, offline, as_json) -> int:
    manifest, session = open_overlay(opts, upstream, offline)
    root = manifest.root
    unit = manifest.unit(unit_name)
    if unit.retired:
        raise BadInput(f"unit '{unit.name}' is applied upstream in {unit.applied_upstream}",
                       "there is nothing left to send upstream")
    units = closure(manifest, unit)
    branch = BRANCH_PREFIX + unit.name
    push_url = resolve_remote(root, push, offline, opts.directory) if push else None
    out_dir = opts.path(out) if out else root / "pr" / unit.name
    ref = manifest.ref_or(base, "--base")

    resolved, _lock = session.resolve_pinned(ref)
    build = session.build(resolved, units=units)
    if not build.ok:
        names = ", ".join(r.unit.name for r in build.conflicts)
        raise Findings(f"the PR's units do not apply on {ref}: conflict in {names}",
                       f"run `overlay apply --sglang-ref {ref}` and resolve it first")

    ws = session.workspace
    author = _author(root)
    date = int(ws.git.run("show", "-s", "--format=%ct", resolved.commit))
    series = _replay(session, manifest, build, units, resolved.commit, author, date, offline)
    if unit.name not in series.committed:
        raise Findings(f"unit '{unit.name}' changes nothing on {ref}: upstream already has it",
                       f"record it with applied-upstream = \"{ref}\" in overlay.toml")

    head = series.commits[-1][0]
    files = _file_changes(ws.git, resolved.commit, head)
    models = [m.hf_id for u in units for m in manifest.models_of(u) if m.hf_id]
    info = prbody.PRInfo(
        unit_name=unit.name,
        motivation=_motivation(unit, units),
        files=files,
        commits=[s for _, s in series.commits],
        formatting=series.formatting_note,
        models=list(dict.fromkeys(models)),
        extras=series.extras,
    )
    evidence = prbody.find_evidence(root, info.models)
    body = prbody.render(series.template, info, evidence)

    # --- everything below writes -------------------------------------------------
    ws.git.run("update-ref", f"refs/heads/{branch}", head)
    patches = _write_series(ws.git, resolved.commit, head, out_dir, body)
    pushed = None
    if push_url:
        _push(ws.path, push_url, head, branch)
        pushed = {"remote": push, "url": push_url, "branch": branch}
    value = f"{push_url}#{branch}" if push_url else f"{PREPARED_PREFIX}{branch}"
    forwarded = _record_forwarded(root, manifest, unit, units, value, branch)

    result = {
        "unit": unit.name,
        "units": [u.name for u in units],
        "base": ref,
        "base_commit": resolved.commit,
        "branch": branch,
        "workspace": str(ws.path),
        "head": head,
        "tree": ws.git.run("rev-parse", f"{head}^{{tree}}"),
        "commits": [{"commit": c, "subject": s} for c, s in series.commits],
        "files": [{"path": f.path, "added": f.added, "removed": f.removed,
                   "status": f.status} for f in files],
        "extras": series.extras,
        "warnings": series.warnings,
        "formatters": series.formatters,
        "out": str(out_dir),
        "patches": [str(p) for p in patches],
        "body": str(out_dir / BODY_NAME),
        "accuracy": ("gpu" if evidence.gpu else "cpu-standin-only" if evidence.standin
                     else "not-run"),
        "pushed": pushed,
        "forwarded": forwarded,
    }
    if as_json:
        report.emit_json(result, OK)
        return OK
    click.echo(report.table(("COMMIT", "SUBJECT"),
                            [[c[:12], s] for c, s in series.commits]))
    click.echo("")
    adds = sum(f.added or 0 for f in files)
    dels = sum(f.removed or 0 for f in files)
    click.echo(f"{branch}: {len(files)} file{'s' if len(files) != 1 else ''} changed, "
               f"+{adds} -{dels}, on {ref} "
               f"({resolved.commit[:12]})")
    for w in series.warnings:
        click.echo(f"warning: {w}")
    click.echo(f"patches: {len(patches)} in {out_dir} (`git am` them on {ref})")
    click.echo(f"body:    {out_dir / BODY_NAME}")
    click.echo(f"format:  {series.formatting_note}")
    if pushed:
        click.echo(f"pushed:  {branch} to {push_url}")
    else:
        click.echo("not pushed (pass --push REMOTE to push the branch)")
    click.echo(f"forwarded: {forwarded[unit.name]}")
    return OK


# --- which units -------------------------------------------------------------------


def closure(manifest: Manifest, unit: Unit) -> list[Unit]:
    """unit and everything it requires, recursively, in manifest order; retired ones out."""
    need: set[str] = set()
    stack = [unit.name]
    while stack:
        name = stack.pop()
        if name in need:
            continue
        need.add(name)
        stack.extend(manifest.unit(name).requires)
    return [u for u in manifest.units if u.name in need and not u.retired]


def model_rows(manifest: Manifest, unit: Unit) -> list[Model]:
    """The models a files unit implements (the [[model]]s naming it), with an hf-id."""
    if unit.kind != "files":
        return []
    return [m for m in manifest.models if m.unit == unit.name and m.hf_id]


# --- the remote --------------------------------------------------------------------


def resolve_remote(root: Path, remote: str, offline: bool, cwd: Path | None = None) -> str:
    """The URL to push to: a remote configured in the overlay repository, a URL or a
    path (relative to cwd: -C DIR)."""
    configured = Git(root, isolated=False).result("config", "--get", f"remote.{remote}.url")
    url = configured.out.strip() if configured.ok and configured.out.strip() else None
    local = False
    if url is None:
        if is_url(remote):
            url = remote
        else:
            path = Path(remote).expanduser()
            if not path.is_absolute():
                path = (cwd or Path.cwd()) / path
            if not (path.exists() and Git(path).result("rev-parse", "--git-dir").ok):
                raise BadInput(f"--push {remote}: not a remote of {root}, a URL or a git "
                               "repository", f"add it with `git -C {root} remote add <name> "
                               "<url>`, or pass the URL of your fork")
            url, local = str(path.resolve()), True
    elif not is_url(url):
        path = Path(url).expanduser()
        url, local = str(path if path.is_absolute() else (root / path).resolve()), True
    local = local or url.startswith("file://")
    if offline and not local:
        raise BadInput(f"--push {remote} goes over the network and --offline forbids it",
                       "drop --offline, or push later without it")
    return url


def _push(workspace: Path, url: str, head: str, branch: str) -> None:
    # The user's own git configuration (credentials, proxies); never a prompt.
    g = Git(workspace, env={"GIT_TERMINAL_PROMPT": "0"}, isolated=False)
    r = g.result("push", "--force", "--quiet", url, f"{head}:refs/heads/{branch}")
    if not r.ok:
        last = (r.err.strip().splitlines() or ["no output"])[-1]
        raise Findings(f"pushing {branch} to {url} failed: {last}",
                       "push to your fork of upstream (it must have the base commit); "
                       "the branch and patches are ready locally")


# --- replaying the units as upstream-style commits ---------------------------------


@dataclass
class Series:
    commits: list[tuple[str, str]] = field(default_factory=list)  # (sha, subject)
    committed: list[str] = field(default_factory=list)  # units that made a commit
    extras: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    formatters: dict | None = None
    formatted: list[str] = field(default_factory=list)  # files the formatters changed
    template: str | None = None

    @property
    def formatting_note(self) -> str:
        if not self.formatters:
            return ("Not formatted: the checkout's .pre-commit-config.yaml pins no black "
                    "or isort.")
        tools = " and ".join(f"{t} {v}" for t, v in self.formatters["versions"].items())
        changed = (f"; they changed {', '.join(f'`{f}`' for f in self.formatted)}"
                   if self.formatted else "; they changed nothing")
        return (f"Formatted with {tools}, as pinned in `{PRE_COMMIT_CONFIG}`, "
                f"on the changed Python files{changed}.")


def _author(root: Path) -> tuple[str, str]:
    g = Git(root, isolated=False)
    name = g.result("config", "user.name")
    email = g.result("config", "user.email")
    if name.ok and email.ok and name.out.strip() and email.out.strip():
        return name.out.strip(), email.out.strip()
    return IDENTITY_NAME, IDENTITY_EMAIL


def subject(unit: Unit) -> str:
    """A short imperative subject in upstream's style, from the unit's summary."""
    text = unit.summary.strip().rstrip(".") or unit.name
    text = re.sub(r"^[a-z0-9_./-]+:\s+", "", text)  # a "component: " prefix
    first = text.split()[0]
    if first.lower() in IMPERATIVE:
        return first[0].upper() + text[1:]
    if first[1:].islower() or len(first) == 1:
        text = first[0].lower() + text[1:]
    return "Add " + text


def _body(unit: Unit) -> str:
    """The description without its first line (the summary), or the summary alone."""
    lines = unit.description.strip().splitlines()
    return "\n".join(lines[1:]).strip() or unit.summary


def message(unit: Unit, extra: str) -> str:
    lines = unit.description.strip().splitlines()
    body = "\n".join(lines[1:]).strip()
    msg = subject(unit) + "\n"
    if body:
        msg += "\n" + body + "\n"
    if extra:
        msg += "\n" + textwrap.fill(extra, width=72, break_long_words=False,
                                    break_on_hyphens=False) + "\n"
    return msg


def _motivation(unit: Unit, units: list[Unit]) -> str:
    text = _body(unit)
    others = [u for u in units if u.name != unit.name]
    if others:
        text += ("\n\nIt needs the following change, included in this pull request as "
                 "its own commit:" if len(others) == 1 else
                 "\n\nIt needs the following changes, included in this pull request as "
                 "their own commits:")
        for u in others:
            text += f"\n\n- **{subject(u)}**: " + " ".join(_body(u).split())
    return text


def _replay(session, manifest: Manifest, build, units: list[Unit], base: str,
            author: tuple[str, str], date: int, offline: bool) -> Series:
    """One commit per unit on base, in a temporary worktree; the branch head last."""
    ws = session.workspace
    series = Series()
    env = identity_env(date, author)
    with tempfile.TemporaryDirectory(prefix="overlay-pr-") as tmp:
        wt = Path(tmp) / "checkout"
        with ws.lock:
            ws.add_worktree(wt, base)
        try:
            g = Git(wt)
            series.template = _read(wt, prbody.TEMPLATE_PATH)
            tools = _tool_env(session, wt, offline, series)
            for res in build.results:
                if res.commit is None:
                    if res.status not in ("retired",):
                        series.warnings.append(f"unit '{res.unit.name}': {res.status} on "
                                               f"this base ({res.detail or 'no change'})")
                    continue
                if res.status == UPSTREAM_PROVIDES:
                    series.warnings.append(
                        f"unit '{res.unit.name}': upstream already has its files on this "
                        f"base and the PR replaces them ({res.detail})")
                diff = ws.git.run_bytes("diff", "--binary", "--full-index", res.parent,
                                        res.commit)
                r = g.result("apply", "--index", "--3way", "-", stdin=diff)
                if not r.ok:
                    raise Findings(f"unit '{res.unit.name}' does not apply after formatting "
                                   f"the units before it: {r.err.strip().splitlines()[-1]}",
                                   "format the overlay's files with upstream's black/isort")
                extra_msg = _model_extras(manifest, res.unit, wt, series)
                g.run("add", "-A", ".")
                changed = g.run("diff", "--cached", "--name-only", "--diff-filter=AMR",
                                "HEAD").splitlines()
                py = [f for f in changed if f.endswith(".py")]
                if tools is not None and py:
                    series.formatted += tools.format(wt, py)
                    g.run("add", "-A", ".")
                if not g.run("diff", "--cached", "--name-only", "HEAD"):
                    continue
                msg = message(res.unit, extra_msg)
                g.run("commit", "--quiet", "--no-verify", "-F", "-", stdin=msg.encode(),
                      env=env)
                series.commits.append((g.run("rev-parse", "HEAD"), msg.splitlines()[0]))
                series.committed.append(res.unit.name)
        finally:
            with ws.lock:
                ws.remove_worktree(wt)
    series.formatted = list(dict.fromkeys(series.formatted))
    return series


def _read(wt: Path, rel: str) -> str | None:
    p = wt / rel
    return p.read_text(encoding="utf-8") if p.is_file() else None


def _tool_env(session, wt: Path, offline: bool, series: Series) -> ToolEnv | None:
    text = _read(wt, PRE_COMMIT_CONFIG)
    pins = parse_pins(text) if text is not None else None
    if not pins or not pins.versions:
        series.warnings.append(f"{PRE_COMMIT_CONFIG} pins no black or isort: not formatted")
        return None
    tools = ToolEnv(session.cache.root, pins)
    tools.ensure(offline)
    series.formatters = {"versions": {t: pins.versions[t] for t in pins.order},
                         "env": str(tools.path)}
    return tools


def _model_extras(manifest: Manifest, unit: Unit, wt: Path, series: Series) -> str:
    """A model unit's ModelCase and docs row, written into the worktree; a commit note."""
    models = model_rows(manifest, unit)
    if not models:
        return ""
    notes: list[str] = []
    suite = edit_mod.find_suite(
        lambda p: (wt / p).read_bytes() if (wt / p).is_file() else None)
    if suite is None:
        series.warnings.append("no generation suite in the checkout: no ModelCase added")
    else:
        path, list_name = suite
        try:
            result = edit_mod.add_model_cases(_read(wt, path), list_name, models)
        except edit_mod.MissingAnchor as exc:
            series.warnings.append(f"{path}: {exc}: no ModelCase added")
        else:
            if result.added:
                (wt / path).write_text(result.text, encoding="utf-8")
                ids = ", ".join(result.added)
                series.extras.append(f"`ModelCase` for {ids} in `{list_name}` of `{path}`")
                notes.append(f"add {ids} to {list_name} in {path}, so the generation-model "
                             "suite compares it with Hugging Face")
    docs = _read(wt, modeldocs.DOCS_PATH)
    if docs is None:
        series.warnings.append(f"no {modeldocs.DOCS_PATH} in the checkout: no docs row added")
    else:
        rows = [modeldocs.row_for(m, unit.summary) for m in models]
        try:
            text, added = modeldocs.add_model_rows(docs, rows)
        except modeldocs.NoTable:
            series.warnings.append(f"{modeldocs.DOCS_PATH} has no table: no docs row added")
        else:
            if added:
                (wt / modeldocs.DOCS_PATH).write_text(text, encoding="utf-8")
                ids = ", ".join(added)
                series.extras.append(f"row for {ids} in `{modeldocs.DOCS_PATH}`")
                notes.append(f"list {ids} in {modeldocs.DOCS_PATH}")
    return ("Also " + " and ".join(notes) + ".") if notes else ""


# --- outputs --------------------------------------------------------------------------


def _file_changes(git: Git, base: str, head: str) -> list[prbody.FileChange]:
    status = {}
    for line in git.run("diff", "--name-status", "--no-renames", base, head).splitlines():
        st, _, path = line.partition("\t")
        status[path] = st
    out = []
    for line in git.run("diff", "--numstat", "--no-renames", base, head).splitlines():
        a, d, path = line.split("\t", 2)
        out.append(prbody.FileChange(path, None if a == "-" else int(a),
                                     None if d == "-" else int(d), status.get(path, "M")))
    return out


def _write_series(git: Git, base: str, head: str, out_dir: Path, body: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".overlay-pr-", dir=out_dir) as tmp:
        git.run("format-patch", "--quiet", "--no-signature", "--full-index", "-o", tmp,
                f"{base}..{head}")
        for old in out_dir.iterdir():
            if PATCH_RE.match(old.name):
                old.unlink()
        names = sorted(os.listdir(tmp))
        for name in names:
            shutil.move(os.path.join(tmp, name), out_dir / name)
    tmp_body = out_dir / f".{BODY_NAME}.tmp-{os.getpid()}"
    tmp_body.write_text(body, encoding="utf-8")
    os.replace(tmp_body, out_dir / BODY_NAME)
    return [out_dir / n for n in names]


def _ours(value: str, branch: str) -> bool:
    return (value in ("no", "not-needed") or value.startswith(PREPARED_PREFIX)
            or value.endswith("#" + branch))


def _record_forwarded(root: Path, manifest: Manifest, unit: Unit, units: list[Unit],
                      value: str, branch: str) -> dict[str, str]:
    """Set forwarded on the unit (and on required units still "no"); what each now says."""
    out = {}
    for u in units:
        mine = u.name == unit.name
        if (mine and _ours(u.forwarded, branch)) or (not mine and u.forwarded == "no"):
            if u.forwarded != value:
                manifest_mod.set_unit_keys(root, u.name, forwarded=value)
            out[u.name] = value
        else:
            out[u.name] = u.forwarded
    return out
