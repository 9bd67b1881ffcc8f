"""Walking upstream's releases in version order, to find where a change first
appears (a file upstream gained, a unit's retirement, a note's "from ... on").

Answers come from the trees themselves, not from a build's cell statuses,
which other findings (a lint error) can hide.
"""

from __future__ import annotations

from .errors import BadInput
from .gitutil import Git, GitError
from .versions import version_key


def is_release(tag: str) -> bool:
    return version_key(tag)[0] == 0


def between(tags, after: str | None, upto: str) -> list[str]:
    """Release tags t with after < t <= upto, oldest first (all up to upto
    when after is not a release)."""
    hi = version_key(upto)
    lo = version_key(after) if after and is_release(after) else None
    return sorted((t for t in tags if is_release(t) and version_key(t) <= hi
                   and (lo is None or version_key(t) > lo)), key=version_key)


def has_paths(git: Git, rev: str, paths) -> bool:
    return all(git.result("cat-file", "-e", f"{rev}:{p}").ok for p in paths)


def first_holding(revs: list[tuple[str, str]], holds) -> str | None:
    """The oldest of revs ([(tag, commit)], oldest first) from which on
    holds(commit) is true for every one; None when the newest fails."""
    if not revs or not holds(revs[-1][1]):
        return None
    first = revs[-1][0]
    for tag, commit in reversed(revs[:-1]):
        if not holds(commit):
            break
        first = tag
    return first


def first_release(session, holds, after: str | None, upto: str) -> str | None:
    """The first upstream release in (after, upto] from which on holds(git,
    commit) is true, walking the tags in version order; None when that cannot
    be told (offline, no tags, or upto itself fails)."""
    if session.offline:  # listing upstream's tags is a network call
        return None
    try:
        candidates = between(session.mirror.list_tags(), after, upto)
        if not candidates:
            return None
        resolved = session.mirror.resolve_many(candidates, offline=session.offline)
    except (BadInput, GitError):
        return None
    git = session.workspace.git
    return first_holding([(r.ref, r.commit) for r in resolved], lambda c: holds(git, c))
