"""CPU behaviour of the overlay's two runtime patches, on the real upstream files.

patches/parallel-state-reuse.patch and patches/expert-location-reset.patch let
a second ModelRunner in the same process reuse the world/TP/PP process groups
and set the global expert-location metadata again, when
SGLANG_ALLOW_REUSE_DISTRIBUTED=true; with the variable unset (or false)
SGLang must behave exactly as upstream.

The files under test are not hand-written: `overlay apply` writes them from a
copy of this repository's overlay on SGLang v0.5.1 (the pinned release) and on
v0.5.3 (where expert-location-reset needs a 3-way merge). The unpatched files
come straight from the upstream tags. Each is imported on the CPU against the
stand-ins in tests/standin_runtime (only the sglang modules the two files
import), and driven through the calls ModelRunner.init_torch_distributed makes,
with a real torch.distributed "gloo" process group of world size 1.
"""

from __future__ import annotations

import ast
import contextlib
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed
from helpers import git, overlay, upstream_file

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent
PARALLEL_STATE = "python/sglang/srt/distributed/parallel_state.py"
EXPERT_LOCATION = "python/sglang/srt/eplb/expert_location.py"
ENVIRON = "python/sglang/srt/environ.py"  # v0.5.3 on: SGLang declares its env variables here
ENV_MODULE = "sglang.srt.environ"
PS_MODULE = "sglang.srt.distributed.parallel_state"
EL_MODULE = "sglang.srt.eplb.expert_location"
REUSE_ENV = "SGLANG_ALLOW_REUSE_DISTRIBUTED"
RELEASES = ("v0.5.1", "v0.5.3")
GROUPS = ("_WORLD", "_TP", "_PP", "_MOE_EP", "_MOE_TP")
TP_TWICE = "tensor model parallel group is already initialized"


# tests/ is on sys.path (conftest.py), so the stand-in package imports by name
import standin_runtime as standin  # noqa: E402


# --------------------------------------------------------------------------- files


@pytest.fixture(scope="module")
def sources(upstream, shared_cache, tmp_path_factory) -> dict:
    """(variant, release) -> {path: file} for "patched" (by `overlay apply`) and "upstream"."""
    base = tmp_path_factory.mktemp("reuse-patches")
    root = base / "overlay-copy"
    root.mkdir()
    shutil.copy(REPO / "overlay.toml", root / "overlay.toml")
    shutil.copytree(REPO / "overlay", root / "overlay")
    shutil.copytree(REPO / "patches", root / "patches")
    shutil.copytree(REPO / "variants", root / "variants")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "copy of the repository's overlay")
    # v0.5.1 has no environ.py: the units' own patches; v0.5.3 declares the
    # variable in environ.py and reads it through envs: the variants from v0.5.3
    variant = {"v0.5.1": None, "v0.5.3": "v0.5.3"}
    files = {}
    for release in RELEASES:
        # v0.5.1 is the release overlay.toml pins
        ref = [] if release == "v0.5.1" else ["--sglang-ref", release]
        r = overlay("-C", root, "apply", "--upstream", upstream, *ref, "--no-lint", "--json",
                    cache=shared_cache)  # fmt: skip
        assert r.rc == 0, r.err
        units = {u["name"]: u for u in r.json["units"]}
        for name in ("parallel-state-reuse", "expert-location-reset"):
            assert units[name]["status"] == "applied", units[name]
            assert units[name]["variant"] == variant[release], units[name]
        worktree = Path(r.json["worktree"])
        paths = [PARALLEL_STATE, EXPERT_LOCATION] + ([ENVIRON] if variant[release] else [])
        files["patched", release] = {p: worktree / p for p in paths}
        files["upstream", release] = {}
        for p in paths:
            dest = base / f"upstream-{release}" / p
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(upstream_file(upstream, release, p))
            files["upstream", release][p] = dest
    return files


def test_overlay_writes_the_patched_files(sources, upstream):
    for release in RELEASES:
        patched = {p: f.read_text() for p, f in sources["patched", release].items()}
        plain = {p: f.read_text() for p, f in sources["upstream", release].items()}
        assert "def _reuse_model_parallel(" in patched[PARALLEL_STATE]
        assert "_reuse_model_parallel" not in plain[PARALLEL_STATE]
        assert (
            REUSE_ENV in patched[EXPERT_LOCATION]
            and REUSE_ENV not in plain[EXPERT_LOCATION]
        )
        # the patched file is upstream's file of that release with the patch's lines added
        for path in (PARALLEL_STATE, EXPERT_LOCATION):
            assert set(plain[path].splitlines()) - set(patched[path].splitlines()) <= {
                "    assert _global_expert_location_metadata is None"
            }
    # v0.5.3 on: declared in environ.py, read through envs; v0.5.1: read from os.environ
    v053 = {p: f.read_text() for p, f in sources["patched", "v0.5.3"].items()}
    assert "    SGLANG_ALLOW_REUSE_DISTRIBUTED = EnvBool(False)\n" in v053[ENVIRON]
    for path in (PARALLEL_STATE, EXPERT_LOCATION):
        assert "envs.SGLANG_ALLOW_REUSE_DISTRIBUTED.get()" in v053[path]
    assert "from sglang.srt.environ import envs\n" in v053[PARALLEL_STATE]
    v051 = sources["patched", "v0.5.1"][EXPERT_LOCATION].read_text()
    assert "envs" not in v051 and 'os.environ.get("SGLANG_ALLOW_REUSE_DISTRIBUTED"' in v051


# --------------------------------------------------------------------------- stand-ins


def _upstream_path(rel: str, release: str) -> str:
    """Where the definitions of the stand-in file `rel` (sglang/...) live upstream."""
    if rel == "sglang/srt/utils.py" and release != "v0.5.1":
        return "python/sglang/srt/utils/common.py"  # utils became a package
    if rel == "sglang/srt/model_loader/__init__.py":
        return "python/sglang/srt/model_loader/utils.py"  # re-exported upstream
    return "python/" + rel


def _arg_spec(fn: ast.FunctionDef):
    args = fn.args
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + args.defaults
    text = lambda node: node and ast.unparse(node)  # noqa: E731
    spec = [(a.arg, text(a.annotation), text(d)) for a, d in zip(positional, defaults)]
    spec += [("*" + args.vararg.arg, None, None)] if args.vararg else []
    spec += [
        (a.arg, text(a.annotation), text(d))
        for a, d in zip(args.kwonlyargs, args.kw_defaults)
    ]
    spec += [("**" + args.kwarg.arg, None, None)] if args.kwarg else []
    return spec, [ast.unparse(d) for d in fn.decorator_list]


def _definitions(source: str) -> dict:
    """Public functions, methods, dataclass fields and enum members of a module."""
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            found[node.name] = _arg_spec(node)
        elif isinstance(node, ast.ClassDef):
            found[node.name] = [ast.unparse(b) for b in node.bases]
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    found[f"{node.name}.{item.name}"] = _arg_spec(item)
                elif isinstance(item, ast.AnnAssign):
                    value = item.value and ast.unparse(item.value)
                    found[f"{node.name}.{item.target.id}"] = (
                        ast.unparse(item.annotation),
                        value,
                    )
                elif isinstance(item, ast.Assign) and not item.targets[0].id.startswith(
                    "_"
                ):
                    found[f"{node.name}.{item.targets[0].id}"] = ast.unparse(item.value)
    return found


def test_standins_match_upstream_signatures(upstream):
    """Every stand-in keeps the signature of the real thing (v0.5.1, and v0.5.3 where used)."""
    checked = set()
    for path in standin.standin_files():
        rel = path.relative_to(standin.STANDIN_ROOT).as_posix()
        ours = _definitions(path.read_text())
        compared = []
        for release in RELEASES:
            try:
                real = _definitions(
                    upstream_file(upstream, release, _upstream_path(rel, release))
                )
            except subprocess.CalledProcessError:  # no such module in that release
                continue
            compared.append(release)
            for name, spec in ours.items():
                assert name in real, f"{rel}: {name} does not exist in {release}"
                assert (
                    spec == real[name]
                ), f"{rel}: {name} is {spec} but {real[name]} in {release}"
                checked.add((rel, name))
        # symm_mem.py is new in v0.5.3; every other stand-in exists in v0.5.1
        assert compared and ("v0.5.1" in compared or rel.endswith("/symm_mem.py")), rel
    assert {n for _, n in checked} >= {
        "get_bool_env_var", "get_int_env_var", "direct_register_custom_op", "is_shm_available",
        "PyNcclCommunicator.__init__", "MessageQueue.create_from_process_group",
        "SymmMemCommunicator.__init__", "ServerArgs.ep_dispatch_algorithm",
        "ModelConfig.__init__", "get_model_architecture", "rebalance_experts",
    }  # fmt: skip


def _sglang_modules() -> dict:
    return {n: m for n, m in sys.modules.items() if n.split(".")[0] == "sglang"}


def test_standins_do_not_leak(sources):
    before = _sglang_modules()
    with standin.install():
        ps = standin.load_real_module(
            PS_MODULE, sources["patched", "v0.5.1"][PARALLEL_STATE]
        )
        assert ps.__file__ == str(sources["patched", "v0.5.1"][PARALLEL_STATE])
        utils = sys.modules["sglang.srt.utils"]
        assert Path(utils.__file__).is_relative_to(standin.STANDIN_ROOT)
        # parallel_state registered its custom ops through the stand-in
        assert {"inplace_all_reduce", "outplace_all_reduce"} <= set(
            utils.REGISTERED_OPS
        )
        with pytest.raises(ModuleNotFoundError):
            __import__("sglang.srt.managers.scheduler")
    after = _sglang_modules()
    assert after.keys() == before.keys()
    assert all(after[n] is before[n] for n in before)


# --------------------------------------------------------------------------- parallel_state


def _load_environ(files: dict) -> None:
    """The real environ.py of that tree (v0.5.3 on), where the patched files read envs."""
    if ENVIRON in files:
        standin.load_real_module(ENV_MODULE, files[ENVIRON])


@contextlib.contextmanager
def parallel_state(files: dict):
    """The real parallel_state.py of files, torn down (groups and torch.distributed) after."""
    assert (
        not torch.distributed.is_initialized()
    ), "a previous test leaked a process group"
    with standin.install():
        _load_environ(files)
        ps = standin.load_real_module(PS_MODULE, files[PARALLEL_STATE])
        try:
            yield ps
        finally:
            try:
                ps.destroy_model_parallel()
                ps.destroy_distributed_environment()
            finally:
                if torch.distributed.is_initialized():
                    torch.distributed.destroy_process_group()


def _outcome(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - the outcome is what is compared
        return type(e).__name__, str(e)
    return "ok", None


def _model_runner_calls(ps, store: str, ensure: bool) -> list:
    """What ModelRunner.init_torch_distributed calls (v0.5.1), for a world of one CPU rank.

    With ensure, also ensure_model_parallel_initialized, as other SGLang entry
    points (and frameworks embedding SGLang) call it.
    """
    world = dict(
        backend="gloo",
        world_size=1,
        rank=0,
        local_rank=0,
        distributed_init_method=store,
    )
    calls = [
        ("init_distributed_environment", _outcome(ps.init_distributed_environment, **world)),
        ("initialize_model_parallel", _outcome(
            ps.initialize_model_parallel, tensor_model_parallel_size=1,
            pipeline_model_parallel_size=1, expert_model_parallel_size=1)),
    ]  # fmt: skip
    if ensure:
        calls.append(
            (
                "ensure_model_parallel_initialized",
                _outcome(ps.ensure_model_parallel_initialized, 1, 1, 1, backend="gloo"),
            )
        )
    return calls


def _two_runners(ps, store: str) -> dict:
    """A first and a second model runner in one process, then runners of other sizes."""
    first = _model_runner_calls(ps, store, ensure=False)
    groups = {name: getattr(ps, name) for name in GROUPS}
    names = dict(ps._group_name_counter)  # how many groups of each kind were built
    second = _model_runner_calls(ps, store, ensure=True)
    kept = {name: getattr(ps, name) is group for name, group in groups.items()}
    return dict(
        first=first,
        groups=groups,
        second=second,
        kept=kept,
        new_groups=dict(ps._group_name_counter) != names,
        other_sizes=[
            _outcome(ps.ensure_model_parallel_initialized, 2, 1, 1),  # tp 2, pp 1
            _outcome(ps.ensure_model_parallel_initialized, 1, 1, 2),  # tp 1, pp 2
        ],
        kept_after_other_sizes={n: getattr(ps, n) is g for n, g in groups.items()},
    )


def _comparable(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "groups"}


def _reuse_logs(caplog) -> list:
    return [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("Reusing")
    ]


@pytest.fixture
def store(tmp_path) -> str:
    return f"file://{tmp_path / 'torch-distributed-store'}"


@pytest.mark.parametrize("env", [None, "false", "0"])
@pytest.mark.parametrize("release", RELEASES)
def test_without_reuse_env_a_second_runner_fails_as_upstream(
    sources, release, env, store, tmp_path, monkeypatch, caplog
):
    if env is None:
        monkeypatch.delenv(REUSE_ENV, raising=False)
    else:
        monkeypatch.setenv(REUSE_ENV, env)
    caplog.set_level(logging.INFO, logger=PS_MODULE)
    with parallel_state(sources["patched", release]) as ps:
        patched = _two_runners(ps, store)
    assert _reuse_logs(caplog) == []
    with parallel_state(sources["upstream", release]) as ps:
        plain = _two_runners(ps, f"file://{tmp_path / 'second-store'}")
    assert _comparable(patched) == _comparable(plain)
    # and that outcome is upstream's "already initialized" assertion
    ok = ("ok", None)
    assert patched["first"] == [
        ("init_distributed_environment", ok), ("initialize_model_parallel", ok)]  # fmt: skip
    assert patched["second"] == [
        ("init_distributed_environment", ok),
        ("initialize_model_parallel", ("AssertionError", TP_TWICE)),
        ("ensure_model_parallel_initialized", ok),
    ]
    assert all(g is not None for g in patched["groups"].values())
    assert all(patched["kept"].values())
    assert [kind for kind, _ in patched["other_sizes"]] == [
        "AssertionError",
        "AssertionError",
    ]
    assert "tensor parallel group already initialized" in patched["other_sizes"][0][1]
    assert "pipeline parallel group already initialized" in patched["other_sizes"][1][1]


@pytest.mark.parametrize("env", ["true", "1", "TRUE"])
@pytest.mark.parametrize("release", RELEASES)
def test_with_reuse_env_a_second_runner_reuses_the_groups(
    sources, release, env, store, monkeypatch, caplog
):
    monkeypatch.setenv(REUSE_ENV, env)
    caplog.set_level(logging.INFO, logger=PS_MODULE)
    with parallel_state(sources["patched", release]) as ps:
        result = _two_runners(ps, store)
        # the reused groups are the live ones: real gloo collectives run on them
        for group in (ps.get_world_group(), ps.get_tp_group(), ps.get_pp_group()):
            group.barrier()
            t = torch.tensor([3.0, 4.0])
            torch.distributed.all_reduce(t, group=group.device_group)
            assert t.tolist() == [3.0, 4.0]
        assert ps.get_tensor_model_parallel_world_size() == 1
        assert ps.model_parallel_is_initialized()
    ok = ("ok", None)
    assert result["first"] == [
        ("init_distributed_environment", ok), ("initialize_model_parallel", ok)]  # fmt: skip
    assert result["second"] == result["first"] + [
        ("ensure_model_parallel_initialized", ok)
    ]
    # the TP/PP (and world, MoE) groups are the same objects: reused, not rebuilt
    assert all(result["kept"].values()), result["kept"]
    assert result["new_groups"] is False
    # the first runner built them normally (the variable does not stop that)
    assert all(result["groups"][n] is not None for n in GROUPS)
    # only the second runner reuses, and says so
    assert _reuse_logs(caplog) == [
        "Reusing the initialized world group",
        "Reusing the initialized model parallel groups",
        "Reusing the initialized model parallel groups",
    ]
    # a runner that needs other sizes is told so, and the groups are left alone
    (tp_kind, tp_msg), (pp_kind, pp_msg) = result["other_sizes"]
    assert tp_kind == pp_kind == "RuntimeError"
    assert REUSE_ENV in tp_msg and "(1, 1)" in tp_msg and "(2, 1)" in tp_msg
    assert REUSE_ENV in pp_msg and "(1, 1)" in pp_msg and "(1, 2)" in pp_msg
    assert all(result["kept_after_other_sizes"].values())


@pytest.mark.parametrize("release", RELEASES)
def test_reuse_scenario_fails_on_unpatched_upstream(
    sources, release, store, monkeypatch
):
    """Control: the scenario above really needs the patch."""
    monkeypatch.setenv(REUSE_ENV, "true")
    with parallel_state(sources["upstream", release]) as ps:
        result = _two_runners(ps, store)
    assert result["second"][1] == (
        "initialize_model_parallel",
        ("AssertionError", TP_TWICE),
    )
    assert result["other_sizes"][0][0] == "AssertionError"


def test_torch_distributed_is_torn_down_between_tests(sources, store, monkeypatch):
    """parallel_state() leaves no process group behind, whatever ran before."""
    monkeypatch.setenv(REUSE_ENV, "true")
    with parallel_state(sources["patched", RELEASES[0]]) as ps:
        _two_runners(ps, store)
        assert torch.distributed.is_initialized() and ps.model_parallel_is_initialized()
    assert not torch.distributed.is_initialized()


# --------------------------------------------------------------------------- expert_location


def _metadata(el, num_logical_experts: int, num_physical_experts: int):
    """A real ExpertLocationMetadata (2 layers), built by the module's own helpers."""
    from sglang.srt.server_args import (  # the stand-in, installed by the caller
        ServerArgs,
    )

    physical_to_logical = (
        torch.arange(num_physical_experts).repeat(2, 1) % num_logical_experts
    )
    return el.ExpertLocationMetadata._init_raw(
        server_args=ServerArgs(model_path=f"model-with-{num_logical_experts}-experts"),
        ep_size=1,
        physical_to_logical_map=physical_to_logical,
        logical_to_all_physical_map=el._compute_logical_to_all_physical_map(
            physical_to_logical, num_logical_experts=num_logical_experts
        ),
    )


def _set_twice(files: dict) -> dict:
    with standin.install():
        _load_environ(files)
        el = standin.load_real_module(EL_MODULE, files[EXPERT_LOCATION])
        assert el.get_global_expert_location_metadata() is None
        policy, reference = _metadata(el, 4, 4), _metadata(el, 8, 10)
        assert (policy.num_logical_experts, reference.num_physical_experts) == (4, 10)
        outcomes = [
            _outcome(el.set_global_expert_location_metadata, policy),
            _outcome(el.set_global_expert_location_metadata, reference),
        ]
        current = el.get_global_expert_location_metadata()
    return dict(
        outcomes=outcomes,
        current={id(policy): "first", id(reference): "second"}.get(id(current)),
    )


@pytest.mark.parametrize("env", [None, "false", "0"])
@pytest.mark.parametrize("release", RELEASES)
def test_expert_location_set_twice_without_env_is_upstream(
    sources, release, env, monkeypatch
):
    if env is None:
        monkeypatch.delenv(REUSE_ENV, raising=False)
    else:
        monkeypatch.setenv(REUSE_ENV, env)
    patched = _set_twice(sources["patched", release])
    plain = _set_twice(sources["upstream", release])
    assert patched == plain
    assert patched == dict(
        outcomes=[("ok", None), ("AssertionError", "")], current="first"
    )


@pytest.mark.parametrize("env", ["true", "1", "TRUE"])
@pytest.mark.parametrize("release", RELEASES)
def test_expert_location_set_twice_with_env(sources, release, env, monkeypatch):
    monkeypatch.setenv(REUSE_ENV, env)
    patched = _set_twice(sources["patched", release])
    assert patched == dict(outcomes=[("ok", None), ("ok", None)], current="second")
    # control: upstream's file still refuses, so the test needs the patch
    plain = _set_twice(sources["upstream", release])
    assert plain["outcomes"][1][0] == "AssertionError" and plain["current"] == "first"


# --------------------------------------------------------------------------- the test that travels


UPSTREAM_TEST = REPO / "overlay" / "test" / "srt" / "test_reuse_distributed.py"


def _run_upstream_test(files: dict):
    """The reuse-distributed-test unit's test file, run with unittest on that tree's modules."""
    import unittest

    assert not torch.distributed.is_initialized()
    with standin.install():
        _load_environ(files)
        standin.load_real_module(PS_MODULE, files[PARALLEL_STATE])
        module = standin.load_real_module("test_reuse_distributed", UPSTREAM_TEST)
        try:
            suite = unittest.defaultTestLoader.loadTestsFromModule(module)
            result = unittest.TestResult()
            suite.run(result)
        finally:
            sys.modules.pop("test_reuse_distributed", None)
    assert not torch.distributed.is_initialized()  # its tearDown cleans up
    return result


@pytest.mark.parametrize("release", RELEASES)
def test_the_unit_test_passes_on_the_patched_tree(sources, release):
    result = _run_upstream_test(sources["patched", release])
    assert result.testsRun == 3 and not result.skipped
    assert not result.failures and not result.errors, result.failures + result.errors


@pytest.mark.parametrize("release", RELEASES)
def test_the_unit_test_fails_without_the_patch(sources, release):
    result = _run_upstream_test(sources["upstream", release])
    failed = sorted(t.id().rsplit(".", 1)[1] for t, _ in result.failures + result.errors)
    assert failed == ["test_reuse_needs_the_same_sizes", "test_second_runner_reuses_the_groups"]


def test_registered_layout_runs_the_same_test():
    """From v0.5.8 upstream keeps tests under test/registered/ and registers them for CI."""
    variant = (REPO / "variants" / "reuse-distributed-test" / "v0.5.8" / "test" / "registered"
               / "distributed" / "test_reuse_distributed.py").read_text()
    base = UPSTREAM_TEST.read_text()
    assert "register_cpu_ci(" in variant
    register = {"from sglang.test.ci.ci_register import register_cpu_ci",
                'register_cpu_ci(est_time=30, suite="base-a-test-cpu")', ""}
    assert set(variant.splitlines()) - set(base.splitlines()) <= register


# --------------------------------------------------------------------------- newer releases


NEWER = ("v0.5.18", "v0.5.21", "v0.5.23")


def _function(tree: ast.Module, name: str) -> ast.FunctionDef:
    return next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)


def _calls(fn: ast.FunctionDef) -> set:
    return {n.func.id for n in ast.walk(fn) if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Name)}


def test_newer_variants_follow_upstreams_rewrites(upstream, shared_cache, tmp_path):
    """Where upstream rewrote the code (expert_location.py from v0.5.18, parallel_state.py
    from v0.5.21), the variants still gate the same places on envs."""
    root = tmp_path / "ov"
    root.mkdir()
    shutil.copy(REPO / "overlay.toml", root / "overlay.toml")
    for d in ("overlay", "patches", "variants"):
        shutil.copytree(REPO / d, root / d)
    for release in NEWER:
        r = overlay("-C", root, "apply", "--upstream", upstream, "--sglang-ref", release,
                    "--no-lint", "--json", cache=shared_cache)  # fmt: skip
        assert r.rc == 0, r.err
        units = {u["name"]: u for u in r.json["units"]}
        assert units["parallel-state-reuse"]["variant"] == (
            "v0.5.18" if release == "v0.5.18" else "v0.5.21")
        assert units["expert-location-reset"]["status"] == "applied"
        wt = Path(r.json["worktree"])
        env = ast.parse((wt / ENVIRON).read_text())
        envs_cls = next(n for n in env.body if isinstance(n, ast.ClassDef) and n.name == "Envs")
        declared = {t.id: ast.unparse(n.value) for n in envs_cls.body
                    if isinstance(n, ast.Assign) for t in n.targets}
        assert declared[REUSE_ENV] == "EnvBool(False)"
        ps = ast.parse((wt / PARALLEL_STATE).read_text())
        assert "_reuse_model_parallel" in _calls(_function(ps, "initialize_model_parallel"))
        assert "_reuse_distributed_allowed" in _calls(
            _function(ps, "init_distributed_environment"))
        allowed = ast.unparse(_function(ps, "_reuse_distributed_allowed"))
        assert f"envs.{REUSE_ENV}.get()" in allowed
        el = ast.parse((wt / EXPERT_LOCATION).read_text())
        setter = ast.unparse(_function(el, "set_global_expert_location_metadata"))
        assert f"allow_overwrite or envs.{REUSE_ENV}.get()" in setter
