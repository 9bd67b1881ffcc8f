"""The shared helpers that replaced copies in several verbs (issue 14): each
test fails when the one place gets a case wrong that one of its callers relied on."""

from __future__ import annotations

import os

import pytest

from helpers import git
from sglang_overlay import output
from sglang_overlay.gitutil import Git
from sglang_overlay.upstream import is_url
from sglang_overlay.versions import same_version


@pytest.mark.parametrize("text, url", [
    ("https://github.com/sgl-project/sglang.git", True),
    ("ssh://git@github.com/me/sglang.git", True),
    ("file:///srv/sglang.git", True),
    ("git@github.com:me/sglang.git", True),  # scp-like
    ("/srv/mirrors/sglang.git", False),
    ("../sglang", False),
    ("/tmp/me@work/sglang", False),  # an "@" in a path does not make it a URL (init kept it)
])
def test_is_url(text, url):
    assert is_url(text) is url


@pytest.mark.parametrize("a, b, same", [
    ("0.5.1", "0.5.1", True),
    ("0.5.1", "0.5.1.0", True),  # PEP 440 equal, spelled differently
    ("0.5.1", "0.5.1.post1", False),
    ("0.5.1rc0", "0.5.1", False),
    ("not-a-version", "not-a-version", True),  # falls back to the text
    ("not-a-version", "0.5.1", False),
])
def test_same_version(a, b, same):
    assert same_version(a, b) is same


def test_diff_raw_reports_each_kind_of_change(tmp_path):
    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "kept.py").write_text("a\n")
    (repo / "gone.py").write_text("b\n")
    (repo / "run.sh").write_text("echo\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "one")
    (repo / "kept.py").write_text("a2\n")
    (repo / "gone.py").unlink()
    os.chmod(repo / "run.sh", 0o755)
    (repo / "n\u00e9w file.py").write_text("c\n")  # git quotes this name without -z
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "two")
    entries = {e.path: e for e in Git(repo).diff_raw("HEAD~1", "HEAD")}
    assert sorted(entries) == sorted(["gone.py", "kept.py", "n\u00e9w file.py", "run.sh"])
    assert entries["gone.py"].deleted and entries["gone.py"].status == "D"
    assert entries["kept.py"].status == "M" and not entries["kept.py"].mode_only
    assert entries["run.sh"].mode_only and entries["run.sh"].permissions == 0o755
    assert entries["n\u00e9w file.py"].status == "A"
    assert entries["n\u00e9w file.py"].permissions == 0o644
    only = Git(repo).diff_raw("HEAD~1", "HEAD", ("run.sh",))
    assert [e.path for e in only] == ["run.sh"]


def test_output_keeps_stdout_for_the_report(capsys):
    output.warn("w")
    output.info("i")
    output.passthrough("tool line\n")
    output.progress("p")  # not a terminal under pytest: nothing
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "w\ni\ntool line\n"
