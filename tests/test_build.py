"""`overlay build`, `install` and `verify` on the real SGLang v0.5.1 release
(the local upstream built from PyPI) with this repository's own overlay.

The registry check of `verify` needs torch with CUDA and a real sglang; here it
runs against STAND-INS of the same shape (a fake `sglang` carrying the real
embedded manifest and the real overlay files, whose
`sglang.srt.models.registry.ModelRegistry.resolve_model_cls` returns classes,
and a fake `torch` whose `cuda.is_available()` is True). Those tests are named
`test_standin_*`; what they show is that verify's real code path asks the
registry and judges its answer, not that sglang registers the model on a GPU.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

import local_upstream
from helpers import ROOT, git, overlay, upstream_file
import helpers
from sglang_overlay import __version__
from sglang_overlay.manifest import load

REF = "v0.5.1"
OPT = "python/sglang/srt/models/opt.py"
PARALLEL = "python/sglang/srt/distributed/parallel_state.py"
EXPERT = "python/sglang/srt/eplb/expert_location.py"
PATCHED = (PARALLEL, EXPERT)
UNITS = [
    ("opt-model", "files", "applied"),
    ("reuse-distributed-test", "files", "applied"),
    ("parallel-state-reuse", "patch", "applied"),
    ("expert-location-reset", "patch", "applied"),
    ("opt-test-case", "edit", "applied"),
]
JSON_KEYS = {"wheel", "sha256", "version", "ref", "base", "overlay_hash", "units",
             "method", "seconds"}


# --- fixtures -------------------------------------------------------------------


def copy_repo_overlay(dest: Path) -> Path:
    return helpers.copy_repo_overlay(dest)


@pytest.fixture(scope="module")
def ov(tmp_path_factory) -> Path:
    return copy_repo_overlay(tmp_path_factory.mktemp("build") / "ov")


@pytest.fixture(scope="module")
def base(upstream) -> str:
    return git(upstream, "rev-parse", f"{REF}^{{commit}}")


@pytest.fixture(scope="module")
def source_build(ov, upstream, shared_cache, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("out-a")
    r = overlay("-C", ov, "build", "--upstream", upstream, "--out", out, "--json",
                cache=shared_cache)
    assert r.rc == 0, r.err
    return r.json


@pytest.fixture(scope="module")
def dist_build(ov, upstream, tmp_path_factory) -> dict:
    """A second build, as on another machine: fresh cache, default --out (dist/)."""
    r = overlay("-C", ov, "build", "--upstream", upstream, "--json",
                cache=tmp_path_factory.mktemp("fresh-cache"))
    assert r.rc == 0, r.err
    return r.json


@pytest.fixture(scope="module")
def patched_tree(upstream, tmp_path_factory) -> Path:
    """The oracle: upstream v0.5.1 with the two patches applied by plain `git apply`."""
    clone = tmp_path_factory.mktemp("oracle") / "sglang"
    git(clone.parent, "clone", "-q", "--no-checkout", str(upstream), str(clone))
    git(clone, "checkout", "-q", "--detach", REF)
    for patch in ("parallel-state-reuse.patch", "expert-location-reset.patch"):
        git(clone, "apply", str(ROOT / "patches" / patch))
    return clone


@pytest.fixture(scope="module")
def upstream_wheel() -> Path:
    """sglang 0.5.1's official wheel from PyPI, downloaded once into the test cache."""
    cache = local_upstream.cache_dir() / "wheels"
    path = cache / "sglang-0.5.1-py3-none-any.whl"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary",
                        ":all:", "sglang==0.5.1", "-d", str(cache)],
                       check=True, capture_output=True)
    assert zipfile.is_zipfile(path)
    return path


def make_venv(path: Path, with_pip: bool = True) -> str:
    args = [sys.executable, "-m", "venv", str(path)] + ([] if with_pip else ["--without-pip"])
    subprocess.run(args, check=True, capture_output=True)
    return str(path / "bin" / "python")


@pytest.fixture(scope="module")
def venv_py(tmp_path_factory) -> str:
    """A fresh venv (with the pip venv bundles; nothing upgraded, nothing downloaded)."""
    return make_venv(tmp_path_factory.mktemp("venv") / "env")


@pytest.fixture(scope="module")
def bare_py(tmp_path_factory) -> str:
    """A fresh venv without pip and without sglang."""
    return make_venv(tmp_path_factory.mktemp("bare") / "env", with_pip=False)


# --- checks written independently of the code under test ---------------------------


def record_errors(wheel: Path) -> list[str]:
    """Recompute every RECORD hash and size of a wheel."""
    errors = []
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        (record,) = [n for n in names if n.endswith(".dist-info/RECORD")]
        rows = {r[0]: r[1:] for r in csv.reader(io.StringIO(zf.read(record).decode())) if r}
        assert rows.pop(record) == ["", ""]
        for n in names:
            if n == record:
                continue
            data = zf.read(n)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            if rows.pop(n, None) != [f"sha256={digest}", str(len(data))]:
                errors.append(n)
        errors += [f"{n} (not in the wheel)" for n in rows]
    return errors


def wheel_files(wheel: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("overlay: ")
    return lines[0]


# --- build from source ----------------------------------------------------------------


def test_source_build_version_files_and_embedded_manifest(source_build, ov, base, upstream,
                                                          patched_tree):
    overlay_hash = load(ov).content_hash(base)
    version = f"0.5.1+overlay.{overlay_hash[:12]}"
    r = source_build
    assert JSON_KEYS <= set(r)
    assert (r["version"], r["ref"], r["base"], r["overlay_hash"], r["method"]) == (
        version, REF, base, overlay_hash, "source")
    assert [(u["name"], u["kind"], u["status"]) for u in r["units"]] == UNITS
    wheel = Path(r["wheel"])
    assert wheel.name == f"sglang-{version}-py3-none-any.whl"
    assert r["sha256"] == sha256(wheel.read_bytes())

    files = wheel_files(wheel)
    assert record_errors(wheel) == []
    dist_info = f"sglang-{version}.dist-info"
    assert f"Version: {version}\n" in files[f"{dist_info}/METADATA"].decode()
    # the overlay's model, byte for byte; the patched files as `git apply` makes them
    assert files["sglang/srt/models/opt.py"] == (ov / "overlay" / OPT).read_bytes()
    for path in PATCHED:
        rel = path[len("python/"):]
        assert files[rel] == (patched_tree / path).read_bytes()
        assert files[rel] != upstream_file(upstream, REF, path).encode()
    # everything else is upstream's
    llama = "python/sglang/srt/models/llama.py"
    assert files[llama[len("python/"):]] == upstream_file(upstream, REF, llama).encode()
    # nothing from outside python/ (the edit unit changes upstream's test suite)
    assert not [n for n in files if n.startswith(("test/", "docs/"))]

    raw = files["sglang/overlay_manifest.json"]
    emb = json.loads(raw)
    assert raw == (json.dumps(emb, indent=2, sort_keys=True) + "\n").encode()
    assert emb["schema"] == 1
    assert emb["upstream"]["commit"] == base and emb["upstream"]["ref"] == REF
    assert emb["upstream"]["url"] == f"file://{Path(upstream).resolve()}"
    assert emb["overlay"]["hash"] == overlay_hash
    assert emb["version"] == version and emb["upstream_version"] == "0.5.1"
    assert emb["method"] == "source"
    assert emb["tool"] == {"name": "sglang-overlay", "version": __version__}
    assert [(u["name"], u["kind"], u["status"]) for u in emb["units"]] == UNITS
    assert emb["files"] == {p[len("python/"):]: sha256(files[p[len("python/"):]])
                            for p in (OPT, *PATCHED)}
    assert emb["models"] == [{"architecture": "OPTForCausalLM", "unit": "opt-model",
                              "modules": ["sglang.srt.models.opt"]}]


def test_source_build_is_reproducible(source_build, dist_build, ov, base, upstream):
    """Built twice (another out dir, another cache): the same bytes."""
    a, b = Path(source_build["wheel"]), Path(dist_build["wheel"])
    assert b == ov / "dist" / a.name  # the default --out
    assert a.parent != b.parent
    assert sha256(a.read_bytes()) == sha256(b.read_bytes()) == dist_build["sha256"]
    commit_time = int(git(upstream, "show", "-s", "--format=%ct", base))
    with zipfile.ZipFile(b) as zf:
        infos = zf.infolist()
    names = [i.filename for i in infos]
    assert len(names) > 800 and names[-1].endswith(".dist-info/RECORD")
    assert {i.date_time for i in infos} == {time.gmtime(commit_time)[:6]}
    assert {(i.external_attr >> 16) & 0o777 for i in infos[:-1]} == {0o644}
    # setuptools (SOURCE_DATE_EPOCH, package data) made it canonical: kept as built
    assert source_build["rewritten"] is False and dist_build["rewritten"] is False


def test_human_output_names_wheel_and_hash(ov, upstream, shared_cache, tmp_path):
    r = overlay("-C", ov, "build", "--upstream", upstream, "--out", tmp_path,
                cache=shared_cache)
    assert r.rc == 0, r.err
    (wheel,) = tmp_path.glob("*.whl")
    assert str(wheel) in r.out
    assert f"sha256 {sha256(wheel.read_bytes())}" in r.out
    assert "opt-model" in r.out and "built from source" in r.out


# --- install and verify -------------------------------------------------------------------


def test_install_then_verify_then_stale(dist_build, ov, venv_py, tmp_path):
    r = overlay("-C", ov, "install", "--no-deps", "--python", venv_py, "--json")
    assert r.rc == 0, r.err
    assert r.json["wheel"] == dist_build["wheel"]
    pip_list = subprocess.run([venv_py, "-m", "pip", "list", "--format=json"],
                              capture_output=True, text=True, check=True).stdout
    assert {"name": "sglang", "version": dist_build["version"]} in json.loads(pip_list)

    v = overlay("-C", ov, "verify", "--python", venv_py, "--json")
    assert v.rc == 0, v.out + v.err
    status = {c["check"]: c["status"] for c in v.json["checks"]}
    assert status == {"python": "ok", "sglang": "ok", "manifest": "ok", "overlay": "ok",
                      "files": "ok", "registry": "needs-gpu"}
    assert v.json["manifest"]["overlay"]["hash"] == dist_build["overlay_hash"]
    registry = next(c for c in v.json["checks"] if c["check"] == "registry")
    assert "GPU environment" in registry["detail"]

    table = overlay("-C", ov, "verify", "--python", venv_py)
    assert table.rc == 0 and table.err == ""
    assert table.out.splitlines()[0].split() == ["CHECK", "STATUS", "DETAIL"]

    # change the overlay's model after the install: the install is stale
    changed = copy_repo_overlay(tmp_path / "changed")
    opt = changed / "overlay" / OPT
    opt.write_text(opt.read_text() + "\n# tuned\n")
    s = overlay("-C", changed, "verify", "--python", venv_py, "--json")
    assert s.rc == 1
    assert {c["check"]: c["status"] for c in s.json["checks"]}["overlay"] == "stale"
    line = one_line(s.err)
    assert "stale install" in line and "unit 'opt-model' changed" in line
    assert OPT in line and "parallel-state-reuse" not in line
    # ... and there is no wheel of the changed overlay to install
    i = overlay("-C", changed, "install", "--no-deps", "--python", venv_py)
    assert i.rc == 2 and "overlay build" in one_line(i.err)

    # somebody edits the installed copy of a patched file
    site = Path(v.json["package"]).parent
    target = site / PARALLEL[len("python/"):]
    original = target.read_bytes()
    try:
        target.write_bytes(original + b"\n# hotfix\n")
        e = overlay("-C", ov, "verify", "--python", venv_py)
        assert e.rc == 1
        assert "parallel_state.py was edited after install" in one_line(e.err)
    finally:
        target.write_bytes(original)
    assert overlay("-C", ov, "verify", "--python", venv_py).rc == 0


def test_verify_without_sglang_and_with_a_plain_sglang(ov, bare_py, tmp_path, monkeypatch):
    r = overlay("-C", ov, "verify", "--python", bare_py, "--json")
    assert r.rc == 1
    assert {c["check"]: c["status"] for c in r.json["checks"]}["sglang"] == "missing"
    assert "sglang is not installed" in one_line(r.err)

    plain = tmp_path / "plain"
    (plain / "sglang").mkdir(parents=True)
    (plain / "sglang" / "__init__.py").write_text("raise SystemExit('must not be imported')\n")
    monkeypatch.setenv("PYTHONPATH", str(plain))
    r = overlay("-C", ov, "verify", "--python", bare_py, "--json")
    assert r.rc == 1
    assert {c["check"]: c["status"] for c in r.json["checks"]}["manifest"] == "not-overlay"
    assert "is not an overlay build" in one_line(r.err)


def test_install_bad_input(ov, dist_build, venv_py, bare_py, tmp_path):
    broken = tmp_path / "sglang-0.5.1-py3-none-any.whl"
    broken.write_bytes(b"not a zip")
    r = overlay("-C", ov, "install", "--no-deps", "--python", venv_py, "--wheel", broken)
    assert r.rc == 2
    assert r.err.strip().splitlines()[-1].startswith("overlay: pip install failed:")
    r = overlay("-C", ov, "install", "--no-deps", "--python", bare_py,
                "--wheel", dist_build["wheel"])
    assert r.rc == 2 and "has no pip" in r.err.strip().splitlines()[-1]
    r = overlay("-C", ov, "install", "--python", tmp_path / "nope" / "python")
    assert r.rc == 2 and "no such interpreter" in one_line(r.err)


# --- the registry check, against stand-ins -----------------------------------------------

STANDIN_TORCH = '''\
"""STAND-IN torch for tests: only what verify's registry check touches."""
__version__ = "0.0+standin"


class cuda:
    @staticmethod
    def is_available():
        return True
'''

STANDIN_REGISTRY = '''\
"""STAND-IN of sglang.srt.models.registry for tests (the real one needs torch)."""


def _cls(name, module):
    return type(name, (), {{"__module__": module, "__qualname__": name}})


class _ModelRegistry:
    native = {{{native}}}

    def resolve_model_cls(self, architectures):
        for arch in architectures:
            if arch in self.native:
                return _cls(arch, self.native[arch]), arch
        # like the real registry: unknown architectures fall back to Transformers
        return (_cls("TransformersForCausalLM", "sglang.srt.models.transformers"),
                "TransformersForCausalLM")


ModelRegistry = _ModelRegistry()
'''


def make_standin(root: Path, wheel: Path, native: bool, torch: bool = True) -> Path:
    """A fake sglang carrying the real wheel's manifest and overlay files."""
    files = wheel_files(wheel)
    emb = json.loads(files["sglang/overlay_manifest.json"])
    keep = ["sglang/overlay_manifest.json", *emb["files"]]
    for name in keep:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(files[name])
    for pkg in ("sglang", "sglang/srt", "sglang/srt/models", "sglang/srt/distributed",
                "sglang/srt/eplb"):
        (root / pkg / "__init__.py").write_text("")
    entries = '"OPTForCausalLM": "sglang.srt.models.opt"' if native else ""
    (root / "sglang/srt/models/registry.py").write_text(STANDIN_REGISTRY.format(native=entries))
    info = root / f"sglang-{emb['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: sglang\nVersion: {emb['version']}\n")
    if torch:
        (root / "torch").mkdir()
        (root / "torch" / "__init__.py").write_text(STANDIN_TORCH)
    return root


def test_standin_registry_resolves_the_overlay_class(ov, source_build, bare_py, tmp_path,
                                                     monkeypatch):
    standin = make_standin(tmp_path / "good", Path(source_build["wheel"]), native=True)
    monkeypatch.setenv("PYTHONPATH", str(standin))
    r = overlay("-C", ov, "verify", "--python", bare_py, "--json")
    assert r.rc == 0, r.out + r.err
    checks = {c["check"]: c for c in r.json["checks"]}
    assert checks["registry"]["status"] == "ok"
    assert "OPTForCausalLM -> sglang.srt.models.opt.OPTForCausalLM" in checks["registry"]["detail"]
    assert r.json["registry"] == [{"architecture": "OPTForCausalLM", "resolved": "OPTForCausalLM",
                                   "module": "sglang.srt.models.opt", "class": "OPTForCausalLM"}]
    assert checks["overlay"]["status"] == "ok" and checks["files"]["status"] == "ok"


def test_standin_registry_transformers_fallback_is_a_finding(ov, source_build, bare_py,
                                                             tmp_path, monkeypatch):
    standin = make_standin(tmp_path / "fallback", Path(source_build["wheel"]), native=False)
    monkeypatch.setenv("PYTHONPATH", str(standin))
    r = overlay("-C", ov, "verify", "--python", bare_py, "--json")
    assert r.rc == 1
    checks = {c["check"]: c for c in r.json["checks"]}
    assert checks["registry"]["status"] == "fallback"
    line = one_line(r.err)
    assert "OPTForCausalLM falls back to TransformersForCausalLM" in line
    # why: the overlay's module does not import (here: the stand-in torch has no torch.nn)
    assert "sglang.srt.models.opt failed to import" in line and "torch" in line


def test_standin_registry_that_cannot_import_is_a_finding(ov, source_build, bare_py, tmp_path,
                                                          monkeypatch):
    standin = make_standin(tmp_path / "broken", Path(source_build["wheel"]), native=True)
    (standin / "sglang/srt/models/registry.py").write_text(
        'raise ImportError("libcuda.so.1: cannot open shared object file")\n')
    monkeypatch.setenv("PYTHONPATH", str(standin))
    r = overlay("-C", ov, "verify", "--python", bare_py, "--json")
    assert r.rc == 1
    assert {c["check"]: c["status"] for c in r.json["checks"]}["registry"] == "error"
    assert "cannot import sglang.srt.models.registry: ImportError: libcuda.so.1" in one_line(r.err)


def test_registry_check_with_real_cpu_torch_needs_gpu(ov, source_build, tmp_path, monkeypatch):
    """This machine's real torch (a CPU build): CUDA is not available -> needs-gpu, exit 0."""
    standin = make_standin(tmp_path / "cpu", Path(source_build["wheel"]), native=True,
                           torch=False)
    monkeypatch.setenv("PYTHONPATH", str(standin))
    r = overlay("-C", ov, "verify", "--json")  # the current interpreter has torch installed
    assert r.rc == 0, r.out + r.err
    registry = {c["check"]: c for c in r.json["checks"]}["registry"]
    assert registry["status"] == "needs-gpu"
    assert "CUDA is not available to torch" in registry["detail"]


# --- repack -------------------------------------------------------------------------------------


def test_repack_official_wheel(ov, upstream, shared_cache, upstream_wheel, source_build,
                               patched_tree, tmp_path, tmp_path_factory):
    r = overlay("-C", ov, "build", "--upstream", upstream, "--repack", upstream_wheel,
                "--out", tmp_path / "a", "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    assert JSON_KEYS <= set(r.json)
    assert r.json["method"] == "repack"
    assert r.json["version"] == source_build["version"]
    wheel = Path(r.json["wheel"])
    assert wheel.name == f"sglang-{source_build['version']}-py3-none-any.whl"
    assert record_errors(wheel) == []
    files = wheel_files(wheel)
    dist_info = f"sglang-{source_build['version']}.dist-info"
    assert f"Version: {source_build['version']}\n" in files[f"{dist_info}/METADATA"].decode()
    assert not [n for n in files if n.startswith("sglang-0.5.1.dist-info/")]
    assert files["sglang/srt/models/opt.py"] == (ov / "overlay" / OPT).read_bytes()
    for path in PATCHED:
        assert files[path[len("python/"):]] == (patched_tree / path).read_bytes()
    emb = json.loads(files["sglang/overlay_manifest.json"])
    assert emb["method"] == "repack"
    assert [(u["name"], u["kind"], u["status"]) for u in emb["units"]] == UNITS
    assert emb["overlay"]["hash"] == source_build["overlay_hash"]

    # every other file is upstream's, untouched
    official = wheel_files(upstream_wheel)
    overlay_files = {"sglang/overlay_manifest.json", *emb["files"]}
    for name, data in official.items():
        if ".dist-info/" not in name and name not in overlay_files:
            assert files[name] == data, name
    # and the package is the same as the source build's (only the manifest's method differs)
    source = wheel_files(Path(source_build["wheel"]))
    pkg = {n for n in files if n.startswith("sglang/")}
    assert pkg == {n for n in source if n.startswith("sglang/")}
    assert [n for n in pkg if files[n] != source[n]] == ["sglang/overlay_manifest.json"]

    # reproducible too
    again = overlay("-C", ov, "build", "--upstream", upstream, "--repack", upstream_wheel,
                    "--out", tmp_path / "b", "--json", cache=shared_cache)
    assert again.rc == 0 and again.json["sha256"] == r.json["sha256"]

    # pip installs it into a fresh venv, and verify agrees it is the current overlay
    py = make_venv(tmp_path_factory.mktemp("venv-repack") / "env")
    pip = subprocess.run([py, "-m", "pip", "install", "--no-deps", str(wheel)],
                         capture_output=True, text=True)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    v = overlay("-C", ov, "verify", "--python", py, "--json")
    assert v.rc == 0, v.out + v.err
    assert v.json["manifest"]["method"] == "repack"


def other_project_wheel(path: Path) -> Path:
    """A valid wheel of another project (version 0.5.1)."""
    from wheel.wheelfile import WheelFile

    with WheelFile(path, "w") as wf:
        wf.writestr("other/__init__.py", "")
        wf.writestr("other-0.5.1.dist-info/METADATA",
                    "Metadata-Version: 2.1\nName: other\nVersion: 0.5.1\n")
        wf.writestr("other-0.5.1.dist-info/WHEEL",
                    "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    return path


def tampered_wheel(official: Path, path: Path) -> Path:
    """The official wheel with one file changed but RECORD left as it was."""
    with zipfile.ZipFile(official) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "sglang/srt/models/llama.py":
                data += b"\n# tampered\n"
            dst.writestr(info, data)
    return path


@pytest.mark.parametrize("case", ["text-file", "not-whl-name", "not-a-zip", "other-version",
                                  "not-sglang", "bad-record"])
def test_repack_bad_input(case, ov, upstream, shared_cache, upstream_wheel, tmp_path):
    out = tmp_path / "out"
    ref = REF
    if case == "text-file":
        given = tmp_path / "notes.txt"
        given.write_text("hello\n")
    elif case == "not-whl-name":
        given = tmp_path / "sglang-0.5.1-py3-none-any.zip"
        shutil.copy(upstream_wheel, given)
    elif case == "not-a-zip":
        given = tmp_path / "sglang-0.5.1-py3-none-any.whl"
        given.write_bytes(b"PK not really\n")
    elif case == "other-version":
        given, ref = upstream_wheel, "v0.5.2"  # sglang 0.5.1's wheel for the v0.5.2 release
    elif case == "not-sglang":
        given = other_project_wheel(tmp_path / "other-0.5.1-py3-none-any.whl")
    else:
        given = tampered_wheel(upstream_wheel, tmp_path / "sglang-0.5.1-py3-none-any.whl")
    before = {p.name for p in (ov / "dist").glob("*")} if (ov / "dist").exists() else set()
    r = overlay("-C", ov, "build", "--upstream", upstream, "--sglang-ref", ref,
                "--repack", given, "--out", out, cache=shared_cache)
    assert r.rc == 2, r.out + r.err
    line = one_line(r.err)
    assert "(fix: " in line
    assert str(given) in line
    if case == "other-version":
        assert "sglang 0.5.1, but v0.5.2 is sglang 0.5.2" in line
    if case == "not-sglang":
        assert "not of sglang" in line
    assert r.out == ""
    assert not out.exists()
    after = {p.name for p in (ov / "dist").glob("*")} if (ov / "dist").exists() else set()
    assert after == before


def test_build_refuses_repack_path_that_is_a_directory(ov, upstream, shared_cache, tmp_path):
    out = tmp_path / "out"
    r = overlay("-C", ov, "build", "--upstream", upstream, "--repack", tmp_path,
                "--out", out, cache=shared_cache)
    assert r.rc == 2, r.out + r.err
    line = one_line(r.err)
    assert str(tmp_path) in line and "(fix: " in line  # from click or from the tool
    assert r.out == "" and not out.exists()


def test_wheels_are_fixed_points_of_wheel_unpack_and_pack(source_build, ov, upstream,
                                                         shared_cache, upstream_wheel, tmp_path):
    """`wheel unpack` + `wheel pack` (SOURCE_DATE_EPOCH set) gives back the same bytes,
    for the source build and for a repack; and our own writer, fed the wheel's files,
    writes the same bytes the backend did."""
    from sglang_overlay import wheels

    repack = overlay("-C", ov, "build", "--upstream", upstream, "--repack", upstream_wheel,
                     "--out", tmp_path / "repack", "--json", cache=shared_cache)
    assert repack.rc == 0, repack.err
    for i, built in enumerate((Path(source_build["wheel"]), Path(repack.json["wheel"]))):
        epoch = _epoch_of(built)
        unpacked, packed = tmp_path / f"un{i}", tmp_path / f"packed{i}"
        packed.mkdir()
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch)}
        subprocess.run([sys.executable, "-m", "wheel", "unpack", "-d", str(unpacked), str(built)],
                       check=True, capture_output=True, env=env, umask=0o022)
        (tree,) = unpacked.iterdir()
        subprocess.run([sys.executable, "-m", "wheel", "pack", "-d", str(packed), str(tree)],
                       check=True, capture_output=True, env=env, umask=0o022)
        (again,) = packed.glob("*.whl")
        assert again.name == built.name
        assert again.read_bytes() == built.read_bytes()
        old = os.umask(0o002)
        try:
            ours = wheels.WheelContents.read(built).write(tmp_path / f"ours{i}", epoch=epoch)
        finally:
            os.umask(old)
        assert ours.read_bytes() == built.read_bytes()


def _epoch_of(wheel: Path) -> int:
    import calendar

    with zipfile.ZipFile(wheel) as zf:
        return calendar.timegm(zf.infolist()[0].date_time + (0, 0, 0))


def test_build_dynamic_version_pyproject(tmp_path):
    """Releases with a dynamic version (v0.5.8+) take it from the release tag."""
    from sglang_overlay import wheels

    pp = tmp_path / "pyproject.toml"
    pp.write_text(textwrap.dedent('''\
        [project]
        name = "sglang"
        dynamic = ["version"]  # from setuptools-scm
        description = "x"
        '''))
    assert wheels.project_version(pp, "v0.5.8") == "0.5.8"
    wheels.set_project_version(pp, "0.5.8+overlay.abc")
    text = pp.read_text()
    assert 'version = "0.5.8+overlay.abc"' in text and "dynamic" not in text
    assert wheels.local_version("0.5.1", "0123456789ab" + "0" * 52) == "0.5.1+overlay.0123456789ab"
    # an all-digit label is a number to PEP 440: pip shows it without the leading zero
    assert wheels.local_version("0.5.1", "012345678901" + "f" * 52) == "0.5.1+overlay.12345678901"
