"""kill -9 at every named crash point of every writing verb, and one writer per
overlay repository (issue 8, sections 2 and 3).

No timing anywhere: the tool kills itself (SIGKILL) at the point named by
SGLANG_OVERLAY_CRASH_AT, and the concurrency tests hold the repository's lock
themselves. After each kill: the overlay repository is byte-identical to before
or to the finished result, the worktree is the old or the new complete state on
its branch (or a recorded swap the next command rolls forward), the same command
then exits 0 with the finished result, and no scratch directory, temporary
worktree, part file, journal, record, held lock or stray ref is left.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

import realcases
from helpers import MODEL_FILE, ROOT, git, overlay, overlay_snapshot, tree_snapshot, write_overlay
from sglang_overlay import durable, journal, repolock
from sglang_overlay.target import SWAPS_DIR, TMP_MARK
from sglang_overlay.upstream import Cache, normalize_url

MODEL = "python/sglang/srt/models/my_llama.py"
NOTE = "python/sglang/srt/notes.py"


def run_proc(args, cache, env=None, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tools"), **(env or {})}
    return subprocess.run([sys.executable, "-m", "sglang_overlay", f"--cache-dir={cache}",
                           *map(str, args)], capture_output=True, text=True, env=env, **kw)


# --- the overlays ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def templates(tmp_path_factory, upstream):
    """Small overlays on v0.5.1, made once and copied per case."""
    base = tmp_path_factory.mktemp("crash-templates")
    work = base / "work"
    work.mkdir()
    v051 = git(upstream, "rev-parse", "v0.5.1^{commit}")
    units = [{"name": "my-model", "kind": "files", "description": "A custom Llama.",
              "files": [MODEL]},
             {"name": "allocator-fix", "kind": "patch", "description": "Allocator fix",
              "patch": "patches/allocator-fix.patch"}]
    files = {f"overlay/{MODEL}": MODEL_FILE,
             "patches/allocator-fix.patch": realcases.upstreamed_patch(upstream)}
    lock = f'commit = "{v051}"\n'

    def make(name, units, files, locked=True):
        root = write_overlay(base / name, upstream, units, files, commit=False)
        text = (root / "overlay.toml").read_text()
        if locked:
            text = text.replace('ref = "v0.5.1"\n', 'ref = "v0.5.1"\n' + lock, 1)
        (root / "overlay.toml").write_text(text)
        (root / ".gitignore").write_text("/sglang-*/\n/.sglang-*/\n/.overlay/\n")
        git(root, "init", "-q")
        git(root, "add", "-A")
        git(root, "commit", "-qm", "overlay")
        return root

    out = {"base": make("base", units, files), "empty": make("empty", [], {}),
           "unlocked": make("unlocked", units, files, locked=False)}
    clamp = {"name": "clamp", "kind": "patch", "description": "Clamp experts per GPU",
             "patch": "patches/clamp.patch"}
    out["conflict"] = make("conflict", units + [clamp],
                           {**files, "patches/clamp.patch": realcases.conflict_patch(upstream,
                                                                                     work)})
    fork = base / "fork"
    git(base, "clone", "-q", "--shared", "--no-checkout", str(upstream), str(fork))
    git(fork, "checkout", "-q", "-B", "fork", "v0.5.1")
    (fork / MODEL).write_text(MODEL_FILE)
    alloc = fork / realcases.UPSTREAMED_FILE
    alloc.write_text(alloc.read_text() + "\n# kept by the fork\n")
    git(fork, "add", "-A")
    git(fork, "commit", "-qm", "fork")
    out["fork"] = fork
    return out


def resolve_clamp(res: Path) -> None:
    """Resolve the clamp conflict on v0.5.3 the way the patch meant it."""
    path = res / realcases.EXPERT_LOCATION
    text = path.read_text()
    start = text.index("<<<<<<< ")
    end = text.index("\n", text.index(">>>>>>> ")) + 1
    path.write_text(
        text[:start]
        + "    num_local_gpu_physical_experts = max(1, num_physical_experts // num_gpus)\n"
        "    num_gpus_per_node = server_args.ep_size // server_args.nnodes\n"
        "    num_local_node_physical_experts = num_local_gpu_physical_experts * "
        "num_gpus_per_node\n" + text[end:])


# --- scenarios: one writing verb each ---------------------------------------------------


@dataclass
class Scenario:
    template: str
    args: Callable[[Path, dict], list]
    prepare: Callable[[Path, dict, Path], None] = lambda root, t, cache: None
    ref: str | None = None  # the worktree's ref (sglang-<ref>, overlay/<ref>)
    snapshot_of: Callable[[Path], Path] = lambda root: root
    check: Callable[[Path, dict], None] = lambda root, t: None
    points: list[str] = field(default_factory=list)
    rc: int = 0  # what the command exits with when it finishes


def applied(root, t, cache):
    r = overlay("-C", root, "apply", "--no-lint", cache=cache)
    assert r.rc == 0, r.err


def applied_then_changed(root, t, cache):
    applied(root, t, cache)
    (root / "overlay" / MODEL).write_text(MODEL_FILE + "# changed\n")
    git(root, "commit", "-qam", "change the model")


def applied_then_committed(root, t, cache):
    applied(root, t, cache)
    wt = root / "sglang-v0.5.1"
    (wt / NOTE).write_text("NOTE = 1\n")
    git(wt, "add", "-A")
    git(wt, "commit", "-qm", "Add a notes module")


def conflicted(resolve):
    def prepare(root, t, cache):
        r = overlay("-C", root, "apply", "--no-lint", "--sglang-ref", "v0.5.3", cache=cache)
        assert r.rc == 1, r.err
        if resolve:
            resolve_clamp(root / "sglang-v0.5.3-conflict")
    return prepare


def upgraded(root, t):
    text = (root / "overlay.toml").read_text()
    assert 'ref = "v0.5.3"' in text and 'applied-upstream = "v0.5.2"' in text
    assert (root / "CHANGELOG.md").read_text().count("Upgraded SGLang") == 1


def refreshed(root, t):
    text = (root / "overlay.toml").read_text()
    assert text.count('name = "add-a-notes-module') == 1  # never a second, -2 unit
    assert (root / "overlay" / NOTE).read_text() == "NOTE = 1\n"


def stopped(root, t):
    assert "<<<<<<<" in (root / "sglang-v0.5.3-conflict" / realcases.EXPERT_LOCATION).read_text()
    assert (root / ".overlay" / "state.json").is_file()
    assert not (root / "sglang-v0.5.3").exists()


def continued(root, t):
    clamp = (root / "patches/clamp.patch").read_bytes()
    assert b"max(1, num_physical_experts // num_gpus)" in clamp
    assert not (root / "sglang-v0.5.3-conflict").exists()
    assert not (root / ".overlay" / "state.json").exists()


def aborted(root, t):
    assert not (root / "sglang-v0.5.3-conflict").exists()
    assert not (root / ".overlay" / "state.json").exists()


def captured(root, t):
    text = (root / "overlay.toml").read_text()
    assert text.count("[[unit]]") == 2
    assert (root / "overlay" / MODEL).read_text() == MODEL_FILE


def initialized(root, t):
    assert (root / "new" / "overlay.toml").is_file()
    assert not [p for p in root.iterdir() if ".overlay-init-" in p.name]


def built(root, t):
    assert len(list((root / "dist").glob("*.whl"))) == 1


def prepared(root, t):
    assert 'forwarded = "prepared:pr/allocator-fix"' in (root / "overlay.toml").read_text()
    assert (root / "pr" / "allocator-fix" / "PR_BODY.md").is_file()


WORKTREE_NEW = ["worktree-new-made", "worktree-swap-recorded", "worktree-created-detached"]
WORKTREE_SWAP = ["worktree-new-made", "worktree-swap-recorded", "worktree-old-aside",
                 "worktree-new-in", "worktree-branch-moved"]

SCENARIOS = {
    "apply-new": Scenario("base", lambda r, t: ["-C", r, "apply", "--no-lint"], ref="v0.5.1",
                          points=WORKTREE_NEW),
    "apply-unlocked": Scenario("unlocked", lambda r, t: ["-C", r, "apply", "--no-lint"],
                               ref="v0.5.1", points=["apply-lock-written"]),
    "apply-conflict": Scenario("conflict", lambda r, t: ["-C", r, "apply", "--no-lint",
                                                         "--sglang-ref", "v0.5.3"],
                               check=stopped, rc=1, points=["conflict-worktree-made"]),
    "apply-existing": Scenario("base", lambda r, t: ["-C", r, "apply", "--no-lint"],
                               applied_then_changed, ref="v0.5.1", points=WORKTREE_SWAP),
    "upgrade": Scenario("base", lambda r, t: ["-C", r, "upgrade", "--to", "v0.5.3", "--yes"],
                        ref="v0.5.3", check=upgraded,
                        points=["upgrade-built", "journal-written", "journal-half-carried",
                                "upgrade-overlay-written"]),
    "refresh": Scenario("base", lambda r, t: ["-C", r, "refresh"], applied_then_committed,
                        ref="v0.5.1", check=refreshed,
                        points=["journal-written", "journal-half-carried", "refresh-written"]),
    "continue": Scenario("conflict", lambda r, t: ["-C", r, "refresh", "--continue"],
                         conflicted(True), ref="v0.5.3", check=continued,
                         points=["continue-resolved", "continue-written"]),
    "abort": Scenario("conflict", lambda r, t: ["-C", r, "refresh", "--abort"],
                      conflicted(False), check=aborted, points=["abort-worktree-removed"]),
    "capture": Scenario("empty", lambda r, t: ["-C", r, "capture", "--from", t["fork"]],
                        check=captured, points=["capture-read", "journal-written"]),
    "init": Scenario("empty", lambda r, t: ["-C", r, "init", "new", "--upstream",
                                            t["upstream"], "--sglang-ref", "v0.5.1"],
                     snapshot_of=lambda r: r / "new", check=initialized,
                     points=["init-skeleton"]),
    "build": Scenario("base", lambda r, t: ["-C", r, "build"], check=built,
                      points=["build-exported", "build-wheel-copying"]),
    "pr": Scenario("base", lambda r, t: ["-C", r, "pr", "--unit", "allocator-fix"],
                   check=prepared, points=["pr-branch-written", "journal-written"]),
}
CASES = [(name, point) for name, sc in SCENARIOS.items() for point in sc.points]
FINAL: dict[str, tuple] = {}  # scenario -> (overlay snapshot, worktree tree) when finished


def test_every_crash_point_is_tested_and_in_the_readme():
    assert {p for _, p in CASES} == set(durable.POINTS)
    readme = (ROOT / "README.md").read_text()
    assert [p for p in durable.POINTS if f"| `{p}` |" not in readme] == []


def workspace_of(root: Path, upstream: Path, cache: Path):
    c = Cache(cache)
    return c.workspace(c.mirror(normalize_url(str(upstream))), root)


def worktree_state(root: Path, ref: str | None):
    if ref is None or not (root / f"sglang-{ref}").exists():
        return None
    wt = root / f"sglang-{ref}"
    assert git(wt, "status", "--porcelain") == ""
    assert git(wt, "symbolic-ref", "HEAD") == f"refs/heads/overlay/{ref}"
    return git(wt, "rev-parse", "HEAD^{tree}")


def assert_nothing_left(root: Path, ws, cache: Path) -> None:
    assert not [p for p in root.iterdir() if TMP_MARK in p.name or ".overlay-init-" in p.name]
    state = root / ".overlay"
    for name in ("journal.json", "staging", "upgrade.json", repolock.PID_NAME):
        assert not (state / name).exists(), name
    assert not [p for p in state.glob(".*")
                if p.name != ".gitignore"] if state.is_dir() else True
    if (state / repolock.LOCK_NAME).exists():  # nobody holds it
        with open(state / repolock.LOCK_NAME) as fh:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    scratch = durable.scratch_root(cache)
    assert not (list(scratch.iterdir()) if scratch.is_dir() else [])
    if (ws.path / "HEAD").exists():
        assert not list((ws.path / SWAPS_DIR).glob("*")) if (ws.path / SWAPS_DIR).is_dir() \
            else True
        assert git(ws.path, "for-each-ref", "refs/overlay-next/") == ""
        listed = [line[len("worktree "):] for line in
                  git(ws.path, "worktree", "list", "--porcelain").splitlines()
                  if line.startswith("worktree ")]
        assert all(Path(p).exists() for p in listed[1:]), listed


@pytest.mark.parametrize("name,point", CASES, ids=[f"{n}:{p}" for n, p in CASES])
def test_kill_9_at_the_crash_point_then_the_same_command_finishes(
        name, point, tmp_path, templates, upstream, shared_cache):
    sc = SCENARIOS[name]
    t = {**templates, "upstream": upstream}
    root = tmp_path / "ov"
    shutil.copytree(templates[sc.template], root, symlinks=True)
    sc.prepare(root, t, shared_cache)
    ws = workspace_of(root, upstream, shared_cache)
    before = tree_snapshot(sc.snapshot_of(root)) if name == "init" else overlay_snapshot(root)
    old_tree = worktree_state(root, sc.ref)

    killed = run_proc(sc.args(root, t), shared_cache, {durable.CRASH_ENV: point})
    assert killed.returncode == -9, (killed.returncode, killed.stderr)
    if (root / ".overlay" / "journal.json").exists():
        # killed while carrying out a journal: every command, read-only ones too,
        # first finishes it, so no command ever sees the overlay half-changed
        assert journal.recover(root)
    crashed = tree_snapshot(sc.snapshot_of(root)) if name == "init" else overlay_snapshot(root)
    swap_pending = (ws.path / SWAPS_DIR).is_dir() and any((ws.path / SWAPS_DIR).iterdir())
    crashed_tree = None if swap_pending else worktree_state(root, sc.ref)

    again = overlay(*sc.args(root, t), cache=shared_cache)
    assert again.rc == sc.rc, again.out + again.err
    after = tree_snapshot(sc.snapshot_of(root)) if name == "init" else overlay_snapshot(root)
    new_tree = worktree_state(root, sc.ref)
    assert crashed in (before, after)  # never half-changed
    assert crashed_tree in (old_tree, new_tree, None)  # old or new, complete, on its branch
    if sc.ref:
        assert new_tree is not None
    sc.check(root, t)
    assert_nothing_left(root, ws, shared_cache)
    # every kill ends in the same finished state
    final = (after, new_tree)
    assert FINAL.setdefault(name, final) == final


# --- one writer per overlay repository ------------------------------------------------


class HeldLock:
    """The repository's lock, held by this test process (as a running writer would)."""

    def __init__(self, root: Path):
        d = root / ".overlay"
        d.mkdir(exist_ok=True)
        self.fh = open(d / repolock.LOCK_NAME, "a+")
        fcntl.flock(self.fh, fcntl.LOCK_EX)
        (d / repolock.PID_NAME).write_text(f"{os.getpid()} apply\n")
        self.pid_file = d / repolock.PID_NAME

    def release(self):
        self.pid_file.unlink()
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


def test_case_11_a_second_apply_waits_for_the_first_then_runs(tmp_path, templates,
                                                                shared_cache):
    root = tmp_path / "ov"
    shutil.copytree(templates["base"], root, symlinks=True)
    lock = HeldLock(root)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tools")}
    proc = subprocess.Popen([sys.executable, "-m", "sglang_overlay",
                             f"--cache-dir={shared_cache}", "-C", str(root), "apply",
                             "--no-lint", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stderr.readline()  # blocks until it says whom it waits for
    assert f"waiting for process {os.getpid()}" in line
    assert not (root / "sglang-v0.5.1").exists()  # it did not start while waiting
    lock.release()
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert git(root / "sglang-v0.5.1", "status", "--porcelain") == ""
    assert not [p for p in root.iterdir() if TMP_MARK in p.name]
    r = overlay("-C", root, "apply", "--no-lint", "--json", cache=shared_cache)
    assert r.rc == 0 and r.json["worktree_state"] == "unchanged"


def test_case_12_a_second_upgrade_gives_up_naming_the_holder(tmp_path, templates,
                                                              shared_cache):
    root = tmp_path / "ov"
    shutil.copytree(templates["base"], root, symlinks=True)
    before = overlay_snapshot(root)
    lock = HeldLock(root)
    try:
        r = run_proc(["-C", root, "upgrade", "--to", "v0.5.3", "--yes"], shared_cache,
                     {repolock.TIMEOUT_ENV: "0"})
        assert r.returncode == 2, r.stderr
        assert f"locked by process {os.getpid()} (apply)" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        assert overlay_snapshot(root) == before
        # read-only verbs do not wait for a writer
        assert overlay("-C", root, "lint", cache=shared_cache).rc in (0, 1)
    finally:
        lock.release()
    done = overlay("-C", root, "upgrade", "--to", "v0.5.3", "--yes", cache=shared_cache)
    assert done.rc == 0, done.err
    assert (root / "CHANGELOG.md").read_text().count("Upgraded SGLang") == 1
    assert not (root / ".overlay" / repolock.PID_NAME).exists()


def test_gc_removes_what_killed_runs_left(tmp_path, templates, shared_cache):
    root = tmp_path / "ov"
    shutil.copytree(templates["base"], root, symlinks=True)
    applied_then_changed(root, templates, shared_cache)
    other = tmp_path / "other"
    made = overlay("-C", root, "apply", "--no-lint", "--worktree", other, "--branch",
                   "overlay/other", cache=shared_cache)
    assert made.rc == 0, made.err
    killed = run_proc(["-C", root, "apply", "--no-lint"], shared_cache,
                      {durable.CRASH_ENV: "worktree-new-made"})
    assert killed.returncode == -9
    shutil.rmtree(other)  # a worktree deleted by hand: its entry stays in git
    leftovers = [str(p) for p in root.iterdir() if TMP_MARK in p.name]
    assert len(leftovers) == 1
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    scratch = durable.scratch_root(shared_cache) / f"build-{dead}-x"
    scratch.mkdir(parents=True)
    r = overlay("gc", "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    assert str(scratch) in r.json["removed"] and leftovers[0] in r.json["removed"]
    assert str(other) in r.json["pruned_worktrees"]
    assert not [p for p in root.iterdir() if TMP_MARK in p.name]
    assert not scratch.exists()
    again = overlay("gc", "--json", cache=shared_cache)
    assert again.json["removed"] == [] and again.json["pruned_worktrees"] == []
