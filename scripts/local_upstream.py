#!/usr/bin/env python3
"""Build a local SGLang upstream repository from SGLang's own releases on PyPI.

The overlay's default upstream is SGLang's GitHub repository. Where GitHub is
out of reach (this project's CI), this script builds a stand-in that is real
upstream code: each release's sdist (upstream's ``python/`` directory) is
committed in release order into one bare git repository and tagged ``vX``, so
the tags share history and 3-way merges have real base blobs.

Releases after 0.5.10.post1 exist on PyPI only as wheels. For those, upstream's
``python/sglang/`` is the wheel's ``sglang/`` package with compiled files
(``.so``) left out, and ``python/pyproject.toml`` (which no wheel carries) is a
stand-in written from the wheel's METADATA, labelled as such.

Files the sdists lack (the generation-model test suite, the pull request
template, the supported-models docs table, the pre-commit pins) are small
stand-ins from ``scripts/standins/``, written in upstream's shape.

Downloads and built repositories are cached (``$SGLANG_OVERLAY_TEST_CACHE``,
default ``~/.cache/sglang-overlay-tests``), so later runs need no network.

    python scripts/local_upstream.py                      # v0.5.1 .. v0.5.23
    python scripts/local_upstream.py --releases 0.5.1,0.5.2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from datetime import datetime, timezone
from pathlib import Path

# Ten consecutive real releases, for `overlay check` across releases.
TEN_RELEASES = (
    "0.5.1",
    "0.5.1.post1",
    "0.5.1.post2",
    "0.5.1.post3",
    "0.5.2",
    "0.5.3",
    "0.5.3.post1",
    "0.5.4",
    "0.5.5",
    "0.5.6",
)
# Later releases: v0.5.8, whose test suite lives in upstream's newer layout;
# the last sdist; and wheel-only releases around the boundaries where upstream
# rewrote code this repository's overlay touches (v0.5.12: the MLA branch
# condition; v0.5.18: expert_location.py; v0.5.21: parallel_state.py), up to
# the newest release.
LATER_RELEASES = ("0.5.8", "0.5.10.post1", "0.5.12", "0.5.18", "0.5.21", "0.5.23")
DEFAULT_RELEASES = TEN_RELEASES + LATER_RELEASES
NEWEST_RELEASE = LATER_RELEASES[-1]
PYPI_JSON = "https://pypi.org/pypi/sglang/json"
# Which wheel to take when a release has several: they carry the same Python
# files; this one also matches this project's machines.
WHEEL_PREFERENCE = ("py3-none-any", "cp311-cp311-manylinux_2_34_x86_64")
STANDINS = Path(__file__).resolve().parent / "standins"
# Bump when the layout of the built repository changes.
BUILDER_VERSION = "4"
# Upstream moved the generation suite to test/registered/ around v0.5.7; the
# stand-in follows that boundary.
REGISTERED_LAYOUT_FROM = (0, 5, 7)
# Upstream added its own OPT model (and its test case and docs row) in v0.5.2.
OPT_UPSTREAM_FROM = (0, 5, 2)

IDENTITY = {
    "GIT_AUTHOR_NAME": "SGLang release importer",
    "GIT_AUTHOR_EMAIL": "releases@sglang.invalid",
    "GIT_COMMITTER_NAME": "SGLang release importer",
    "GIT_COMMITTER_EMAIL": "releases@sglang.invalid",
}


def cache_dir() -> Path:
    root = os.environ.get("SGLANG_OVERLAY_TEST_CACHE")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "sglang-overlay-tests"


def version_key(version: str) -> tuple[int, ...]:
    """(0, 5, 1, post) as a sortable tuple; good enough for 0.5.x releases."""
    main, _, post = version.partition(".post")
    return tuple(int(p) for p in main.split(".")) + (int(post or 0),)


def _pypi_metadata(cache: Path, version: str | None = None) -> dict:
    """PyPI's file list for sglang (sdists and wheels), cached; fetched again
    when it predates the release asked for."""
    path = cache / "pypi-sglang-files.json"
    if path.exists():
        data = json.loads(path.read_text())
        if version is None or version in data:
            return data
    with urllib.request.urlopen(PYPI_JSON, timeout=60) as resp:
        data = json.load(resp)
    slim = {
        v: [
            {k: f[k] for k in ("packagetype", "filename", "url", "digests", "upload_time")}
            for f in files
            if f["packagetype"] in ("sdist", "bdist_wheel")
        ]
        for v, files in data["releases"].items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(slim, sort_keys=True))
    tmp.replace(path)
    return slim


def _sdist_info(version: str, cache: Path) -> dict:
    files = _release_files(version, cache, "sdist")
    if not files:
        raise SystemExit(f"sglang {version}: no sdist on PyPI")
    return files[0]


def _release_files(version: str, cache: Path, kind: str) -> list[dict]:
    meta = _pypi_metadata(cache, version)
    return [f for f in meta.get(version) or [] if f["packagetype"] == kind]


def has_sdist(version: str, cache: Path | None = None) -> bool:
    return bool(_release_files(version, cache or cache_dir(), "sdist"))


def _wheel_info(version: str, cache: Path) -> dict:
    files = _release_files(version, cache, "bdist_wheel")
    if not files:
        raise SystemExit(f"sglang {version}: neither an sdist nor a wheel on PyPI")
    for tag in WHEEL_PREFERENCE:
        for f in files:
            if f["filename"].endswith(f"-{tag}.whl"):
                return f
    return sorted(files, key=lambda f: f["filename"])[0]


def _download(info: dict, target_dir: Path, what: str) -> Path:
    """Download one PyPI file into target_dir, checking its sha256."""
    dest = target_dir / info["filename"]
    if dest.exists():
        return dest
    url = urllib.parse.urljoin(PYPI_JSON, info["url"])
    print(f"downloading {what} ...", file=sys.stderr)
    with urllib.request.urlopen(url, timeout=300) as resp:
        data = resp.read()
    if hashlib.sha256(data).hexdigest() != info["digests"]["sha256"]:
        raise SystemExit(f"{what}: sha256 mismatch for {url}")
    tmp = target_dir / (info["filename"] + f".part-{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(dest)
    return dest


def wheel(version: str, cache: Path | None = None) -> Path:
    """Path of the cached wheel of sglang==version, downloading it if needed."""
    cache = cache or cache_dir()
    target_dir = cache / "wheels"
    target_dir.mkdir(parents=True, exist_ok=True)
    return _download(_wheel_info(version, cache), target_dir, f"sglang {version} wheel")


def sdist(version: str, cache: Path | None = None) -> Path:
    """Path of the cached sdist of sglang==version, downloading it if needed."""
    cache = cache or cache_dir()
    target_dir = cache / "sdists"
    target_dir.mkdir(parents=True, exist_ok=True)
    existing = target_dir / f"sglang-{version}.tar.gz"
    if existing.exists():
        return existing
    try:
        _download(_sdist_info(version, cache), target_dir, f"sglang {version} sdist")
    except (OSError, KeyError) as exc:  # the JSON API is out of reach: ask pip
        print(f"PyPI JSON API failed ({exc}); using pip download", file=sys.stderr)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
             ":all:", f"sglang=={version}", "-d", str(target_dir)],
            check=True,
        )
    if not existing.exists():
        raise SystemExit(f"sglang {version}: sdist not found after download")
    return existing


def _upload_time(version: str, cache: Path) -> str:
    try:
        info = (_sdist_info(version, cache) if has_sdist(version, cache)
                else _wheel_info(version, cache))
        stamp = info["upload_time"]
        dt = datetime.fromisoformat(stamp).replace(tzinfo=timezone.utc)
    except (OSError, KeyError, SystemExit):
        dt = datetime(2025, 1, 1, tzinfo=timezone.utc)
    return f"{int(dt.timestamp())} +0000"


def _standin(name: str) -> str:
    return (STANDINS / name).read_text()


def _write_wheel_tree(version: str, cache: Path, dest: Path) -> None:
    """upstream's python/ directory from the release's wheel (no sdist exists).

    python/sglang/ is the wheel's sglang/ package without compiled files;
    python/pyproject.toml is a stand-in from the wheel's METADATA.
    """
    dist_info = f"sglang-{version}.dist-info/"
    with zipfile.ZipFile(wheel(version, cache)) as zf:
        for info in zf.infolist():
            name = info.filename
            if info.is_dir() or not name.startswith("sglang/"):
                continue
            if name.endswith((".so", ".pyd", ".dylib")):
                continue  # compiled: not upstream source
            out = dest / "python" / name
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(zf.read(info))
            if (info.external_attr >> 16) & 0o111:
                out.chmod(0o755)
        metadata = zf.read(dist_info + "METADATA").decode("utf-8")
    (dest / "python" / "pyproject.toml").write_text(_pyproject_from_metadata(metadata))


def _pyproject_from_metadata(metadata: str) -> str:
    """A python/pyproject.toml for a wheel-only release, from its METADATA."""
    from email.parser import Parser

    msg = Parser().parsestr(metadata)
    deps = [d for d in msg.get_all("Requires-Dist") or [] if "extra ==" not in d]
    lines = [
        "# Stand-in written by scripts/local_upstream.py: this release exists on PyPI",
        "# only as wheels, which carry no pyproject.toml. Name, version, Python and",
        "# dependencies are the wheel's METADATA; the build settings are not upstream's.",
        "[build-system]",
        'requires = ["setuptools>=61.0", "wheel"]',
        'build-backend = "setuptools.build_meta"',
        "",
        "[project]",
        f'name = "{msg["Name"]}"',
        f'version = "{msg["Version"]}"',
        f"description = {json.dumps(msg.get('Summary') or '')}",
        f'requires-python = "{msg.get("Requires-Python") or ">=3.10"}"',
        "dependencies = [",
        *[f"  {json.dumps(d)}," for d in deps],
        "]",
        "",
        "[tool.setuptools.packages.find]",
        'include = ["sglang*"]',
        "",
        "[tool.setuptools.package-data]",
        '"*" = ["*"]',
        "",
    ]
    return "\n".join(lines)


def _write_release_tree(version: str, cache: Path, dest: Path) -> None:
    """Lay out upstream's repository for one release under dest."""
    if has_sdist(version, cache):
        _write_sdist_tree(version, cache, dest)
    else:
        _write_wheel_tree(version, cache, dest)
    _write_standins(version, dest)


def _write_sdist_tree(version: str, cache: Path, dest: Path) -> None:
    """upstream's python/ directory from the release's sdist."""
    with tarfile.open(sdist(version, cache)) as tar:
        prefix = f"sglang-{version}/"
        for member in tar.getmembers():
            if not member.name.startswith(prefix) or not member.isfile():
                continue
            rel = member.name[len(prefix):]
            top = rel.split("/", 1)[0]
            # sdist-only files that are not in upstream's git tree
            if top == "PKG-INFO" or top.endswith(".egg-info"):
                continue
            if rel == "setup.cfg":
                continue
            out = dest / "python" / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(tar.extractfile(member).read())
            if member.mode & 0o111:
                out.chmod(0o755)


def _write_standins(version: str, dest: Path) -> None:
    """What neither sdists nor wheels carry, in upstream's shape."""
    key = version_key(version)
    has_opt = key >= OPT_UPSTREAM_FROM
    files = {
        ".pre-commit-config.yaml": _standin("pre-commit-config.yaml"),
        ".isort.cfg": _standin("isort.cfg"),
        ".github/pull_request_template.md": _standin("pull_request_template.md"),
        "docs/supported_models/generative_models.md": _standin(
            "generative_models.md"
        ).replace(
            "@@OPT_ROW@@\n",
            "| **OPT** | `facebook/opt-125m` | Meta's Open Pretrained Transformer. |\n"
            if has_opt
            else "",
        ),
    }
    if key >= REGISTERED_LAYOUT_FROM:
        files["test/registered/models/test_generation_models.py"] = _standin(
            "test_generation_models_registered.py"
        )
    else:
        files["test/srt/models/test_generation_models.py"] = _standin(
            "test_generation_models_srt.py"
        ).replace(
            "@@OPT_CASE@@",
            '\n    ModelCase("facebook/opt-125m", skip_long_prompt=True),'
            if has_opt
            else "",
        )
    files["README.md"] = (
        f"# SGLang {version} (local stand-in built from the PyPI sdist)\n"
    )
    for rel, text in files.items():
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)


def _git(repo: Path, *args: str, env: dict | None = None, input: str | None = None):
    full_env = {**os.environ, **IDENTITY, "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_CONFIG_GLOBAL": os.devnull, **(env or {})}
    return subprocess.run(
        ["git", "--git-dir", str(repo), *args],
        check=True, capture_output=True, text=True, env=full_env, input=input,
    ).stdout.strip()


def _fingerprint(releases: tuple[str, ...]) -> str:
    h = hashlib.sha256(BUILDER_VERSION.encode())
    h.update(",".join(releases).encode())
    for path in sorted(STANDINS.iterdir()):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def build_upstream(
    releases: tuple[str, ...] | list[str] = DEFAULT_RELEASES,
    cache: Path | None = None,
) -> Path:
    """A bare repository with one commit and tag per release, in order.

    Reused from the cache when the releases and stand-ins are unchanged.
    """
    cache = cache or cache_dir()
    releases = tuple(sorted(releases, key=version_key))
    repo = cache / "upstreams" / f"sglang-{_fingerprint(releases)}.git"
    if (repo / "refs" / "tags").exists() and (repo / "BUILT").exists():
        return repo
    repo.parent.mkdir(parents=True, exist_ok=True)
    tmp_repo = Path(tempfile.mkdtemp(prefix=".building-", dir=repo.parent))
    try:
        subprocess.run(
            ["git", "init", "-q", "--bare", "-b", "main", str(tmp_repo)], check=True
        )
        parent = None
        for version in releases:
            print(f"committing sglang {version} ...", file=sys.stderr)
            with tempfile.TemporaryDirectory() as work:
                work_path = Path(work)
                tree_dir = work_path / "tree"
                _write_release_tree(version, cache, tree_dir)
                env = {"GIT_INDEX_FILE": str(work_path / "index"),
                       "GIT_WORK_TREE": str(tree_dir)}
                _git(tmp_repo, "add", "-A", ".", env=env)
                tree = _git(tmp_repo, "write-tree", env=env)
            date = _upload_time(version, cache)
            dated = {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
            args = ["commit-tree", tree, "-m", f"Release v{version}"]
            if parent:
                args += ["-p", parent]
            parent = _git(tmp_repo, *args, env=dated)
            _git(tmp_repo, "update-ref", "refs/heads/main", parent)
            _git(tmp_repo, "tag", "-a", f"v{version}", "-m", f"v{version}", parent,
                 env=dated)
        (tmp_repo / "BUILT").write_text(",".join(releases) + "\n")
        try:
            tmp_repo.rename(repo)
        except OSError:  # built concurrently by another process: keep theirs
            shutil.rmtree(tmp_repo, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp_repo, ignore_errors=True)
        raise
    return repo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--releases",
        default=",".join(DEFAULT_RELEASES),
        help="comma-separated sglang versions (default: %(default)s); "
        "'ten' for ten consecutive releases from 0.5.1",
    )
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args(argv)
    releases = TEN_RELEASES if args.releases == "ten" else tuple(
        r.strip().lstrip("v") for r in args.releases.split(",") if r.strip()
    )
    print(build_upstream(releases, args.cache))
    return 0


if __name__ == "__main__":
    sys.exit(main())
