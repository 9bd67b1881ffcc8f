"""Comparing versions: upstream tags ordered like releases (v0.5.1 < v0.5.1.post1 <
v0.5.2rc0 < v0.5.2), and version strings equal as PEP 440 versions."""

from __future__ import annotations

import re

from packaging.version import InvalidVersion, Version


def same_version(a: str, b: str) -> bool:
    """Whether a and b name the same version (PEP 440: 0.5.1 == 0.5.1.0); else as text."""
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def version_key(tag: str) -> tuple:
    """Sort key: PEP 440 order for release tags, natural order for the rest after them."""
    try:
        return (0, Version(tag.lstrip("v")), ())
    except InvalidVersion:
        parts = re.split(r"(\d+)", tag)
        return (1, Version("0"), tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts))


def is_release(tag: str) -> bool:
    """Whether tag names a release (v0.5.1, v0.5.10.post1, v0.5.2rc0), not a branch or sha."""
    return version_key(tag)[0] == 0 and not re.fullmatch(r"[0-9a-f]{7,40}", tag)
