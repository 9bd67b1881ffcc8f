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


def test_every_upstream_fact_has_its_words(tmp_path):
    """upstream.py raises facts; upstream_problems words them. A new fact without
    words would reach the user as an internal error (a traceback), and the
    words must keep naming what the user needs: the ref, the URL, the fix."""
    from sglang_overlay import upstream as up
    from sglang_overlay.cli import _upstream_problem
    from sglang_overlay.errors import BAD_INPUT
    url, sha = "file:///srv/sglang", "a" * 40
    facts = [up.UpstreamMissing("../gone"), up.NotARepository(url),
             up.Unreachable(url, "fatal: no route"), up.TagsUnlisted(url, "fatal: no route"),
             up.FetchFailed(url, ["+refs/tags/v1:refs/tags/v1"], "fatal: x"),
             up.MirrorCorrupt(tmp_path / "m.git", "error: inflate: data stream error"),
             up.UnknownRef(url, "v9.9.9"), up.UnknownRef(url, sha),
             up.FetchIncomplete(url, "v1", sha), up.NotCached("v1", tmp_path / "m.git"),
             up.NotCached(sha), up.NotCached("v1")]
    def leaves(cls):
        subs = cls.__subclasses__()
        return {c for s in subs for c in leaves(s)} | set(subs)
    assert {type(f) for f in facts} == leaves(up.UpstreamError)  # each kind is covered
    lines = []
    for fact in facts:
        bad = _upstream_problem(fact)
        assert bad is not None and bad.exit_code == BAD_INPUT and bad.fix, fact
        lines.append(bad.line())
    assert len(set(lines)) == len(lines)  # no two facts read the same
    assert lines[6] == ("unknown ref 'v9.9.9' in upstream 'file:///srv/sglang' (fix: name a tag, "
                        "branch or commit that exists there (`git ls-remote --tags "
                        "file:///srv/sglang` lists the tags))")
    assert lines[9].startswith(f"ref 'v1' is not in the cache ({tmp_path / 'm.git'} does not "
                               "exist) (fix: run without --offline")
    assert _upstream_problem(ValueError("a bug")) is None  # bugs still get the traceback
