"""Custom config classes: `register-config` on every registry shape upstream
has had, its lint rules, its manifest keys, and the example on every release."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from helpers import amend, git, overlay, upstream_file
from sglang_overlay.errors import BadInput
from sglang_overlay.manifest import load
from sglang_overlay.units import edit
from test_edits import black_stable

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "custom-models"
CONFIG = "python/sglang/srt/configs/my_mla.py"
MODULE = "sglang.srt.configs.my_mla"

# (ref, where _CONFIG_REGISTRY is, how its classes are written)
SHAPES = [
    ("v0.5.1", "python/sglang/srt/hf_transformers_utils.py", "MyMLAConfig.model_type: MyMLAConfig"),
    ("v0.5.3", "python/sglang/srt/utils/hf_transformers_utils.py",
     "MyMLAConfig.model_type: MyMLAConfig"),
    ("v0.5.5", "python/sglang/srt/utils/hf_transformers_utils.py", "MyMLAConfig,"),
    ("v0.5.23", "python/sglang/srt/utils/hf_transformers/common.py", "MyMLAConfig,"),
]


def reader(upstream: Path, ref: str):
    def read(path):
        if not git(upstream, "ls-tree", ref, path):
            return None
        return upstream_file(upstream, ref, path).encode()
    return read


@pytest.mark.parametrize("ref,registry,written", SHAPES)
def test_register_config_on_each_registry_shape(ref, registry, written, upstream):
    read = reader(upstream, ref)
    assert edit.find_registry(read) == registry
    text = read(registry).decode()
    reg = edit.register_configs(text, ["MyMLAConfig"])
    assert reg.added == ["MyMLAConfig"]
    assert written in reg.text and black_stable(text, reg.text)
    names, _ = edit.registered_configs(reg.text)
    assert "MyMLAConfig" in names
    # imported where the registry can see it, from the package that exports it
    tree = ast.parse(reg.text)
    assert any(isinstance(n, ast.ImportFrom) and n.module == "sglang.srt.configs"
               and "MyMLAConfig" in [a.name for a in n.names] for n in tree.body)
    # the export: the import and __all__
    init = read(edit.CONFIGS_INIT).decode()
    exp = edit.export_configs(init, {"MyMLAConfig": MODULE})
    assert exp.added == ["MyMLAConfig"] and black_stable(init, exp.text)
    assert f"from {MODULE} import MyMLAConfig\n" in exp.text
    assert "'MyMLAConfig'" in ast.unparse(edit._module_list(ast.parse(exp.text), "__all__"))
    # idempotent, and already-upstream for a class upstream registers itself
    assert edit.register_configs(reg.text, ["MyMLAConfig"]).added == []
    assert edit.export_configs(exp.text, {"MyMLAConfig": MODULE}).added == []
    assert edit.register_configs(text, ["ExaoneConfig"]).added == []
    assert edit.export_configs(init, {"ExaoneConfig": "sglang.srt.configs.exaone"}).added == []


def test_register_config_names_the_missing_anchor():
    with pytest.raises(edit.MissingAnchor, match="_CONFIG_REGISTRY assigned a dict, a list"):
        edit.register_configs("from x import y\n_CONFIG_REGISTRY = build()\n", ["A"])
    read = {"python/sglang/srt/hf_transformers_utils.py": b"REGISTRY = {}\n"}.get
    assert edit.find_registry(read) is None
    with pytest.raises(edit.MissingAnchor, match="class MyConfig in the overlay's files"):
        edit.config_plan(type("M", (), {"overlay_configs": lambda self: {}})(),
                         type("U", (), {"configs": ("MyConfig",)})(), read)


def example(tmp_path: Path, change=None) -> Path:
    root = tmp_path / "example"
    shutil.copytree(EXAMPLE, root)
    if change:
        (root / "overlay.toml").write_text(change((root / "overlay.toml").read_text()))
    return root


def test_lint_config_unregistered_and_duplicate(tmp_path, upstream, shared_cache):
    def drop_edit(text):
        start = text.index('name = "register-my-mla-config"') - len("[[unit]]\n")
        end = text.index("[[unit]]", start + 10)
        return (text[:start] + text[end:]).replace('config = "MyMLAConfig"',
                                                   'config = "NoSuchConfig"')
    root = example(tmp_path, drop_edit)
    cfg = root / "overlay" / CONFIG
    cfg.write_text(cfg.read_text().replace('model_type = "my_mla"', 'model_type = "exaone"'))
    r = overlay("-C", root, "lint", "--upstream", upstream, "--json", cache=shared_cache)
    assert r.rc == 1, r.err
    found = {(f["rule"], f["path"]): f for f in r.json["findings"]
             if f["rule"].startswith("config-")}
    line = next(i for i, l in enumerate(cfg.read_text().splitlines(), 1)
                if l.startswith("class MyMLAConfig"))
    un = found["config-unregistered", f"overlay/{CONFIG}"]
    assert (un["path"], un["line"]) == (f"overlay/{CONFIG}", line)
    assert "MyMLAConfig" in un["message"] and "hf_transformers_utils.py" in un["message"]
    assert 'configs = ["MyMLAConfig"]' in un["fix"]
    dup = found["config-model-type-duplicate", f"overlay/{CONFIG}"]
    assert "'exaone'" in dup["message"] and "ExaoneConfig" in dup["message"]
    declared = found["config-unregistered", "overlay.toml"]
    assert 'config = "NoSuchConfig"' in declared["message"]
    assert declared["unit"] == "my-mla-model"
    assert len(found) == 3


@pytest.mark.parametrize("change,key,problem", [
    (lambda t: t.replace('configs = ["MyMLAConfig"]\n', ""),
     "configs", "missing or empty"),
    (lambda t: t.replace('configs = ["MyMLAConfig"]', 'configs = ["My-Config"]'),
     "configs", "'My-Config' is not a class name"),
    (lambda t: t.replace('configs = ["MyMLAConfig"]', 'configs = ["OtherConfig"]')
     .replace('config = "MyMLAConfig"', 'config = "OtherConfig"'),
     "configs", "defines class OtherConfig"),
    (lambda t: t.replace('edit = "register-multimodal"',
                         'edit = "register-multimodal"\nconfigs = ["MyMLAConfig"]'),
     "configs", "a register-multimodal edit has no 'configs' key"),
    (lambda t: t.replace('config = "MyMLAConfig"', 'config = "1x"'),
     "config", "'1x' is not a class name"),
    (lambda t: t.replace('config = "MyMLAConfig"', 'config = "OtherConfig"'),
     "models", "which this unit does not register"),
])
def test_manifest_config_keys_are_validated(change, key, problem, tmp_path):
    root = example(tmp_path, change)
    with pytest.raises(BadInput) as exc:
        load(root)
    assert f".{key}" in str(exc.value) and problem in str(exc.value)
    assert "\n" not in str(exc.value)


def test_refresh_keeps_register_config_and_refuses_hand_edits(tmp_path, upstream,
                                                              shared_cache):
    root = example(tmp_path, lambda t: t.replace(
        'url = "https://github.com/sgl-project/sglang.git"', f'url = "{upstream}"'))
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "example")
    a = overlay("-C", root, "apply", "--no-lint", cache=shared_cache)
    assert a.rc == 0, a.err
    wt = root / "sglang-v0.5.1"
    assert "MyMLAConfig.model_type: MyMLAConfig" in (wt / SHAPES[0][1]).read_text()
    same = overlay("-C", root, "refresh", "--json", cache=shared_cache)
    assert same.rc == 0, same.err
    assert {u["action"] for u in same.json["units"]} == {"unchanged"}
    reg = wt / SHAPES[0][1]
    amend(wt, "register-my-mla-config", lambda: reg.write_text(reg.read_text() + "# mine\n"))
    r = overlay("-C", root, "refresh", "--json", cache=shared_cache)
    assert r.rc == 1
    assert any("register-my-mla-config" in f and "by hand" in f for f in r.json["findings"])


def test_example_checks_clean_on_every_release(tmp_path, upstream, shared_cache):
    """The one slow test: the example on every release the tests build."""
    root = example(tmp_path)
    tags = git(upstream, "tag").split()
    r = overlay("-C", root, "check", "--upstream", upstream, "--tags", "v*", "--json",
                cache=shared_cache)
    assert r.rc == 0, r.out[-3000:] + r.err
    assert sorted(c["ref"] for c in r.json["refs"]) == sorted(tags) and len(tags) >= 16
    for u in r.json["units"]:
        assert {c["status"] for c in u["cells"].values()} == {"applied"}, u
    assert not any(r.json["lint"].values())


def test_capture_of_a_config_class_round_trips(tmp_path, upstream, shared_cache):
    """A fork of the newest release that adds a config class, exports it and
    registers it by hand: a files unit plus a register-config edit, and
    applying them gives the fork's tree."""
    fork = tmp_path / "fork"
    git(tmp_path, "clone", "-q", str(upstream), str(fork))
    git(fork, "checkout", "-q", "-b", "mine", "v0.5.23")
    (fork / CONFIG).write_bytes((EXAMPLE / "overlay" / CONFIG).read_bytes())
    init = fork / edit.CONFIGS_INIT
    init.write_text(init.read_text()
                    .replace("from sglang.srt.configs.zaya import ZayaConfig\n",
                             "from sglang.srt.configs.zaya import ZayaConfig\n"
                             f"from {MODULE} import MyMLAConfig\n")
                    .replace('    "ZayaConfig",\n]', '    "ZayaConfig",\n    "MyMLAConfig",\n]'))
    reg = fork / SHAPES[-1][1]
    reg.write_text(reg.read_text()
                   .replace("    XllmConfig,\n)\n", "    XllmConfig,\n    MyMLAConfig,\n)\n")
                   .replace("        XllmConfig,\n    ]\n}",
                            "        XllmConfig,\n        MyMLAConfig,\n    ]\n}"))
    git(fork, "add", "-A")
    git(fork, "commit", "-qm", "MyMLAConfig")
    root = tmp_path / "captured"
    r = captured(root, fork, upstream, shared_cache)
    units = {u["name"]: u for u in r.json["units"]}
    assert [u["kind"] for u in r.json["units"]] == ["files", "edit"], units
    assert 'configs = ["MyMLAConfig"]' in (root / "overlay.toml").read_text()
    a = overlay("-C", root, "apply", "--no-lint", "--sglang-ref", "v0.5.23", "--json",
                cache=shared_cache)
    assert a.rc == 0, a.err + a.out
    assert a.json["tree"] == git(fork, "rev-parse", "HEAD^{tree}")
    # the same fork with one more change to the registry file stays exact: a patch
    reg.write_text(reg.read_text() + "# mine\n")
    git(fork, "commit", "-qam", "more")
    r2 = captured(tmp_path / "again", fork, upstream, shared_cache)
    assert "edit" not in [u["kind"] for u in r2.json["units"]]


def captured(root: Path, fork: Path, upstream: Path, cache: Path):
    """`overlay init` on v0.5.23, then `overlay capture --from fork`."""
    assert overlay("init", root, "--upstream", upstream, "--sglang-ref", "v0.5.23",
                   cache=cache).rc == 0
    r = overlay("-C", root, "capture", "--from", fork, "--json", cache=cache)
    assert r.rc == 0, r.err
    return r


def test_a_nested_sub_config_is_not_asked_to_register():
    from sglang_overlay.lint import _nested_names

    src = b'''
class MyVisionConfig(PretrainedConfig):
    model_type = "my_vision"


class MyVLConfig(PretrainedConfig):
    model_type = "my_vl"
    sub_configs = {"vision_config": MyVisionConfig}
'''
    assert _nested_names(src, {"MyVisionConfig", "MyVLConfig"}) == {"MyVisionConfig"}
