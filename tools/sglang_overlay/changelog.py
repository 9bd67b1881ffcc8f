"""Adding a line to a Keep a Changelog file, under Unreleased."""

from __future__ import annotations

import re

HEADER = """# Changelog

All notable changes to this project are documented in this file.

The format is based on [Keep a Changelog](https://keepachangelog.com/en/1.1.0/).

## [Unreleased]
"""


def add_line(text: str | None, section: str, line: str) -> str:
    """text with '- line' under '## [Unreleased]' / '### section'."""
    if not text:
        text = HEADER
    lines = text.splitlines()
    unreleased = next((i for i, l in enumerate(lines)
                       if re.match(r"^## \[?Unreleased\]?", l, re.I)), None)
    if unreleased is None:
        first = next((i for i, l in enumerate(lines) if l.startswith("## ")), len(lines))
        lines[first:first] = ["## [Unreleased]", ""]
        unreleased = first
    end = next((i for i in range(unreleased + 1, len(lines)) if lines[i].startswith("## ")),
               len(lines))
    sub = next((i for i in range(unreleased + 1, end)
                if lines[i].strip().lower() == f"### {section}".lower()), None)
    if sub is None:
        insert = [f"### {section}", "", f"- {line}", ""]
        at = unreleased + 1
        while at < end and not lines[at].strip():
            at += 1
        lines[at:at] = ([""] if lines[at - 1].strip() else []) + insert
    else:
        at = sub + 1
        while at < end and not lines[at].strip():
            at += 1
        while at < end and (lines[at].startswith("- ") or lines[at].startswith("  ")):
            at += 1
        lines[at:at] = [f"- {line}"]
    return "\n".join(lines).rstrip("\n") + "\n"
