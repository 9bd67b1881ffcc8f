"""Helpers for tests: run the CLI, write overlays, make real patches."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from sglang_overlay.cli import main

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Run:
    rc: int
    out: str
    err: str

    @property
    def json(self):
        return json.loads(self.out)


def overlay(*args: str, cache: Path | None = None) -> Run:
    """Run `overlay ARGS` in this process."""
    argv = ([f"--cache-dir={cache}"] if cache else []) + [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return Run(rc, out.getvalue(), err.getvalue())


def overlay_proc(*args: str, cache: Path | None = None, **kw) -> subprocess.Popen:
    """Start `overlay ARGS` as a separate process."""
    argv = ([f"--cache-dir={cache}"] if cache else []) + [str(a) for a in args]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tools")}
    return subprocess.Popen([sys.executable, "-m", "sglang_overlay", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, **kw)


def git(cwd: Path, *args: str, input: bytes | None = None, raw: bool = False) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    out = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                         env=env, input=input).stdout.decode()
    return out if raw else out.strip()


def upstream_file(upstream: Path, ref: str, path: str) -> str:
    return git(upstream, "show", f"{ref}:{path}", raw=True)


def make_patch(upstream: Path, ref: str, work: Path, edits: dict, subject: str) -> bytes:
    """A git-format-patch (full index) of edits made on a checkout of ref.

    edits maps a path to a function old_text -> new_text.
    """
    clone = work / f"clone-{abs(hash((ref, subject))) % 10**8}"
    if not clone.exists():
        git(work, "clone", "-q", "--no-checkout", str(upstream), str(clone))
    git(clone, "checkout", "-q", "--force", "--detach", ref)
    for path, fn in edits.items():
        p = clone / path
        p.write_text(fn(p.read_text()))
    git(clone, "commit", "-q", "-am", subject)
    return subprocess.run(
        ["git", "format-patch", "-1", "--stdout", "--full-index", "--zero-commit",
         "--no-signature", "HEAD"], cwd=clone, check=True, capture_output=True,
        env={**os.environ, "GIT_CONFIG_GLOBAL": os.devnull}).stdout


def write_overlay(root: Path, upstream: Path | str, units: list[dict], files: dict | None = None,
                  ref: str = "v0.5.1", models: list[dict] | None = None,
                  commit: bool = True, extra_toml: str = "") -> Path:
    """An overlay repository at root with the given units, files and patches.

    files maps a path relative to root to str/bytes contents.
    """
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in (files or {}).items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
    lines = ["[upstream]", f'url = "{upstream}"', f'ref = "{ref}"', ""]
    for u in units:
        lines.append("[[unit]]")
        for k, v in u.items():
            lines.append(f"{k} = {json.dumps(v)}")
        lines.append("")
    for m in models or []:
        lines.append("[[model]]")
        for k, v in m.items():
            lines.append(f"{k} = {json.dumps(v)}")
        lines.append("")
    (root / "overlay.toml").write_text("\n".join(lines) + extra_toml)
    (root / "overlay").mkdir(exist_ok=True)
    if commit and not (root / ".git").exists():
        git(root, "init", "-q")
    if commit:
        git(root, "add", "-A")
        git(root, "commit", "-q", "--allow-empty", "-m", "overlay")
    return root


def tree_snapshot(path: Path) -> dict:
    """Every file under path (not .git) with its bytes, for 'nothing changed' checks."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for n in filenames:
            p = Path(dirpath) / n
            out[str(p.relative_to(path))] = p.read_bytes() if not p.is_symlink() else os.readlink(p)
    return out


MODEL_FILE = textwrap.dedent('''\
    from sglang.srt.models.llama import LlamaForCausalLM


    class MyLlamaForCausalLM(LlamaForCausalLM):
        pass


    EntryClass = MyLlamaForCausalLM
    ''')


def copy_repo_overlay(dest: Path, upstream: Path | None = None, commit: bool = True) -> Path:
    """A copy of this repository's overlay (manifest, overlay/, patches/) as its
    own git repository; with upstream, the manifest points at that upstream
    (otherwise it keeps GitHub's URL and commands need --upstream)."""
    import shutil

    dest.mkdir(parents=True)
    for name in ("overlay.toml", "overlay", "patches", "variants"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / name)
    if upstream is not None:
        text = (dest / "overlay.toml").read_text()
        (dest / "overlay.toml").write_text(text.replace(
            'url = "https://github.com/sgl-project/sglang.git"', f'url = "{upstream}"'))
    if commit:
        git(dest, "init", "-q")
        (dest / ".gitignore").write_text("/sglang-*/\n/.sglang-*/\n/.overlay/\n")
        git(dest, "add", "-A")
        git(dest, "commit", "-qm", "overlay")
    return dest


def overlay_snapshot(root: Path) -> dict:
    """The overlay's own files (not worktrees, not .git, not .overlay state)."""
    return {k: v for k, v in tree_snapshot(root).items()
            if not k.startswith(("sglang-", ".sglang-", ".overlay/"))}


def read_manifest(root: Path) -> dict:
    """The manifest, parsed (not grepped)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    return tomllib.loads((root / "overlay.toml").read_text())


def manifest_units(root: Path) -> dict:
    """The manifest's units by name."""
    return {u["name"]: u for u in read_manifest(root)["unit"]}


def unit_commit(wt, name):
    return git(wt, "log", "--format=%H", f"--grep=Overlay-Unit: {name}", "-1")


def amend(wt: Path, name: str, change) -> None:
    """Change a unit's commit the git way: a fixup commit, then autosquash."""
    change()
    git(wt, "commit", "-qam", "wip")
    git(wt, "reset", "-q", "--soft", "HEAD~1")
    git(wt, "commit", "-q", f"--fixup={unit_commit(wt, name)}")
    first = git(wt, "log", "--reverse", "--format=%H", "--grep=^Overlay-Unit: ").split()[0]
    subprocess.run(["git", "rebase", "-q", "-i", "--autosquash", f"{first}~1"], cwd=wt, check=True,
                   env={**os.environ, "GIT_SEQUENCE_EDITOR": "true", "GIT_EDITOR": "true",
                        "GIT_CONFIG_GLOBAL": os.devnull, "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t"}, capture_output=True)


# A generation suite of upstream's shape without torch: it prints the suite's
# lines (org/good passes, org/bad exceeds its tolerance, org/crash raises,
# org/silent prints nothing).
TINY_SUITE = textwrap.dedent('''\
    import dataclasses
    import os
    import unittest


    @dataclasses.dataclass
    class ModelCase:
        model_path: str
        prefill_tolerance: float = 5e-2
        decode_tolerance: float = 5e-2
        rouge_l_tolerance: float = 1


    ALL_OTHER_MODELS = [
        ModelCase("org/good"),
        ModelCase("org/bad", 1e-3),
        ModelCase("org/crash"),
        ModelCase("org/silent"),
    ]
    DIFFS = {"org/good": 0.01, "org/bad": 0.02}


    class TestGenerationModels(unittest.TestCase):
        def test_others(self):
            if os.environ.get("SGLANG_IS_IN_CI") == "true":
                return  # as upstream's test_others does in CI
            for case in ALL_OTHER_MODELS:
                if "ONLY_RUN" in os.environ and os.environ["ONLY_RUN"] != case.model_path:
                    continue
                if case.model_path == "org/crash":
                    raise RuntimeError("CUDA out of memory")
                if case.model_path == "org/silent":
                    continue
                rouge_l_scores = [1.0, 0.9]
                print(f"{rouge_l_scores=}")
                print("prefill logprobs max_diff", DIFFS[case.model_path])
                assert DIFFS[case.model_path] < case.prefill_tolerance, "prefill not close"
                print("decode logprobs max_diff", DIFFS[case.model_path] / 2)
    ''')
