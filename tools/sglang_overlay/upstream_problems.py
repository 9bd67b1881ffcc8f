"""What the user reads when the upstream or the cache fails: the one place.

``upstream.py`` is plumbing: it raises ``UpstreamError`` subclasses that carry
facts (the URL, the ref, git's stderr, the mirror's path). This module turns
each into the one-line ``BadInput`` with its fix; ``cli.main`` sends every
``UpstreamError`` through ``as_bad_input``, so every verb says the same thing.
"""

from __future__ import annotations

from .errors import BadInput
from .upstream import (FetchFailed, FetchIncomplete, MirrorCorrupt, NotARepository, NotCached,
                       TagsUnlisted, Unreachable, UnknownRef, UpstreamError, UpstreamMissing)
from .userconfig import HINT as UPSTREAM_HINT

OFFLINE_MISS = ("run without --offline to fetch it; if the upstream is out of reach, "
                + UPSTREAM_HINT)
GIVE_UPSTREAM = "pass --upstream a git URL or the path of an SGLang clone"


def as_bad_input(exc: UpstreamError) -> BadInput:
    """The user-facing line (message and fix) for a fact from the upstream layer."""
    words = _WORDS.get(type(exc))
    if words is None:  # a new fact needs its words here
        raise TypeError(f"no wording for {type(exc).__name__}")
    return BadInput(*words(exc))


def _unknown_ref(e: UnknownRef) -> tuple[str, str]:
    fix = ("pass a tag, a branch or a commit that exists upstream" if e.is_commit else
           f"name a tag, branch or commit that exists there (`git ls-remote --tags {e.url}` "
           "lists the tags)")
    return f"unknown ref '{e.ref}' in upstream '{e.url}'", fix


def _not_cached(e: NotCached) -> tuple[str, str]:
    if e.missing_mirror is not None:
        return f"ref '{e.ref}' is not in the cache ({e.missing_mirror} does not exist)", OFFLINE_MISS
    what = f"commit {e.ref}" if e.is_commit else f"ref '{e.ref}'"
    return f"{what} is not in the cache", OFFLINE_MISS


# each fact -> (message, fix)
_WORDS = {
    UpstreamMissing: lambda e: (f"upstream '{e.given}' does not exist", GIVE_UPSTREAM),
    NotARepository: lambda e: (f"upstream '{e.given}' is not a git repository", GIVE_UPSTREAM),
    Unreachable: lambda e: (
        f"cannot reach upstream '{e.url}': {e.stderr}",
        f"check the URL and the network, or {UPSTREAM_HINT} "
        "(--offline only uses refs the cache already has)"),
    TagsUnlisted: lambda e: (
        f"cannot list the tags of '{e.url}': {e.stderr}",
        f"check the URL and the network, or {UPSTREAM_HINT}"),
    MirrorCorrupt: lambda e: (
        f"the cache's mirror {e.path} is corrupt: {e.stderr}",
        f"remove it (rm -rf {e.path}) and run the command again; what is needed is fetched anew"),
    FetchFailed: lambda e: (
        f"cannot fetch '{e.refspec}' from '{e.url}': {e.stderr}",
        f"check that the ref exists upstream and the network works, or {UPSTREAM_HINT}"),
    UnknownRef: _unknown_ref,
    FetchIncomplete: lambda e: (
        f"fetching '{e.ref}' from '{e.url}' did not bring commit {e.commit}",
        "check the upstream repository"),
    NotCached: _not_cached,
}
