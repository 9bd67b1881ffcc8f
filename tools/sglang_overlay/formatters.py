"""Upstream's formatters, at the versions upstream pins, in a cached environment.

SGLang pins black and isort in ``.pre-commit-config.yaml``. ``overlay pr``
formats the files a pull request changes with exactly those versions, so the
PR passes upstream's lint. They are installed once into a virtual environment
in the overlay cache, ``<cache>/tools/black-<v>_isort-<v>/``, created behind a
file lock (concurrent runs wait for one another) and only published, by a
rename, once the installation succeeded. It is run like pre-commit runs its
hooks: from the checkout's root, with the checkout's own configuration
(``.isort.cfg``, ``pyproject.toml``, ...), in the order the config lists them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from . import durable
from .errors import BadInput

PRE_COMMIT_CONFIG = ".pre-commit-config.yaml"
# repository URL pattern -> tool; black's official mirror counts as black.
TOOLS = (
    ("isort", re.compile(r"(?i)github\.com/(pycqa|timothycrosley)/isort\b")),
    ("black", re.compile(r"(?i)github\.com/psf/black(-pre-commit-mirror)?\b")),
)
LOCK_TIMEOUT = 900
READY = "READY"


@dataclass
class Pins:
    versions: dict[str, str]  # tool -> version, e.g. {"isort": "5.13.2", "black": "24.10.0"}
    order: list[str]  # the order the config runs them in

    @property
    def key(self) -> str:
        return "_".join(f"{t}-{self.versions[t]}" for t in sorted(self.versions))


def parse_pins(text: str) -> Pins:
    """black and isort (repo, rev) pairs of a .pre-commit-config.yaml.

    A file that is not YAML, or lists no such repos, pins nothing.
    """
    import yaml

    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError:
        return Pins({}, [])
    repos = config.get("repos") if isinstance(config, dict) else None
    versions: dict[str, str] = {}
    order: list[str] = []
    for item in repos if isinstance(repos, list) else []:
        if not isinstance(item, dict) or item.get("rev") is None:
            continue
        url = str(item.get("repo", ""))
        tool = next((name for name, rx in TOOLS if rx.search(url)), None)
        if tool and tool not in versions:
            value = str(item["rev"])
            versions[tool] = value[1:] if re.match(r"^v\d", value) else value
            order.append(tool)
    return Pins(versions, order)


class ToolEnv:
    """A virtual environment with the pinned black and isort."""

    def __init__(self, cache_root: Path, pins: Pins):
        self.pins = pins
        self.path = Path(cache_root) / "tools" / pins.key
        self.lock = FileLock(str(self.path) + ".lock", timeout=LOCK_TIMEOUT)

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def ready(self) -> bool:
        return (self.path / READY).is_file()

    def ensure(self, offline: bool = False) -> bool:
        """Create the environment if it is missing; True when this call created it."""
        if self.ready:
            return False
        if offline:
            raise BadInput(f"the formatter environment {self.pins.key} is not in the cache "
                           f"({self.path})", "run once without --offline to create it")
        with self.lock:
            if self.ready:
                return False
            if self.path.exists():  # a killed run's leftovers
                shutil.rmtree(self.path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            durable.sweep_dir(self.path.parent, ".new-")  # killed runs' half-made ones
            tmp = Path(tempfile.mkdtemp(prefix=f".new-{self.pins.key}-{os.getpid()}-",
                                        dir=self.path.parent))
            try:
                self._create(tmp)
                os.rename(tmp, self.path)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return True

    def _create(self, where: Path) -> None:
        self._run([sys.executable, "-m", "venv", "--clear", str(where)], "create a venv")
        reqs = [f"{tool}=={self.pins.versions[tool]}" for tool in sorted(self.pins.versions)]
        self._run([str(where / "bin" / "python"), "-m", "pip", "install",
                   "--disable-pip-version-check", "--no-input", "--quiet", *reqs],
                  "install " + " ".join(reqs))
        # The venv keeps working after the rename: run it as `<env>/bin/python -m tool`.
        (where / READY).write_text("\n".join(reqs) + "\n")

    @staticmethod
    def _run(argv: list[str], what: str) -> None:
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or r.stdout.strip().splitlines()
                    or ["no output"])[-1]
            raise BadInput(f"cannot {what} for the formatter environment: {last}",
                           "check the network access to PyPI, or pip's configuration")

    def format(self, checkout: Path, files: list[str],
               changed: dict[str, set[int]] | None = None) -> list[str]:
        """Run the tools on files (paths relative to checkout); the files they changed.

        With changed (file -> its changed line numbers, 1-based), the tools'
        edits are kept only where they touch those lines: a change to an
        upstream file does not reformat the code around it.
        """
        if not files:
            return []
        before = {f: (checkout / f).read_bytes() for f in files}
        env = {**os.environ, "BLACK_CACHE_DIR": str(self.path / "black-cache")}
        for tool in self.pins.order:
            argv = [str(self.python), "-m", tool]
            argv += ["--filter-files"] if tool == "isort" else ["--quiet"]
            r = subprocess.run(argv + files, cwd=checkout, env=env, capture_output=True,
                               text=True)
            if r.returncode != 0:
                last = (r.stderr.strip().splitlines() or ["no output"])[-1]
                raise BadInput(f"{tool} {self.pins.versions[tool]} failed on "
                               f"{', '.join(files)}: {last}",
                               "fix the syntax error in the overlay's file")
        for f, lines in (changed or {}).items():
            if f in before:
                p = checkout / f
                p.write_bytes(only_lines(before[f], p.read_bytes(), lines))
        return [f for f in files if (checkout / f).read_bytes() != before[f]]


def only_lines(before: bytes, after: bytes, lines: set[int]) -> bytes:
    """after's edits of before, kept only where they touch lines (1-based, of before)."""
    import difflib

    old = before.decode("utf-8").splitlines(keepends=True)
    new = after.decode("utf-8").splitlines(keepends=True)
    out: list[str] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if op == "replace" and i2 - i1 == j2 - j1:  # line for line: decide each one
            out += [new[j1 + k] if i1 + k + 1 in lines else old[i1 + k] for k in range(i2 - i1)]
            continue
        touched = any(n in lines for n in range(i1 + 1, i2 + 1)) or (
            i1 == i2 and (i1 in lines or i1 + 1 in lines))
        out += new[j1:j2] if op != "equal" and touched else old[i1:i2]
    return "".join(out).encode("utf-8")
