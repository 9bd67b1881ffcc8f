"""Splitting `overlay test` over CI jobs, and merging what the jobs report.

``--shard I/N`` takes every N-th model, starting at the I-th, in the order the
overlay declares them (or the ``--model`` order): the same share on every
machine, and every model in exactly one shard. ``--merge-reports DIR...``
reads each shard's ``latest.json`` and JUnit files and writes one report.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from .errors import BadInput

SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse(spec: str) -> tuple[int, int]:
    m = SHARD_RE.match(spec)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise BadInput(f"--shard {spec}: not I/N with 1 <= I <= N",
                       "pass e.g. --shard 1/4 (the first of four shards)")
    return int(m.group(1)), int(m.group(2))


def take(items: list, index: int, count: int) -> list:
    """Shard index (1-based) of count: items index-1, index-1+count, ..."""
    return items[index - 1::count]


def find_report(path: Path) -> Path:
    """A shard's report: DIR/latest.json (DIR as uploaded), or one JSON file."""
    if path.is_file() and path.suffix == ".json":
        return path
    found = sorted(path.glob("**/latest.json")) if path.is_dir() else []
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise BadInput(f"--merge-reports {path}: {what} latest.json there",
                       "pass each shard's reports/ directory (one latest.json each)")
    return found[0]


def load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"{path}: not a test report ({exc})",
                       "pass the reports/ directories `overlay test` wrote") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise BadInput(f"{path}: not a test report (no models list)",
                       "pass the reports/ directories `overlay test` wrote")
    return data


def merge(reports: list[tuple[Path, dict]], base: Path) -> dict:
    """One report from the shards' (its path, its data); file links relative to base."""
    if not reports:
        raise BadInput("--merge-reports: no report directory given",
                       "pass the shards' reports/ directories")
    for key in ("ref", "runner"):
        values = sorted({str(d.get(key)) for _, d in reports})
        if len(values) > 1:
            raise BadInput(f"--merge-reports: the shards differ in {key} ({', '.join(values)})",
                           "merge only the shards of one run")
    models, seen = [], {}
    for path, data in reports:
        # links are relative to the shard's overlay root (reports/test-.../m.log);
        # the shard's reports/ directory is path.parent, wherever it was put
        for m in data["models"]:
            if m["model"] in seen:
                raise BadInput(f"--merge-reports: {m['model']} is in {seen[m['model']]} "
                               f"and {path}", "merge only the shards of one run")
            seen[m["model"]] = path
            m = dict(m)
            for key in ("log", "junit"):
                if m.get(key) and not Path(m[key]).is_absolute():
                    m[key] = _relink(path.parent / m[key].removeprefix("reports/"), base)
            models.append(m)
    models.sort(key=lambda m: m["model"])
    first = reports[0][1]
    merged = {**first,
              "started": min(d.get("started") or "" for _, d in reports) or None,
              "finished": max(d.get("finished") or "" for _, d in reports) or None,
              "gpu": next((d["gpu"] for _, d in reports if d.get("gpu")), None),
              "exit_code": max(int(d.get("exit_code", 0)) for _, d in reports),
              "shards": [str(p) for p, _ in reports],
              "models": models}
    return merged


def _relink(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(path)


def merge_junit(files: list[Path], dest: Path) -> int:
    """One <testsuites> with every file's suites; returns the number of suites."""
    root = ET.Element("testsuites")
    for f in files:
        try:
            top = ET.parse(f).getroot()
        except (OSError, ET.ParseError):
            continue  # a shard that died mid-write: its report says so
        for suite in ([top] if top.tag == "testsuite" else list(top.iter("testsuite"))):
            root.append(suite)
    ET.ElementTree(root).write(dest, encoding="utf-8", xml_declaration=True)
    return len(root)
