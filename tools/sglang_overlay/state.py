"""An unfinished operation (a conflict to resolve), kept in <overlay>/.overlay/.

``overlay apply`` and ``overlay upgrade`` write it when they stop on a
conflict; ``overlay refresh --continue`` and ``--abort`` read and clear it.
The directory ignores itself (its .gitignore says ``*``), so it never shows
up in the overlay repository's ``git status``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import BadInput

STATE_DIR = ".overlay"
STATE_FILE = "state.json"


def state_dir(root: Path) -> Path:
    d = root / STATE_DIR
    if not d.exists():
        d.mkdir(parents=True)
        (d / ".gitignore").write_text("*\n")
    return d


def save(root: Path, data: dict) -> Path:
    path = state_dir(root) / STATE_FILE
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def load(root: Path) -> dict | None:
    path = root / STATE_DIR / STATE_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict) or not all(
            isinstance(data.get(k), str) for k in ("operation", "unit", "resolution")):
        raise BadInput(f"{path}: not a record of an unfinished apply or upgrade this tool "
                       "wrote", f"delete {path} (what it recorded, if anything, is lost)")
    return data


def clear(root: Path) -> None:
    path = root / STATE_DIR / STATE_FILE
    if path.exists():
        path.unlink()
