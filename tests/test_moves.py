"""Patch units follow files that move or split upstream (real releases).

Between v0.5.1 and v0.5.8 `python/sglang/srt/utils.py` became the package
`python/sglang/srt/utils/` (most of it in `common.py`; `disable_request_logging`
went to `request_logger.py`) and `hf_transformers_utils.py` moved into it.
"""

from __future__ import annotations

import ast
import shutil
import subprocess

import pytest
from helpers import git, make_patch, overlay, write_overlay

UTILS = "python/sglang/srt/utils.py"
HF = "python/sglang/srt/hf_transformers_utils.py"
COMMON = "python/sglang/srt/utils/common.py"
REQUEST_LOGGER = "python/sglang/srt/utils/request_logger.py"
HF_NEW = "python/sglang/srt/utils/hf_transformers_utils.py"

PIN_MEMORY = ("def is_pin_memory_available() -> bool:\n    return torch.cuda.is_available()\n",
              "def is_pin_memory_available() -> bool:\n"
              "    # fork: pinned memory only with CUDA\n"
              "    return torch.cuda.is_available()\n")
REQUEST_LOGGING = ('    return get_bool_env_var("SGLANG_DISABLE_REQUEST_LOGGING")\n',
                   '    return get_bool_env_var("SGLANG_DISABLE_REQUEST_LOGGING") or '
                   'get_bool_env_var(\n        "SGLANG_FORK_QUIET"\n    )\n')
GGUF = ('    with open(model, "rb") as f:\n        header = f.read(4)\n',
        '    with open(model, "rb") as f:\n        header = f.read(4)  # fork: magic bytes\n')


def _edit(text: str, *pairs: tuple[str, str]) -> str:
    for old, new in pairs:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


def function_source(path, name: str) -> str:
    """The source of the def or class called name in the file at path."""
    text = path.read_text()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            return ast.get_source_segment(text, node)
    raise AssertionError(f"{path} defines no {name}")


def assert_edits_at_new_homes(wt) -> None:
    """The fork's three edits sit inside the same functions at their v0.5.8 homes."""
    assert not (wt / UTILS).exists() and not (wt / HF).exists()
    assert "# fork: pinned memory only with CUDA" in function_source(
        wt / COMMON, "is_pin_memory_available")
    assert '"SGLANG_FORK_QUIET"' in function_source(wt / REQUEST_LOGGER,
                                                    "disable_request_logging")
    assert "# fork: magic bytes" in function_source(wt / HF_NEW, "check_gguf_file")
    for path in (COMMON, REQUEST_LOGGER, HF_NEW):
        text = (wt / path).read_text()
        assert text.count("fork:") + text.count("SGLANG_FORK_QUIET") == 1, path


@pytest.fixture(scope="module")
def captured(tmp_path_factory, upstream, shared_cache):
    """A fork of v0.5.1 editing a function in utils.py (and one that moves to
    another file by v0.5.8) and one in hf_transformers_utils.py, captured."""
    tmp = tmp_path_factory.mktemp("moves")
    fork = tmp / "fork"
    git(tmp, "clone", "-q", "--no-checkout", str(upstream), str(fork))
    git(fork, "checkout", "-q", "-b", "my-fork", "v0.5.1")
    utils = fork / UTILS
    utils.write_text(_edit(utils.read_text(), PIN_MEMORY, REQUEST_LOGGING))
    hf = fork / HF
    hf.write_text(_edit(hf.read_text(), GGUF))
    git(fork, "commit", "-qam", "My fork")
    root = tmp / "captured"
    assert overlay("init", root, "--upstream", upstream, "--sglang-ref", "v0.5.1",
                   cache=shared_cache).rc == 0
    r = overlay("-C", root, "capture", "--from", fork, "--json", cache=shared_cache)
    assert r.rc == 0, r.err
    kinds = {u["name"]: u["kind"] for u in r.json["units"]}
    assert sorted(kinds.values()) == ["patch", "patch"], kinds
    git(root, "add", "-A")
    git(root, "commit", "-qm", "captured")
    return root


def _copy(root, dest):
    shutil.copytree(root, dest, symlinks=True,
                    ignore=shutil.ignore_patterns("sglang-*", ".sglang-*", ".overlay"))
    return dest


def test_apply_on_a_release_where_the_files_moved(captured, tmp_path, shared_cache):
    root = _copy(captured, tmp_path / "ov")
    r = overlay("-C", root, "apply", "--sglang-ref", "v0.5.8", "--no-lint", "--json",
                cache=shared_cache)
    assert r.rc == 0, r.err + r.out
    statuses = {u["name"]: (u["status"], u["detail"], u["files"]) for u in r.json["units"]}
    assert all(s == "applied-moved" for s, _d, _f in statuses.values()), statuses
    details = sorted(d for _s, d, _f in statuses.values())
    assert details == [
        f"{HF} -> {HF_NEW}",
        f"{UTILS} -> {COMMON} (is_pin_memory_available), "
        f"{REQUEST_LOGGER} (disable_request_logging)",
    ], details
    assert sorted(f for _s, _d, fs in statuses.values() for f in fs) == sorted(
        [HF_NEW, COMMON, REQUEST_LOGGER])
    assert_edits_at_new_homes(root / "sglang-v0.5.8")
    # the pin itself is untouched by the moves
    r1 = overlay("-C", root, "apply", "--no-lint", "--json", cache=shared_cache)
    assert {u["status"] for u in r1.json["units"]} == {"applied"}, r1.out


def test_upgrade_regenerates_the_patches_on_the_new_paths(captured, tmp_path, shared_cache,
                                                          upstream):
    root = _copy(captured, tmp_path / "ov")
    r = overlay("-C", root, "upgrade", "--to", "v0.5.8", "--yes", "--json", cache=shared_cache)
    assert r.rc in (0, 1), r.err + r.out
    actions = {u["name"]: (u["status"], u["action"]) for u in r.json["units"]}
    assert all(s == "applied-moved" and a.startswith("regenerated (followed a move: ")
               for s, a in actions.values()), actions
    assert len(r.json["regenerated"]) == 2
    patches = sorted((root / "patches").glob("*.patch"))
    text = "".join(p.read_text() for p in patches)
    for old in (UTILS, HF):
        assert f"a/{old} " not in text and f"+++ b/{old}\n" not in text
    for new in (COMMON, REQUEST_LOGGER, HF_NEW):
        assert f"+++ b/{new}\n" in text
    # the regenerated patches apply plainly on v0.5.8
    checkout = tmp_path / "v058"
    git(tmp_path, "clone", "-q", "--no-checkout", str(upstream), str(checkout))
    git(checkout, "checkout", "-q", "v0.5.8")
    for p in patches:
        git(checkout, "apply", "--check", str(p))
    assert_edits_at_new_homes(root / "sglang-v0.5.8")
    again = overlay("-C", root, "apply", "--no-lint", "--json", cache=shared_cache)
    assert {u["status"] for u in again.json["units"]} == {"applied"}, again.out
    assert "Upgraded SGLang from v0.5.1 to v0.5.8" in (root / "CHANGELOG.md").read_text()


def test_check_shows_the_moves(captured, shared_cache):
    r = overlay("-C", captured, "check", "--sglang-ref", "v0.5.1", "--sglang-ref", "v0.5.8",
                "--jobs", "1", "--json", cache=shared_cache)
    cells = {u["name"]: u["cells"] for u in r.json["units"]}
    for name, c in cells.items():
        assert c["v0.5.1"]["status"] == "applied"
        assert c["v0.5.8"]["status"] == "applied-moved"
        assert " -> python/sglang/srt/utils/" in c["v0.5.8"]["detail"]
    notes = "\n".join(r.json["notes"])
    assert f"follows a move from v0.5.3 on: {HF} -> {HF_NEW}" not in notes  # only refs checked
    assert f"follows a move from v0.5.8 on: {HF} -> {HF_NEW}" in notes, notes
    text = overlay("-C", captured, "check", "--sglang-ref", "v0.5.8", cache=shared_cache).out
    assert "applied-moved" in text and f"{UTILS} -> {COMMON}" in text


def test_refresh_writes_back_on_the_new_paths(captured, tmp_path, shared_cache):
    root = _copy(captured, tmp_path / "ov")
    wt = root / "sglang-v0.5.8"
    assert overlay("-C", root, "apply", "--sglang-ref", "v0.5.8", "--worktree", wt,
                   "--no-lint", cache=shared_cache).rc == 0
    r = overlay("-C", root, "refresh", "--worktree", wt, "--json", cache=shared_cache)
    assert r.rc == 0, r.err + r.out
    text = "".join(p.read_text() for p in (root / "patches").glob("*.patch"))
    assert f"+++ b/{COMMON}\n" in text and f"+++ b/{UTILS}\n" not in text
    assert f"+++ b/{HF_NEW}\n" in text
    # and the patches written on the new paths still follow the move back to v0.5.1
    back = overlay("-C", root, "apply", "--no-lint", "--json", cache=shared_cache)
    assert {u["status"] for u in back.json["units"]} == {"applied-moved"}, back.out


@pytest.fixture(scope="module")
def split_upstream(tmp_path_factory, upstream):
    """The real upstream plus `v0.5.1-split`: v0.5.1 with utils.py replaced by
    two files that both define is_pin_memory_available (and nothing else of it)."""
    tmp = tmp_path_factory.mktemp("split")
    work = tmp / "work"
    git(tmp, "clone", "-q", "--shared", str(upstream), str(work))
    git(work, "checkout", "-q", "v0.5.1")
    text = (work / UTILS).read_text()
    start = text.index("def is_pin_memory_available")
    piece = "import torch\n\n\n" + text[start:text.index("class LayerFn", start)]
    git(work, "rm", "-q", UTILS)
    for name in ("pin_a.py", "pin_b.py"):
        (work / "python/sglang/srt" / name).write_text(piece)
    git(work, "add", "-A")
    git(work, "commit", "-qm", "split utils.py")
    git(work, "tag", "v0.5.1-split")
    return work


def test_a_hunk_whose_function_is_in_two_files_is_a_conflict_naming_both(
        split_upstream, tmp_path, shared_cache):
    patch = make_patch(split_upstream, "v0.5.1", tmp_path, {UTILS: lambda t: _edit(
        t, PIN_MEMORY, ("    raise NotImplementedError()\n\n\ndef set_cuda_arch",
                        "    raise NotImplementedError(directory)\n\n\ndef set_cuda_arch"))},
        "Pin memory note")
    root = write_overlay(tmp_path / "ov", split_upstream,
                         [{"name": "pin", "kind": "patch", "description": "Pin",
                           "patch": "patches/pin.patch"}],
                         files={"patches/pin.patch": patch})
    r = overlay("-C", root, "apply", "--sglang-ref", "v0.5.1-split", "--json",
                cache=shared_cache)
    assert r.rc == 1
    cell = r.json["units"][0]
    assert cell["status"] == "conflict"
    assert f"{UTILS} is gone on v0.5.1-split" in cell["detail"]
    hunks = "\n".join(cell["hunks"])
    assert ("(is_pin_memory_available: defined with matching context in several files: "
            "python/sglang/srt/pin_a.py, python/sglang/srt/pin_b.py") in hunks, hunks
    # a hunk whose function is nowhere any more says what it looked for, and where
    assert ("(no file under python/ defines launch_dummy_health_check_server or "
            "create_checksum or set_cuda_arch)"
            in hunks), hunks
    # the guidance names both and leaves the choice to a person: no command
    # that would pick one of them
    guidance = "\n".join(r.json["guidance"])
    assert f"{UTILS} is gone upstream on v0.5.1-split" in guidance
    assert "python/sglang/srt/pin_a.py (" in guidance
    assert "python/sglang/srt/pin_b.py (" in guidance
    assert "git apply --3way" not in guidance and "by hand" in guidance


def test_conflict_guidance_for_a_gone_file_names_its_likely_new_home(
        upstream, tmp_path, shared_cache):
    # a change to LayerFn.__call__'s signature, which upstream changed too by v0.5.8
    patch = make_patch(upstream, "v0.5.1", tmp_path, {UTILS: lambda t: _edit(t, (
        "    def __call__(self, layer_id: int, prefix: str) -> torch.nn.Module: ...\n",
        "    def __call__(self, layer_id: int, prefix: str = \"\") -> torch.nn.Module: ...\n"))},
        "LayerFn default prefix")
    root = write_overlay(tmp_path / "ov", upstream,
                         [{"name": "layer-fn", "kind": "patch", "description": "LayerFn",
                           "patch": "patches/layer-fn.patch"}],
                         files={"patches/layer-fn.patch": patch})
    r = overlay("-C", root, "apply", "--sglang-ref", "v0.5.8", cache=shared_cache)
    assert r.rc == 1, r.err + r.out
    res = root / "sglang-v0.5.8-conflict"
    assert git(res, "status", "--porcelain") == ""  # nothing could be applied there
    out = r.out
    assert "`git status` there lists the conflicted files" not in out
    assert f"{res} has no conflict markers" in out
    assert f"{UTILS} is gone upstream on v0.5.8; its content most likely went to:" in out
    first = out.split("most likely went to:\n", 1)[1].splitlines()[0]
    assert first.strip().startswith(f"{COMMON} (renamed, ") and "% similar" in first, out
    # the exact next step it prints carries the patch over and leaves markers there
    step = next(l for l in out.splitlines() if l.strip().startswith("cd "))
    subprocess.run(step.strip(), shell=True, check=False, capture_output=True)
    marked = (res / COMMON).read_text()
    assert "<<<<<<<" in marked and 'prefix: str = ""' in marked
    assert marked.index("<<<<<<<") > marked.index("class LayerFn")
    # once the markers are resolved, --continue writes the patch on the new path
    start, end = marked.index("<<<<<<<"), marked.index(">>>>>>>")
    end = marked.index("\n", end) + 1
    (res / COMMON).write_text(marked[:start] + "    def __call__(self, idx: int, prefix: str = "
                              "\"\") -> torch.nn.Module: ...\n" + marked[end:])
    c = overlay("-C", root, "refresh", "--continue", "--json", cache=shared_cache)
    assert c.rc == 0, c.err + c.out
    written = (root / "patches/layer-fn.patch").read_text()
    assert f"+++ b/{COMMON}\n" in written and UTILS not in written
    assert 'prefix: str = "")' in function_source(root / "sglang-v0.5.8" / COMMON, "LayerFn")


def test_a_moved_change_upstream_already_has_is_already_upstream(upstream, tmp_path,
                                                                  shared_cache):
    # v0.5.8 has this very line in get_int_env_var, in utils/common.py
    fixme = "    # FIXME: move your environment variable to sglang.srt.environ\n"
    patch = make_patch(upstream, "v0.5.1", tmp_path, {UTILS: lambda t: _edit(t, (
        "def get_int_env_var(name: str, default: int = 0) -> int:\n",
        "def get_int_env_var(name: str, default: int = 0) -> int:\n" + fixme))},
        "FIXME note")
    root = write_overlay(tmp_path / "ov", upstream,
                         [{"name": "fixme", "kind": "patch", "description": "FIXME",
                           "patch": "patches/fixme.patch"}],
                         files={"patches/fixme.patch": patch})
    r = overlay("-C", root, "check", "--sglang-ref", "v0.5.1", "--sglang-ref", "v0.5.8",
                "--jobs", "1", "--json", cache=shared_cache)
    cells = r.json["units"][0]["cells"]
    assert cells["v0.5.1"]["status"] == "applied"
    assert cells["v0.5.8"]["status"] == "already-upstream", cells["v0.5.8"]
    assert cells["v0.5.8"]["detail"] == f"the patch reverse-applies at {UTILS} -> {COMMON}"
