"""Output for people and for machines: aligned tables, JSON, markdown."""

from __future__ import annotations

import json
import sys
from typing import Iterable, Sequence

import click

STATUS_COLORS = {
    "applied": "green",
    "applied-3way": "yellow",
    "applied-moved": "yellow",
    "already-upstream": "cyan",
    "upstream-provides": "magenta",
    "retired": "bright_black",
    "conflict": "red",
    "lint-error": "red",
    "error": "red",
    "warning": "yellow",
}


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], color_col: int | None = None) -> str:
    """An aligned plain-text table; colours only when stdout is a terminal."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in rows:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))
    tty = sys.stdout.isatty()

    def fmt(cells: Sequence[str], head: bool = False) -> str:
        out = []
        for i, c in enumerate(cells):
            pad = c.ljust(widths[i]) if i < len(cells) - 1 else c
            if tty and head:
                pad = click.style(pad, bold=True)
            elif tty and i == color_col and c in STATUS_COLORS:
                pad = click.style(pad, fg=STATUS_COLORS[c])
            out.append(pad)
        return "  ".join(out).rstrip()

    return "\n".join([fmt(headers, head=True)] + [fmt(r) for r in rows])


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    def esc(c: str) -> str:
        return str(c).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def emit_json(data, exit_code: int | None = None) -> None:
    """JSON on stdout; every verb's object carries its exit code."""
    if exit_code is not None:
        data = {**data, "exit_code": exit_code}
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 unit', '2 units' (many: the irregular plural)."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def unit_rows(results) -> list[list[str]]:
    rows = []
    for r in results:
        detail = r.detail
        if r.hunks:
            detail = (detail + "; " if detail else "") + "hunks: " + ", ".join(r.hunks)
        if r.unit.variant:
            detail = f"variant from {r.unit.variant}" + (f"; {detail}" if detail else "")
        files = ", ".join(r.files) if r.files else ""
        rows.append([r.unit.name, r.unit.kind, r.status, files, detail])
    return rows


UNIT_HEADERS = ("UNIT", "KIND", "STATUS", "FILES", "DETAIL")
