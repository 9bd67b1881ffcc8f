"""`overlay pr`: an upstream-ready pull request for one unit.

1. The unit and the units it `requires` (recursively, in manifest order) are
   applied on the base (default: the pinned ref) with ``Session.build``, each
   as its variant for that base. A unit whose files the base already has
   (upstream-provides) stops here with exit 1, naming since which release and
   the replacement's size, unless --replace: then its subject and message say
   it replaces upstream's implementation.
2. Each is replayed in a temporary worktree as one commit in upstream's style
   (plain imperative subject, details in the body, no overlay trailers). A
   model unit (a files unit some [[model]] names) also gets the model's
   ``ModelCase`` in the generation suite and its row in
   ``docs/supported_models/generative_models.md``. The changed lines of the
   .py files are formatted with the black and isort versions the checkout pins
   in ``.pre-commit-config.yaml`` (a cached tool environment). Messages carry
   the unit's whole description, without DEP-3 fields.
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

Exit codes: 0 ok, 1 the units conflict on the base, change nothing there, or
upstream has the unit's files (without --replace),
2 bad input (unknown unit, base, remote; formatter environment unavailable).
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import click

from .. import manifest as manifest_mod
from .. import durable, journal, modeldocs, prbody, report
from ..durable import crash_point
from ..errors import OK, BadInput, Findings
from ..formatters import PRE_COMMIT_CONFIG, ToolEnv, parse_pins
from ..gitutil import (IDENTITY_EMAIL, IDENTITY_NAME, Git, identity_env, is_repository,
                       remote_url, user_identity)
from ..manifest import Manifest, Model, Unit
from ..units import UPSTREAM_PROVIDES
from ..units import edit as edit_mod
from ..upstream import UpstreamError, is_url
from ..versions import is_release, version_key
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
    "revert", "run", "set", "simplify", "skip", "speed", "split", "support", "test", "update",
    "use",
}


def run(opts, unit_name, base, out, push, upstream, offline, as_json, replace=False) -> int:
    manifest, session = open_overlay(opts, upstream, offline, writes="pr")
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

    resolved, build, replaced = _build_on(session, units, ref, replace)
    ws = session.workspace
    author = _author(root)
    date = ws.git.commit_time(resolved.commit)
    series = _replay(session, manifest, build, units, resolved.commit, author, date, offline,
                     replaced)
    if unit.name not in series.committed:
        raise Findings(f"unit '{unit.name}' changes nothing on {ref}: upstream already has it",
                       f"record it with applied-upstream = \"{ref}\" in overlay.toml")

    head = series.commits[-1][0]
    files = _file_changes(ws.git, resolved.commit, head)
    info, evidence = _describe(manifest, unit, units, replaced, files, series)
    body = prbody.render(series.template, info, evidence)

    # --- everything below writes -------------------------------------------------
    ws.git.set_ref(f"refs/heads/{branch}", head)
    crash_point("pr-branch-written")
    # the series, PR_BODY.md and overlay.toml change together (one transaction)
    tx = journal.Transaction(root)
    patches = _write_series(session, resolved.commit, head, out_dir, body, tx)
    pushed = None
    if push_url:
        try:
            _push(ws.git, push_url, head, branch)
        except Findings:
            tx.commit()  # the series is kept for a push by hand; forwarded is not changed
            raise
        pushed = {"remote": push, "url": push_url, "branch": branch}
    value = f"{push_url}#{branch}" if push_url else f"{PREPARED_PREFIX}{branch}"
    forwarded = _record_forwarded(tx, manifest, unit, units, value, branch)
    tx.commit()

    result = {
        "unit": unit.name,
        "units": [u.name for u in units],
        "base": ref,
        "base_commit": resolved.commit,
        "branch": branch,
        "workspace": str(ws.path),
        "head": head,
        "tree": ws.git.tree_of(head),
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
        "replaces": {n: {"files": r.files, "since": r.since, "added": r.added,
                         "removed": r.removed} for n, r in replaced.items()},
        "checked": list(info.checked),
    }
    if as_json:
        report.emit_json(result, OK)
    else:
        _summary(result, series.formatting_note)
    return OK


def _build_on(session, units, ref: str, replace: bool):
    """(resolved ref, build, what the units replace upstream) of the PR's units on
    ref; findings when they conflict there, or replace upstream's code without
    --replace."""
    resolved, _lock = session.resolve_pinned(ref)
    build = session.build(resolved, units=units)
    if not build.ok:
        names = ", ".join(r.unit.name for r in build.conflicts)
        raise Findings(f"the PR's units do not apply on {ref}: conflict in {names}",
                       f"run `overlay apply --sglang-ref {ref}` and resolve it first")
    replaced = _replacements(session, build, resolved)
    if replaced and not replace:
        name, rep = next(iter(replaced.items()))
        raise Findings(
            f"upstream has {rep.what} since {rep.since}; unit '{name}' would replace it on "
            f"{ref} ({rep.size})",
            "pass --replace to prepare a PR that replaces upstream's implementation, or "
            "retire the unit (`overlay upgrade` does)")
    return resolved, build, replaced


def _describe(manifest, unit, units, replaced, files, series):
    """What PR_BODY.md says, and the test evidence it cites."""
    models = [m.hf_id for u in units for m in manifest.models_of(u) if m.hf_id]
    info = prbody.PRInfo(
        unit_name=unit.name,
        motivation=_motivation(unit, units, replaced),
        files=files,
        commits=[s for _, s in series.commits],
        formatting=series.formatting_note,
        models=list(dict.fromkeys(models)),
        extras=series.extras,
        checked=_checked(files, series),
    )
    return info, prbody.find_evidence(manifest.root, info.models)


def _summary(result: dict, formatting_note: str) -> None:
    """The text report of a prepared PR, from its --json result."""
    ref, branch, out_dir = result["base"], result["branch"], Path(result["out"])
    click.echo(report.table(("COMMIT", "SUBJECT"),
                            [[c["commit"][:12], c["subject"]] for c in result["commits"]]))
    click.echo("")
    files = result["files"]
    adds = sum(f["added"] or 0 for f in files)
    dels = sum(f["removed"] or 0 for f in files)
    click.echo(f"{branch}: {len(files)} file{'s' if len(files) != 1 else ''} changed, "
               f"+{adds} -{dels}, on {ref} "
               f"({result['base_commit'][:12]})")
    for w in result["warnings"]:
        click.echo(f"warning: {w}")
    click.echo(f"patches: {len(result['patches'])} in {out_dir} (`git am` them on {ref})")
    click.echo(f"body:    {out_dir / BODY_NAME}")
    click.echo(f"format:  {formatting_note}")
    if result["pushed"]:
        click.echo(f"pushed:  {branch} to {result['pushed']['url']}")
    else:
        click.echo("not pushed (pass --push REMOTE to push the branch)")
    click.echo(f"forwarded: {result['forwarded'][result['unit']]}")


# --- what the PR replaces upstream already has ----------------------------------------


@dataclass
class Replacement:
    files: list[str]
    since: str  # the first release with the files, or the base when none is known
    added: int
    removed: int
    upstream_lines: int

    @property
    def what(self) -> str:
        return "its own " + ", ".join(self.files)

    @property
    def size(self) -> str:
        return f"+{self.added} -{self.removed}"


def _replacements(session, build, base) -> dict[str, Replacement]:
    """Units whose files the base already has (upstream-provides): what they replace."""
    out = {}
    git = session.workspace.git
    for r in build.results:
        if r.status != UPSTREAM_PROVIDES or r.commit is None:
            continue
        added = removed = lines = 0
        for _path, a, d, _status in git.numstat(r.parent, r.commit, r.files):
            added += a or 0
            removed += d or 0
        for f in r.files:
            lines += len(git.object_bytes(git.blob_id(r.parent, f))
                         .splitlines())
        out[r.unit.name] = Replacement(list(r.files), _since(session, r.files[0], base),
                                       added, removed, lines)
    return out


def _since(session, path: str, base) -> str:
    """The first release tag (up to base) that has path: a binary search over the
    release tags after the pin, fetching only the tags it probes."""
    pin = session.manifest.ref
    try:
        tags = session.mirror.local_tags() if session.offline else session.mirror.list_tags()
    except UpstreamError:
        return base.ref
    top = version_key(base.ref) if is_release(base.ref) else None
    cands = sorted((t for t in tags if is_release(t) and (top is None or version_key(t) <= top)
                    and not (pin and is_release(pin) and version_key(t) <= version_key(pin))),
                   key=version_key)
    git = session.mirror.git

    def has(tag: str) -> bool:
        sha = tags[tag]
        if not session.mirror.ensure_commit(sha, f"fetching {tag}"):
            return False
        return git.has_object(f"{sha}:{path}")

    lo, hi, found = 0, len(cands) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        if has(cands[mid]):
            found, hi = cands[mid], mid - 1
        else:
            lo = mid + 1
    return found or base.ref


def _checked(files: list[prbody.FileChange], series: "Series") -> tuple[str, ...]:
    """The checklist items the PR does: tests, docs, formatting."""
    out = []
    if series.formatters:
        out.append(prbody.CHECK_FORMAT)
    if any(_is_test(f.path) for f in files):
        out.append(prbody.CHECK_TESTS)
    if any(f.path.startswith("docs/") for f in files):
        out.append(prbody.CHECK_DOCS)
    return tuple(out)


def _is_test(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return path.startswith("test/") or "/test/" in path or name.startswith("test_")


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
    url = remote_url(root, remote)
    local = False
    if url is None:
        if is_url(remote):
            url = remote
        else:
            path = Path(remote).expanduser()
            if not path.is_absolute():
                path = (cwd or Path.cwd()) / path
            if not is_repository(path):
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


def _push(git: Git, url: str, head: str, branch: str) -> None:
    last = git.push_branch(url, head, branch)
    if last is not None:
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
                f"on the changed lines of the Python files{changed}.")


def _author(root: Path) -> tuple[str, str]:
    return user_identity(root) or (IDENTITY_NAME, IDENTITY_EMAIL)


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


# DEP-3 patch-header fields: the overlay's bookkeeping, never upstream's commits.
DEP3 = re.compile(r"^(Description|Subject|Origin|Bug(-[A-Za-z]+)?|Forwarded|Author|From|"
                  r"Reviewed-by|Acked-by|Last-Update|Applied-Upstream):\s", re.I)


def _description(unit: Unit) -> list[str]:
    """The unit's description as upstream reads it: its lines, DEP-3 fields out."""
    return [ln for ln in unit.description.strip().splitlines() if not DEP3.match(ln)]


def _body(unit: Unit, rep: "Replacement | None" = None) -> str:
    """The whole description but its first line (the summary), or the summary alone;
    for a replacement, first what it replaces."""
    lines = _description(unit)
    body = "\n".join(lines[1:]).strip() or unit.summary
    return (replacing_text(rep) + "\n\n" + body) if rep else body


def replacing_text(rep: "Replacement") -> str:
    files = ", ".join(rep.files)
    return textwrap.fill(
        f"This replaces upstream's {files} ({rep.upstream_lines} lines, in SGLang since "
        f"{rep.since}) with the implementation described below ({rep.size}).",
        width=72, break_long_words=False, break_on_hyphens=False)


def replace_subject(unit: Unit, rep: "Replacement") -> str:
    text = subject(unit)
    first, _, rest = text.partition(" ")
    if first == "Add":
        text = rest
    name = rep.files[0].rsplit("/", 1)[-1]
    return f"Replace {name} with {text[:1].lower() + text[1:] if text[1:2].islower() else text}"


def message(unit: Unit, extra: str, rep: "Replacement | None" = None) -> str:
    lines = _description(unit)
    body = "\n".join(lines[1:]).strip()
    if rep:
        body = replacing_text(rep) + ("\n\n" + body if body else "")
    msg = (replace_subject(unit, rep) if rep else subject(unit)) + "\n"
    if body:
        msg += "\n" + body + "\n"
    if extra:
        msg += "\n" + textwrap.fill(extra, width=72, break_long_words=False,
                                    break_on_hyphens=False) + "\n"
    return msg


def _motivation(unit: Unit, units: list[Unit], replaced: dict | None = None) -> str:
    replaced = replaced or {}
    text = _body(unit, replaced.get(unit.name))
    others = [u for u in units if u.name != unit.name]
    if others:
        text += ("\n\nThis pull request also includes, as a separate commit:"
                 if len(others) == 1 else
                 "\n\nThis pull request also includes, as separate commits:")
        for u in others:
            rep = replaced.get(u.name)
            title = replace_subject(u, rep) if rep else subject(u)
            text += f"\n\n- **{title}**: " + " ".join(_body(u, rep).split())
    return text


def _replay(session, manifest: Manifest, build, units: list[Unit], base: str,
            author: tuple[str, str], date: int, offline: bool,
            replaced: dict | None = None) -> Series:
    """One commit per unit on base, in a temporary worktree; the branch head last."""
    ws = session.workspace
    series = Series()
    env = identity_env(date, author)
    with durable.scratch(session.cache.root, "pr") as tmp:
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
                        f"base and the PR replaces them (--replace; {res.detail})")
                r = g.apply_3way(ws.git.binary_diff(res.parent, res.commit))
                if not r.ok:
                    raise Findings(f"unit '{res.unit.name}' does not apply after formatting "
                                   f"the units before it: {r.err.strip().splitlines()[-1]}",
                                   "format the overlay's files with upstream's black/isort")
                extra_msg = _model_extras(manifest, res.unit, wt, series)
                g.stage_all()
                changed = g.staged_paths("AMR")
                py = [f for f in changed if f.endswith(".py")]
                if tools is not None and py:
                    series.formatted += tools.format(wt, py, g.staged_lines(py))
                    g.stage_all()
                if not g.staged_paths():
                    continue
                msg = message(res.unit, extra_msg, (replaced or {}).get(res.unit.name))
                series.commits.append((g.commit_staged(msg, env), msg.splitlines()[0]))
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
    suite = edit_mod.suite_layout(
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
    return [prbody.FileChange(*change) for change in git.numstat(base, head)]


def _write_series(session, base: str, head: str, out_dir: Path, body: str,
                  tx: journal.Transaction) -> list[Path]:
    """The `git format-patch` series and PR_BODY.md, replacing an earlier series.

    Inside the overlay repository (the default, pr/<unit>/) they go into tx;
    elsewhere each file is written atomically."""
    root = tx.root
    inside = out_dir.resolve().is_relative_to(root.resolve())
    with durable.scratch(session.cache.root, "series") as tmp:
        files = session.workspace.git.format_patch(base, head, tmp)
    names = list(files)
    files[BODY_NAME] = body.encode("utf-8")
    old = [p for p in out_dir.iterdir() if PATCH_RE.match(p.name)] if out_dir.is_dir() else []
    if inside:
        rel = out_dir.resolve().relative_to(root.resolve()).as_posix()
        for p in old:
            tx.delete(f"{rel}/{p.name}")
        for name, data in files.items():
            tx.write(f"{rel}/{name}", data)
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        for p in old:
            if p.name not in files:
                p.unlink()
        for name, data in files.items():
            durable.write_bytes(out_dir / name, data)
    return [out_dir / n for n in names]


def _ours(value: str, branch: str) -> bool:
    return (value in ("no", "not-needed") or value.startswith(PREPARED_PREFIX)
            or value.endswith("#" + branch))


def _record_forwarded(tx: journal.Transaction, manifest: Manifest, unit: Unit,
                      units: list[Unit], value: str, branch: str) -> dict[str, str]:
    """Set forwarded on the unit (and on required units still "no"); what each now says."""
    out = {}
    text = tx.read(manifest_mod.MANIFEST_NAME).decode("utf-8")
    for u in units:
        mine = u.name == unit.name
        if (mine and _ours(u.forwarded, branch)) or (not mine and u.forwarded == "no"):
            if u.forwarded != value:
                text = manifest_mod.with_unit_keys(text, u.name, forwarded=value)
            out[u.name] = value
        else:
            out[u.name] = u.forwarded
    tx.write(manifest_mod.MANIFEST_NAME, text.encode("utf-8"))
    return out
