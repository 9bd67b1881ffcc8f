"""A model's row in upstream's supported-models table.

``docs/supported_models/generative_models.md`` lists each model family in a
markdown table (family, example Hugging Face id, description)::

    | **OPT** | `facebook/opt-125m` | Meta's Open Pretrained Transformer. |

``add_model_rows`` appends a row per model after the table's last row, in the
style of the rows already there (padded to the column widths when the table
is aligned, one space around each cell otherwise). A model whose id or family
is already in a table is left alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .manifest import Model

DOCS_PATH = "docs/supported_models/generative_models.md"


class NoTable(Exception):
    pass


@dataclass
class Row:
    family: str
    hf_id: str
    description: str


def row_for(model: Model, fallback_description: str = "") -> Row:
    family = model.family or re.sub(r"For(CausalLM|ConditionalGeneration)$", "",
                                    model.architecture)
    return Row(family, model.hf_id or "", model.description or fallback_description)


def _cells(line: str) -> list[str]:
    """Raw cells of a table line (spaces kept), split on unescaped pipes."""
    body = line.strip()
    if body.startswith("|"):
        body = body[1:]
    if body.endswith("|") and not body.endswith("\\|"):
        body = body[:-1]
    return re.split(r"(?<!\\)\|", body)


def _tables(lines: list[str]) -> list[tuple[int, int]]:
    """(first, last) line index of each table: a header, a --- row, body rows."""
    out, i = [], 0
    while i < len(lines):
        if lines[i].lstrip().startswith("|") and i + 1 < len(lines) and re.match(
                r"^\s*\|?\s*:?-{3,}", lines[i + 1]):
            j = i + 2
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                j += 1
            out.append((i, j - 1))
            i = j
        else:
            i += 1
    return out


def _bold(cell: str) -> str | None:
    m = re.search(r"\*\*(.+?)\*\*", cell)
    return m.group(1).strip().lower() if m else None


def add_model_rows(text: str, rows: list[Row]) -> tuple[str, list[str]]:
    """text with a row for each model not listed yet; (new text, hf ids added)."""
    lines = text.splitlines(keepends=True)
    tables = _tables(lines)
    if not tables:
        raise NoTable("no markdown table")
    first, last = next(
        (t for t in tables if "identifier" in lines[t[0]].lower()), tables[0])
    listed_ids, listed_families = set(), set()
    for a, b in tables:
        for line in lines[a + 2: b + 1]:
            listed_ids.update(re.findall(r"`([^`]+)`", line))
            cells = _cells(line)
            if cells and _bold(cells[0]):
                listed_families.add(_bold(cells[0]))
    widths = [len(c) for c in _cells(lines[first])]
    body = lines[first: last + 1]
    aligned = len({len(line.rstrip("\n")) for line in body}) == 1 and len(body) > 2
    new, added = [], []
    for row in rows:
        if row.hf_id in listed_ids or row.family.lower() in listed_families:
            continue
        values = [f"**{row.family}**", f"`{row.hf_id}`", row.description]
        values += [""] * (len(widths) - len(values))
        if aligned:
            cells = [f" {v} ".ljust(w) if len(v) + 2 <= w else f" {v} "
                     for v, w in zip(values, widths)]
        else:
            cells = [f" {v} " if v else " " for v in values]
        new.append("|" + "|".join(cells) + "|\n")
        added.append(row.hf_id)
        listed_ids.add(row.hf_id)
        listed_families.add(row.family.lower())
    if not new:
        return text, []
    if not lines[last].endswith("\n"):
        lines[last] += "\n"
    lines[last + 1: last + 1] = new
    return "".join(lines), added
