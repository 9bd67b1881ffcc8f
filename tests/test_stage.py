"""The staging index writes blobs and commits itself: they must be git's, byte for byte."""

from __future__ import annotations

from helpers import git
from sglang_overlay.gitutil import Git, identity_env
from sglang_overlay.units import Stage


def test_objects_written_in_process_are_the_ones_git_writes(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "a.txt").write_text("a\n")
    git(repo, "add", "a.txt")
    git(repo, "commit", "-qm", "base")
    base = git(repo, "rev-parse", "HEAD")
    stage = Stage(Git(repo), tmp_path / "index", base)

    data = b"new file\n\x00binary too\n"
    sha = stage.hash(data)
    assert sha == git(repo, "hash-object", "--stdin", input=data)
    assert git(repo, "cat-file", "-t", sha) == "blob"  # really written
    stage.write("dir/b.bin", data)
    assert stage.entry("dir/b.bin") == ("100644", sha)
    assert stage.paths_under(["dir"], "dir/b.bin") == set()  # "dir" is a directory, not a file

    env = identity_env(1700000000)
    message = "unit: a message\n\nwith a body\n"
    ours = stage.commit(message, env)
    tree = stage.tree()
    theirs = Git(repo).run("commit-tree", tree, "-p", base, "-F", "-",
                           stdin=message.encode(), env=env)
    assert ours == theirs
    assert git(repo, "cat-file", "-t", ours) == "commit"
    # nothing new staged: no commit
    assert stage.commit(message, env) is None


def test_a_failed_unit_is_undone_without_commits(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "a.txt").write_text("a\n")
    git(repo, "add", "a.txt")
    git(repo, "commit", "-qm", "base")
    stage = Stage(Git(repo), tmp_path / "index", git(repo, "rev-parse", "HEAD"))
    stage.checkpoint()
    stage.write("kept.txt", b"kept\n")  # a unit that applied
    stage.checkpoint()
    stage.write("dropped.txt", b"dropped\n")  # a unit that then failed
    stage.reset()
    assert stage.entry("kept.txt") is not None and stage.entry("dropped.txt") is None
    listed = Git(repo).with_env(GIT_INDEX_FILE=str(tmp_path / "index")).run("ls-files")
    assert listed.split() == ["a.txt", "kept.txt"]
