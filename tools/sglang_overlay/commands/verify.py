"""`overlay verify`: is the sglang in an environment the current overlay's build?

Checks, in order (a table, or --json):

  python    the target interpreter runs
  sglang    it can find an sglang package (``importlib.util.find_spec`` in a
            small ``-c`` script: sglang is never imported for this), and the
            distribution's version agrees with the embedded manifest
  manifest  the package carries ``sglang/overlay_manifest.json``
  overlay   the current overlay's content hash, recomputed for the upstream
            commit the manifest records, equals the recorded one; if not, the
            per-unit hashes name the unit (and file) that changed
  files     the installed copies of the files the overlay changed still have
            the bytes the wheel shipped (nobody edited site-packages)
  registry  on a machine where the target imports torch with CUDA: each
            [[model]] architecture resolves through the real
            ``sglang.srt.models.registry.ModelRegistry.resolve_model_cls`` to
            the overlay's class (its module is the overlay's module, and not
            the TransformersForCausalLM fallback). Elsewhere: ``needs-gpu``.

Exit codes: 0 when every check is ok, or ok except ``registry: needs-gpu``
(the install is verified; only the GPU-side check could not run here, and the
table and JSON say so); 1 for any finding: sglang missing, not an overlay
build, stale, edited files, a registry fallback or error; 2 for bad input
(the interpreter does not exist, does not run, or cannot be inspected).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import click

from .. import report, wheels
from ..errors import FINDINGS, OK, BadInput, Findings
from ..interpreters import interpreter
from ..manifest import load
from . import open_root

TRANSFORMERS_FALLBACK = "TransformersForCausalLM"
MARKER = "@@overlay-verify@@"
REGISTRY_TIMEOUT = 1800  # importing every model module on a cold GPU box is slow

# Runs in the target interpreter. Locates sglang without importing it.
PROBE_SCRIPT = r"""
import importlib.util, json, sys
out = {"executable": sys.executable, "python": sys.version.split()[0]}
try:
    spec = importlib.util.find_spec("sglang")
except Exception as exc:
    spec = None
    out["error"] = type(exc).__name__ + ": " + str(exc)
if spec is not None:
    out["origin"] = spec.origin
    out["locations"] = list(spec.submodule_search_locations or [])
try:
    from importlib import metadata
    dist = metadata.distribution("sglang")
    out["dist_version"] = dist.version
    out["dist_site"] = str(dist.locate_file(""))
except Exception:
    out["dist_version"] = None
print(%(marker)r + json.dumps(out))
""" % {"marker": MARKER}

# Runs in the target interpreter on the GPU machine: imports torch and sglang's
# real model registry and resolves each declared architecture.
REGISTRY_SCRIPT = r"""
import importlib, json, sys

request = json.loads(sys.argv[1])


def done(**answer):
    sys.stdout.write("\n" + %(marker)r + json.dumps(answer) + "\n")
    sys.stdout.flush()
    sys.exit(0)


def short(exc):
    text = "%%s: %%s" %% (type(exc).__name__, exc)
    return text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__


try:
    import torch
except Exception as exc:
    done(status="needs-gpu", detail="torch is not importable here (%%s)" %% short(exc))
try:
    cuda = bool(torch.cuda.is_available())
except Exception as exc:
    done(status="needs-gpu", detail="torch.cuda.is_available() failed (%%s)" %% short(exc))
if not cuda:
    done(status="needs-gpu",
         detail="CUDA is not available to torch %%s" %% getattr(torch, "__version__", "?"))
try:
    import sglang
    from sglang.srt.models.registry import ModelRegistry
except Exception as exc:
    done(status="error", detail="cannot import sglang.srt.models.registry: %%s" %% short(exc))

models = []
for want in request["models"]:
    arch = want["architecture"]
    entry = {"architecture": arch}
    try:
        cls, resolved = ModelRegistry.resolve_model_cls([arch])
        entry["resolved"] = resolved
        entry["module"] = getattr(cls, "__module__", None)
        entry["class"] = getattr(cls, "__qualname__", repr(cls))
    except Exception as exc:
        entry["error"] = short(exc)
    wrong = (entry.get("error") or entry.get("resolved") != arch
             or (want["modules"] and entry.get("module") not in want["modules"]))
    if wrong:  # say why the overlay's module did not register
        for mod in want["modules"]:
            try:
                importlib.import_module(mod)
            except Exception as exc:
                entry.setdefault("import_errors", {})[mod] = short(exc)
    models.append(entry)
done(status="ran", torch=getattr(torch, "__version__", "?"),
     location=[str(p) for p in getattr(sglang, "__path__", [])], models=models)
""" % {"marker": MARKER}


@dataclass
class Check:
    check: str
    status: str
    detail: str
    line: str = ""  # the one-line summary of a finding
    fix: str = ""

    def to_json(self) -> dict:
        return {"check": self.check, "status": self.status, "detail": self.detail}


VERIFY_OK = {"ok", "needs-gpu", "skipped"}


def run(opts, python, as_json) -> int:
    py = interpreter(python, opts.directory)
    root = open_root(opts)  # checked, and an interrupted change finished
    manifest = load(root)
    rebuild = f"overlay build && overlay install --python {py}"
    checks: list[Check] = []
    probe = _run_marked([py, "-c", PROBE_SCRIPT], timeout=120)
    if probe is None:
        raise BadInput(f"--python {py}: cannot inspect it (the probe script failed)",
                       "pass a Python 3 interpreter of the environment, e.g. .venv/bin/python")
    checks.append(Check("python", "ok", f"{probe['executable']} (Python {probe['python']})"))

    pkg = _package_dir(probe)
    embedded = None
    registry: list[dict] = []
    if pkg is None:
        what = f"sglang is not installed in {py}"
        if probe.get("error"):
            what += f" ({probe['error']})"
        checks.append(Check("sglang", "missing", what, what, f"overlay install --python {py}"))
        for name in ("manifest", "overlay", "files", "registry"):
            checks.append(Check(name, "skipped", "sglang is not installed"))
        return _finish(checks, py, None, None, registry, as_json)

    mpath = pkg / "overlay_manifest.json"
    dist_version = probe.get("dist_version")
    if mpath.is_file():
        try:
            embedded = json.loads(mpath.read_text(encoding="utf-8"))
            _ = (embedded["upstream"]["commit"], embedded["overlay"]["hash"], embedded["version"])
        except (ValueError, KeyError, TypeError) as exc:
            embedded = None
            checks.append(_sglang_check(pkg, dist_version, None))
            checks.append(Check("manifest", "unreadable", f"{mpath}: {exc}",
                                f"{mpath} is not a readable overlay manifest", rebuild))
        else:
            checks.append(_sglang_check(pkg, dist_version, embedded))
            checks.append(_manifest_check(mpath, embedded))
    else:
        checks.append(_sglang_check(pkg, dist_version, None))
        what = (f"sglang {dist_version or '(unknown version)'} in {py} is not an overlay build "
                f"(no {wheels.MANIFEST_ARCNAME})")
        checks.append(Check("manifest", "not-overlay", what, what, rebuild))

    if embedded is not None and checks[-1].status == "ok":
        checks.append(_overlay_check(manifest, embedded, rebuild))
        checks.append(_files_check(pkg.parent, embedded, py))
    else:
        checks.append(Check("overlay", "skipped", "no embedded manifest to compare"))
        checks.append(Check("files", "skipped", "no embedded manifest to compare"))

    reg_check, registry = _registry_check(py, manifest, pkg)
    checks.append(reg_check)
    return _finish(checks, py, pkg, embedded, registry, as_json)


# --- the checks ----------------------------------------------------------------


def _package_dir(probe: dict) -> Path | None:
    for loc in probe.get("locations") or []:
        if (Path(loc) / wheels.MANIFEST_ARCNAME.split("/", 1)[1]).is_file():
            return Path(loc)
    locs = probe.get("locations") or []
    if locs:
        return Path(locs[0])
    if probe.get("origin"):  # a module, not a package: certainly not our build
        return Path(probe["origin"]).parent / "sglang"
    return None


def _sglang_check(pkg: Path, dist_version: str | None, embedded: dict | None) -> Check:
    from ..versions import same_version

    shown = dist_version or (embedded or {}).get("version") or "(no distribution metadata)"
    detail = f"{shown} at {pkg}"
    if embedded is None or dist_version is None:
        return Check("sglang", "ok", detail)
    if same_version(dist_version, embedded["version"]):
        return Check("sglang", "ok", detail)
    what = (f"the installed distribution is sglang {dist_version}, but the package at {pkg} "
            f"carries the manifest of {embedded['version']} (another sglang shadows it?)")
    return Check("sglang", "mismatch", what, what, "reinstall with `overlay install`")


def _manifest_check(mpath: Path, embedded: dict) -> Check:
    schema = embedded.get("schema", 0)
    if schema > wheels.SCHEMA:
        what = (f"{mpath} has schema {schema}; this sglang-overlay reads "
                f"schema {wheels.SCHEMA}")
        return Check("manifest", "unreadable", what, what, "upgrade sglang-overlay")
    up = embedded["upstream"]
    units = embedded.get("units", [])
    tool = embedded.get("tool", {})
    return Check("manifest", "ok",
                 f"{up.get('ref')} ({up['commit'][:12]}), {report.plural(len(units), 'unit')}, "
                 f"{embedded.get('method', '?')} build by sglang-overlay "
                 f"{tool.get('version', '?')}")


def _overlay_check(manifest, embedded: dict, rebuild: str) -> Check:
    diffs = wheels.compare(embedded, manifest)
    up = embedded["upstream"]
    short = embedded["overlay"]["hash"][:wheels.SHORT]
    if diffs:
        what = f"stale install: since the wheel was built, {'; '.join(diffs)}"
        return Check("overlay", "stale", "; ".join(diffs), what, rebuild)
    detail = f"hash {short} matches the current overlay on {up.get('ref')} ({up['commit'][:12]})"
    if manifest.ref and up.get("ref") != manifest.ref:
        detail += f"; note: the overlay now pins {manifest.ref}"
    elif manifest.commit and up["commit"] != manifest.commit:
        detail += f"; note: the overlay now locks {manifest.ref} at {manifest.commit[:12]}"
    return Check("overlay", "ok", detail)


def _files_check(site: Path, embedded: dict, py: str) -> Check:
    files = embedded.get("files") or {}
    bad = []
    for rel, digest in sorted(files.items()):
        p = site / rel
        if digest is None:
            if p.exists():
                bad.append(f"{rel} is present (the overlay deletes it)")
        elif not p.is_file():
            bad.append(f"{rel} is missing")
        elif wheels.sha256_file(p) != digest:
            bad.append(f"{rel} was edited after install")
    if bad:
        what = f"installed overlay files differ from the wheel: {'; '.join(bad)}"
        return Check("files", "modified", "; ".join(bad), what,
                     f"reinstall the wheel: overlay install --python {py}")
    return Check("files", "ok", f"{len(files)} overlay files as the wheel shipped them")


def _registry_check(py: str, manifest, pkg: Path) -> tuple[Check, list[dict]]:
    wanted = wheels.model_modules(manifest)
    if not wanted:
        return Check("registry", "skipped", "the overlay declares no [[model]]"), []
    archs = ", ".join(m["architecture"] for m in wanted)
    answer = _run_marked([py, "-c", REGISTRY_SCRIPT, json.dumps({"models": wanted})],
                         timeout=REGISTRY_TIMEOUT)
    if answer is None:
        what = f"the registry check crashed in {py}"
        return Check("registry", "error", what, what, "run it by hand to see the error"), []
    status = answer.get("status")
    if status == "needs-gpu":
        return Check("registry", "needs-gpu",
                     f"{answer.get('detail')}: resolving {archs} through sglang's ModelRegistry "
                     "needs the GPU environment; run `overlay verify` there"), []
    if status != "ran":
        what = f"registry: {answer.get('detail', 'no answer')}"
        return Check("registry", "error", answer.get("detail", ""), what,
                     "import sglang in that environment to see the full error"), []
    models = answer.get("models", [])
    ok, bad = [], []
    expect = {m["architecture"]: m for m in wanted}
    for r in models:
        arch = r["architecture"]
        modules = expect.get(arch, {}).get("modules", [])
        why = ""
        if r.get("import_errors"):
            why = " (" + "; ".join(f"{m} failed to import: {e}"
                                   for m, e in sorted(r["import_errors"].items())) + ")"
        if r.get("error"):
            bad.append(f"{arch} does not resolve: {r['error']}{why}")
        elif r.get("resolved") == TRANSFORMERS_FALLBACK:
            bad.append(f"{arch} falls back to {TRANSFORMERS_FALLBACK} "
                       f"({r.get('module')}.{r.get('class')}){why}")
        elif r.get("resolved") != arch:
            bad.append(f"{arch} resolves as {r.get('resolved')} "
                       f"({r.get('module')}.{r.get('class')}){why}")
        elif modules and r.get("module") not in modules:
            bad.append(f"{arch} resolves to {r.get('module')}.{r.get('class')}, not the "
                       f"overlay's {' or '.join(modules)}{why}")
        else:
            ok.append(f"{arch} -> {r.get('module')}.{r.get('class')}")
    loc = answer.get("location") or []
    if loc and Path(loc[0]).resolve() != pkg.resolve():
        bad.append(f"the registry came from {loc[0]}, not {pkg}")
    if bad:
        what = f"registry: {'; '.join(bad)}"
        return Check("registry", "fallback" if any(TRANSFORMERS_FALLBACK in b for b in bad)
                     else "error", "; ".join(bad), what,
                     "check that the overlay's model module imports in that environment"), models
    return Check("registry", "ok", "; ".join(ok) + f" (torch {answer.get('torch')}, CUDA)"), models


# --- plumbing --------------------------------------------------------------------


def _run_marked(cmd: list[str], timeout: int) -> dict | None:
    """Run a probe in a fresh empty directory (so the cwd shadows nothing)."""
    with tempfile.TemporaryDirectory(prefix="overlay-verify-") as cwd:
        try:
            proc = subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired):
            return None
    for line in reversed(proc.stdout.decode("utf-8", "replace").splitlines()):
        if line.startswith(MARKER):
            try:
                return json.loads(line[len(MARKER):])
            except ValueError:
                return None
    return None


def _finish(checks: list[Check], py: str, pkg: Path | None, embedded: dict | None,
            registry: list[dict], as_json: bool) -> int:
    findings = [c for c in checks if c.status not in VERIFY_OK]
    code = FINDINGS if findings else OK
    if as_json:
        report.emit_json({
            "python": py,
            "package": str(pkg) if pkg else None,
            "checks": [c.to_json() for c in checks],
            "manifest": embedded,
            "registry": registry,
            "exit_code": code,
        })
    else:
        click.echo(report.table(("CHECK", "STATUS", "DETAIL"),
                                [[c.check, c.status, c.detail] for c in checks], color_col=1))
    if findings:
        first = findings[0]
        more = f" (+{len(findings) - 1} more in the table)" if len(findings) > 1 else ""
        raise Findings(f"{first.line}{more}", first.fix)  # cli.main: the line, exit 1
    return code
