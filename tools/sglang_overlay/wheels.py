"""Wheels of the patched tree, shared by `overlay build`, `install` and `verify`.

* the version: ``<upstream version>+overlay.<12 hex of the overlay hash>``;
* the embedded manifest, ``sglang/overlay_manifest.json``: what was applied to
  which upstream commit, written as sorted-key JSON with no timestamps, so the
  same inputs give the same bytes;
* building the exported tree with PyPA ``build`` (PEP 517);
* reading and writing wheels with the ``wheel`` library's ``WheelFile``
  (it checks RECORD hashes on read and writes RECORD on close). Every wheel
  this tool produces is in one canonical form, the one ``wheel pack`` gives
  with SOURCE_DATE_EPOCH set: entries in sorted directory-walk order
  (``.dist-info`` last, RECORD at the very end), every timestamp at
  SOURCE_DATE_EPOCH (the upstream commit's committer time), modes 0644/0755,
  deflate. ``WheelContents.write`` writes that form; a backend's wheel that is
  already in it (setuptools' is, given SOURCE_DATE_EPOCH) is kept as built.

The embedded manifest (schema 1)::

    {
      "schema": 1,
      "tool": {"name": "sglang-overlay", "version": "0.1.0"},
      "name": "sglang",
      "version": "0.5.1+overlay.1a2b3c4d5e6f",
      "upstream_version": "0.5.1",
      "method": "source",                      # or "repack"
      "upstream": {"url": "...", "ref": "v0.5.1", "commit": "<40 hex>"},
      "overlay": {"hash": "<64 hex content hash>", "tree": "<patched git tree>"},
      "units": [{"name": "opt-model", "kind": "files", "status": "applied",
                 "hash": "<64 hex, this unit alone>",
                 "files": {"python/sglang/srt/models/opt.py": "<sha256>"}}, ...],
      "models": [{"architecture": "OPTForCausalLM", "unit": "opt-model",
                  "modules": ["sglang.srt.models.opt"]}],
      "files": {"sglang/srt/models/opt.py": "<sha256>", ...}   # null = deleted
    }

``files`` lists the wheel paths the overlay changed relative to upstream, so
``verify`` can tell an edited install from a stale one; the per-unit hashes
let it name the unit (and file) that changed since the build.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from . import __version__, output
from .errors import BadInput, Findings
from .gitutil import DiffEntry
from .manifest import Manifest

PACKAGE = "sglang"
MANIFEST_ARCNAME = f"{PACKAGE}/overlay_manifest.json"
LOCAL_LABEL = "overlay"
SCHEMA = 1
SHORT = 12
UPSTREAM_PREFIX = "python/"  # upstream's Python project lives under python/
MODELS_PACKAGE = "sglang/srt/models/"


# --- small helpers -----------------------------------------------------------


def require(module: str, project: str) -> None:
    """Bad input (not a traceback) when a build dependency is missing (a broken
    install: build and wheel are plain dependencies of sglang-overlay)."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise BadInput(f"{project} is not installed in {sys.executable}",
                       f"pip install {project} (or reinstall sglang-overlay, which depends on it)")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def local_version(upstream_version: str, overlay_hash: str) -> str:
    """``0.5.1+overlay.<12 hex>``, in PEP 440 normal form (what pip shows)."""
    from packaging.version import Version

    return str(Version(f"{upstream_version}+{LOCAL_LABEL}.{overlay_hash[:SHORT]}"))


def project_version(pyproject: Path, ref: str) -> str:
    """The upstream version: [project].version, or the release tag for a dynamic one."""
    from packaging.version import InvalidVersion, Version

    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BadInput(f"{ref}: python/pyproject.toml cannot be read ({exc})",
                       "build a ref whose python/ directory is SGLang's Python project")
    project = data.get("project") or {}
    if project.get("name", "").lower() != PACKAGE:
        raise BadInput(f"{ref}: python/pyproject.toml is not the sglang project "
                       f"(name = {project.get('name')!r})",
                       "pass --upstream the SGLang repository")
    version = project.get("version")
    if version is None and "version" in project.get("dynamic", []):
        version = ref[1:] if ref[:1] in "vV" else ref  # a release tag: v0.5.8
    try:
        return str(Version(str(version)))
    except InvalidVersion:
        raise BadInput(f"{ref}: cannot tell the upstream version (python/pyproject.toml "
                       "has a dynamic version and the ref is not a release tag)",
                       "build a release tag such as v0.5.8") from None


def set_project_version(pyproject: Path, version: str,
                        package_data: tuple[str, str] | None = None) -> None:
    """Write a static [project].version into an exported pyproject.toml.

    package_data=(package, file): for a setuptools backend, also declare file
    as package data of package, so the backend packages it.
    """
    import tomlkit

    doc = tomlkit.parse(pyproject.read_text(encoding="utf-8"))
    project = doc["project"]
    project["version"] = version
    dynamic = project.get("dynamic")
    if dynamic is not None and "version" in dynamic:
        rest = [d for d in dynamic if d != "version"]
        if rest:
            project["dynamic"] = rest
        else:
            del project["dynamic"]
    backend = str(doc.get("build-system", {}).get("build-backend", ""))
    if package_data and backend.startswith("setuptools"):
        package, name = package_data
        tool = doc.setdefault("tool", tomlkit.table(is_super_table=True))
        setuptools = tool.setdefault("setuptools", tomlkit.table(is_super_table=True))
        data = setuptools.setdefault("package-data", tomlkit.table())
        files = data.setdefault(package, tomlkit.array())
        if name not in files:
            files.append(name)
    pyproject.write_text(tomlkit.dumps(doc), encoding="utf-8")


@contextlib.contextmanager
def source_date_epoch(epoch: int):
    """SOURCE_DATE_EPOCH for WheelFile (it reads it from the environment)."""
    old = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = str(int(epoch))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SOURCE_DATE_EPOCH", None)
        else:
            os.environ["SOURCE_DATE_EPOCH"] = old


# --- reading and writing wheels ------------------------------------------------


@dataclass
class WheelContents:
    """A wheel's files in memory: arcname -> (bytes, 0o644 | 0o755)."""

    name: str  # the distribution part of the filename, e.g. "sglang"
    version: str
    tags: str  # "py3-none-any"
    build: str | None = None  # the optional build tag of the filename
    entries: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    path: Path | None = None

    @property
    def dist_info(self) -> str:
        return f"{self.name}-{self.version}.dist-info"

    @property
    def filename(self) -> str:
        build = f"-{self.build}" if self.build else ""
        return f"{self.name}-{self.version}{build}-{self.tags}.whl"

    @classmethod
    def read(cls, path: Path) -> "WheelContents":
        """Read and check a wheel: its name, its zip, and every RECORD hash."""
        require("wheel", "wheel")
        from packaging.utils import InvalidWheelFilename, parse_wheel_filename
        from wheel.wheelfile import WheelError, WheelFile

        path = Path(path)
        try:
            _name, _version, build_tag, _tags = parse_wheel_filename(path.name)
        except InvalidWheelFilename as exc:
            raise BadInput(f"{path}: not a wheel ({exc})",
                           "pass a .whl file named name-version-tags.whl") from None
        # parse_wheel_filename validated the name; keep its parts as spelled,
        # since the file name and the .dist-info directory are written back
        parts = path.name[: -len(".whl")].split("-")
        name, version, tags = parts[0], parts[1], "-".join(parts[-3:])
        build = parts[2] if build_tag else None
        entries: dict[str, tuple[bytes, int]] = {}
        try:
            with WheelFile(path) as wf:
                for info in wf.infolist():
                    if info.is_dir():
                        continue
                    data = wf.read(info)  # raises WheelError on a RECORD mismatch
                    entries[info.filename] = (data, _mode(info))
        except (zipfile.BadZipFile, WheelError, OSError, KeyError, ValueError) as exc:
            raise BadInput(f"{path}: not a valid wheel ({exc})",
                           "pass the .whl file exactly as downloaded from the index") from None
        w = cls(name=name, version=version, tags=tags, build=build, entries=entries, path=path)
        if not any(k.startswith(w.dist_info + "/") for k in entries):
            # the dist-info directory may use another spelling of the name
            tops = {k.split("/", 1)[0] for k in entries}
            infos = {t for t in tops if t.endswith(".dist-info")}
            if len(infos) != 1:
                raise BadInput(f"{path}: not a valid wheel (no single .dist-info directory)",
                               "pass the .whl file exactly as downloaded from the index")
            w.name = infos.pop()[: -len(".dist-info")].rsplit("-", 1)[0]
        return w

    def top_levels(self) -> set[str]:
        """Top-level package directories (not .dist-info / .data)."""
        out = set()
        for name in self.entries:
            top, sep, _ = name.partition("/")
            if sep and not top.endswith((".dist-info", ".data")):
                out.add(top)
        return out

    def set_version(self, version: str) -> None:
        """Rename the .dist-info directory and rewrite METADATA's Version."""
        old_prefix = self.dist_info + "/"
        meta_key = old_prefix + "METADATA"
        if meta_key not in self.entries:
            raise BadInput(f"{self.path}: no {meta_key}", "pass a complete wheel")
        data, mode = self.entries[meta_key]
        self.entries[meta_key] = (_replace_version(data, version), mode)
        self.version = version
        new_prefix = self.dist_info + "/"
        if new_prefix != old_prefix:
            self.entries = {
                (new_prefix + k[len(old_prefix):] if k.startswith(old_prefix) else k): v
                for k, v in self.entries.items()
            }
        self.entries.pop(self.dist_info + "/RECORD", None)

    def order(self) -> list[str]:
        """The entries in the order the ``wheel`` library's ``WheelFile.write_files``
        (``wheel pack``, setuptools' bdist_wheel) writes them: a directory walk,
        each directory's files (sorted) before its subdirectories (sorted), with
        the files directly in .dist-info deferred to the end, sorted. RECORD,
        written on close, is not listed."""
        prefix = self.dist_info + "/"

        def deferred(name: str) -> bool:
            return name.startswith(prefix) and "/" not in name[len(prefix):]

        def walk_key(name: str):
            *dirs, leaf = name.split("/")
            return tuple((1, d) for d in dirs) + ((0, leaf),)

        body = sorted((n for n in self.entries if not deferred(n)), key=walk_key)
        meta = sorted(n for n in self.entries if deferred(n) and n != prefix + "RECORD")
        return body + meta

    def write(self, dest_dir: Path, epoch: int) -> Path:
        """Write the wheel reproducibly; returns its path. RECORD is regenerated."""
        from wheel.wheelfile import WheelFile

        dest_dir.mkdir(parents=True, exist_ok=True)
        path = dest_dir / self.filename
        with source_date_epoch(epoch):
            stamp = _stamp(epoch)
            with WheelFile(path, "w", compression=zipfile.ZIP_DEFLATED) as wf:
                for name in self.order():
                    data, mode = self.entries[name]
                    info = zipfile.ZipInfo(name, date_time=stamp)
                    info.create_system = 3  # unix, so the modes below mean the same everywhere
                    info.external_attr = (mode | stat.S_IFREG) << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    wf.writestr(info, data)
        return path

    def written_as(self, path: Path, epoch: int) -> bool:
        """Whether the wheel at path is already exactly what ``write`` makes of
        these entries: same order, timestamps, modes, compression and RECORD.

        A PEP 517 backend that honours SOURCE_DATE_EPOCH and writes with the
        ``wheel`` library's WheelFile (setuptools does) passes, and its wheel
        is kept as it is; anything else is rewritten.
        """
        stamp = _stamp(epoch)
        record = self.dist_info + "/RECORD"
        order = self.order()
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if [i.filename for i in infos] != order + [record]:
                return False
            for info in infos:
                mode = 0o664 if info.filename == record else self.entries[info.filename][1]
                if (info.date_time != stamp or info.create_system != 3
                        or info.external_attr != (mode | stat.S_IFREG) << 16
                        or info.compress_type != zipfile.ZIP_DEFLATED
                        or info.extra or info.comment):
                    return False
            if zf.comment:
                return False
            return zf.read(record) == _record_text(order, self.entries, record)


def _stamp(epoch: int) -> tuple:
    from wheel.wheelfile import get_zipinfo_datetime

    with source_date_epoch(epoch):
        return get_zipinfo_datetime(epoch)


def _record_text(order: list[str], entries: dict, record: str) -> bytes:
    """RECORD as the wheel library's WheelFile writes it for entries in order."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=",", quotechar='"', lineterminator="\n")
    for name in order:
        data = entries[name][0]
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        writer.writerow((name, f"sha256={digest}", len(data)))
    writer.writerow((record, "", ""))
    return out.getvalue().encode("utf-8")


def _mode(info: zipfile.ZipInfo) -> int:
    return 0o755 if (info.external_attr >> 16) & 0o111 else 0o644


def _replace_version(metadata: bytes, version: str) -> bytes:
    """METADATA with its Version header replaced, everything else byte for byte."""
    head, sep, body = metadata.partition(b"\n\n")
    lines = head.split(b"\n")
    hits = [i for i, line in enumerate(lines) if line.lower().startswith(b"version:")]
    if len(hits) != 1:
        raise BadInput("the wheel's METADATA has no single Version header",
                       "pass the .whl file exactly as downloaded from the index")
    lines[hits[0]] = b"Version: " + version.encode()
    return b"\n".join(lines) + sep + body


def provided_extras(path: Path) -> list[str]:
    """The extras a wheel file's METADATA declares (Provides-Extra)."""
    try:
        with zipfile.ZipFile(path) as zf:
            name = next((n for n in zf.namelist()
                         if n.count("/") == 1 and n.endswith(".dist-info/METADATA")), None)
            text = zf.read(name).decode("utf-8", "replace") if name else ""
    except (zipfile.BadZipFile, OSError, KeyError):
        return []
    return [line.split(":", 1)[1].strip() for line in text.splitlines()
            if line.lower().startswith("provides-extra:")]


def read_embedded(path: Path) -> dict | None:
    """The embedded manifest of a wheel file, or None."""
    try:
        with zipfile.ZipFile(path) as zf:
            return json.loads(zf.read(MANIFEST_ARCNAME))
    except (KeyError, zipfile.BadZipFile, OSError, ValueError):
        return None


# --- what the overlay changed ---------------------------------------------------


def relpath(path: str) -> str:
    """An upstream path (python/...) as the wheel holds it."""
    return path[len(UPSTREAM_PREFIX):]


def changed_paths(git, base: str, head: str) -> list[DiffEntry]:
    """Files under python/ that differ between base and head (renames split), by path."""
    return sorted(git.diff_raw(base, head, (UPSTREAM_PREFIX,)), key=lambda c: c.path)


def map_changes(contents: WheelContents,
                changes: list[DiffEntry]) -> tuple[list[DiffEntry], list[str]]:
    """(changes inside the wheel's packages, upstream paths a wheel cannot carry)."""
    tops = contents.top_levels()
    inside, skipped = [], []
    for c in changes:
        rel = relpath(c.path)
        if rel.split("/", 1)[0] in tops and "/" in rel:
            inside.append(c)
        else:
            skipped.append(c.path)
    return inside, skipped


# --- fingerprints of the overlay ------------------------------------------------


def unit_fingerprints(manifest: Manifest, upstream_commit: str) -> dict[str, dict]:
    """Per active unit: its own content hash, and what it is made of."""
    out = {}
    for u in manifest.active_units:
        fp = {"kind": u.kind,
              "hash": dataclasses.replace(manifest, units=[u]).content_hash(upstream_commit)}
        if u.kind == "files":
            fp["files"] = {rel: _overlay_file_digest(manifest.overlay_dir / rel)
                           for rel in manifest.unit_files(u)}
        elif u.kind == "patch":
            fp["patch"] = u.patch
        out[u.name] = fp
    return out


def _overlay_file_digest(p: Path) -> str:
    if p.is_symlink():
        return sha256_bytes(os.readlink(p).encode())
    return sha256_file(p)


def model_modules(manifest: Manifest) -> list[dict]:
    """Each declared model and the modules its files unit adds (where known)."""
    out = []
    for m in manifest.models:
        modules: list[str] = []
        unit = next((u for u in manifest.units if u.name == m.unit), None)
        if unit is not None and unit.kind == "files" and not unit.retired:
            for rel in manifest.unit_files(unit):
                if rel.startswith(UPSTREAM_PREFIX + MODELS_PACKAGE) and rel.endswith(".py"):
                    mod = rel[len(UPSTREAM_PREFIX):-3].replace("/", ".")
                    modules.append(mod.removesuffix(".__init__"))
        out.append({"architecture": m.architecture, "unit": m.unit, "modules": modules})
    return out


def embedded_manifest(*, manifest: Manifest, build, url: str, version: str,
                      upstream_version: str, method: str, overlay_hash: str,
                      files: dict[str, str | None]) -> dict:
    fps = unit_fingerprints(manifest, build.base)
    units = []
    for r in build.results:
        entry = {"name": r.unit.name, "kind": r.unit.kind, "status": r.status}
        fp = fps.get(r.unit.name)
        if fp:
            entry["hash"] = fp["hash"]
            for key in ("files", "patch"):
                if key in fp:
                    entry[key] = fp[key]
        units.append(entry)
    return {
        "schema": SCHEMA,
        "tool": {"name": "sglang-overlay", "version": __version__},
        "name": PACKAGE,
        "version": version,
        "upstream_version": upstream_version,
        "method": method,
        "upstream": {"url": url, "ref": build.ref, "commit": build.base},
        "overlay": {"hash": overlay_hash, "tree": build.tree},
        "units": units,
        "models": model_modules(manifest),
        "files": dict(sorted(files.items())),
    }


def dump_manifest(data: dict) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def compare(embedded: dict, manifest: Manifest) -> list[str]:
    """What differs between the overlay an install was built from and the current one.

    Empty when the current overlay's content hash, on the install's upstream
    commit, equals the one the wheel records.
    """
    commit = embedded["upstream"]["commit"]
    if manifest.content_hash(commit) == embedded["overlay"]["hash"]:
        return []
    now = unit_fingerprints(manifest, commit)
    then = {u["name"]: u for u in embedded.get("units", []) if u.get("hash")}
    diffs = []
    for name, fp in now.items():
        old = then.get(name)
        if old is None:
            diffs.append(f"unit '{name}' was added")
        elif old["hash"] != fp["hash"]:
            diffs.append(f"unit '{name}' changed" + _what_changed(old, fp))
    diffs += [f"unit '{name}' was removed or retired" for name in then if name not in now]
    if not diffs:
        if [n for n in then] != [n for n in now]:
            diffs.append("the order of the units changed")
        else:
            diffs.append("the overlay's content hash differs")
    return diffs


def _what_changed(old: dict, new: dict) -> str:
    if new["kind"] != old.get("kind"):
        return f" (kind {old.get('kind')} -> {new['kind']})"
    if new["kind"] == "files":
        a, b = old.get("files", {}), new.get("files", {})
        parts = [f"{p} differs" for p in sorted(b) if p in a and a[p] != b[p]]
        parts += [f"{p} added" for p in sorted(b) if p not in a]
        parts += [f"{p} removed" for p in sorted(a) if p not in b]
        return f" ({', '.join(parts)})" if parts else ""
    if new["kind"] == "patch":
        return f" ({new.get('patch')} differs)"
    return " (its edit or the models it registers differ)"


def find_built(manifest: Manifest, dist: Path) -> list[Path]:
    """Wheels in dist built from the current overlay for the pinned ref, newest first."""
    found = []
    for p in dist.glob(f"{PACKAGE}-*.whl") if dist.is_dir() else []:
        emb = read_embedded(p)
        try:
            up = emb["upstream"]
            if up["ref"] != manifest.ref:
                continue
            if manifest.commit and up["commit"] != manifest.commit:
                continue
            if manifest.content_hash(up["commit"]) != emb["overlay"]["hash"]:
                continue
        except (TypeError, KeyError):
            continue
        found.append(p)
    return sorted(found, key=lambda p: (p.stat().st_mtime, p.name), reverse=True)


# --- building from source (PEP 517) ---------------------------------------------


class _Runner:
    """Runs backend hooks quietly, keeping their output for the error message."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.log: list[str] = []

    def __call__(self, cmd, cwd=None, extra_environ=None):
        env = {**os.environ, **self.env, **(extra_environ or {})}
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, umask=0o022)
        self.log += proc.stdout.decode("utf-8", "replace").splitlines()
        if proc.returncode:
            raise subprocess.CalledProcessError(proc.returncode, cmd, proc.stdout)

    def last_line(self) -> str:
        for line in reversed(self.log):
            if line.strip() and not set(line.strip()) <= set("*!=-"):
                return line.strip()
        return "no output"


def build_from_source(project: Path, outdir: Path, epoch: int,
                      offline: bool) -> tuple[Path, str]:
    """Build a wheel of project with PyPA build; returns (wheel, isolation).

    Non-isolated when this interpreter already has every build requirement
    (fast, works offline, and the backend version is the one installed here
    rather than whatever the index serves today); isolated otherwise.
    """
    require("build", "build")
    import build as pypa_build
    from build.env import DefaultIsolatedEnv

    runner = _Runner({"SOURCE_DATE_EPOCH": str(epoch), "PYTHONHASHSEED": "0"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            builder = pypa_build.ProjectBuilder(project, python_executable=sys.executable,
                                                runner=runner)
            # The static requirements decide; like `pip wheel --no-build-isolation`
            # the backend's dynamic ones are only asked for when the build fails.
            missing = {m for r in builder.build_system_requires
                       for m in pypa_build.check_dependency(r)}
            if not missing:
                try:
                    return Path(builder.build("wheel", outdir)), "none"
                except pypa_build.BuildBackendException:
                    missing = builder.check_dependencies("wheel")
                    if not missing:
                        raise
            need = ", ".join(sorted(" -> ".join(m) for m in missing))
            if offline:
                quoted = " ".join(f"'{r}'" for r in sorted(m[0] for m in missing))
                raise BadInput(f"building needs {need}, which this environment lacks, and "
                               "--offline forbids an isolated build environment",
                               f"pip install {quoted}, or drop --offline")
            with DefaultIsolatedEnv() as env:
                iso = pypa_build.ProjectBuilder.from_isolated_env(env, project, runner=runner)
                env.install(iso.build_system_requires)
                env.install(iso.get_requires_for_build("wheel"))
                return Path(iso.build("wheel", outdir)), "isolated"
        except (pypa_build.BuildException, pypa_build.BuildBackendException,
                pypa_build.FailedProcessError, subprocess.CalledProcessError) as exc:
            tail = "\n".join(runner.log[-25:])
            if tail:
                output.passthrough(tail + "\n")
            what = runner.last_line() if runner.log else str(exc)
            raise Findings(f"building the wheel failed: {what}",
                           "fix the build error above; for releases with compiled extensions "
                           "pass --repack <upstream's wheel for that version>") from None
        finally:
            runner.log += [f"warning: {w.message}" for w in caught]
