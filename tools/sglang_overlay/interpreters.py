"""The Python environment a verb works on (--python): install and verify.

Shared by the verbs so that none imports another.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from .errors import BadInput


def interpreter(python: str | None, base: Path | None = None) -> str:
    """The target interpreter's path; bad input when it does not exist or run.

    A name without a slash is looked up on PATH; a relative path is taken from
    base (the -C directory).
    """
    if not python:
        return sys.executable
    p = Path(python).expanduser()
    if base is not None and "/" in python and not p.is_absolute():
        p = base / p
    found = str(p.absolute()) if p.exists() else shutil.which(python)
    if not found or Path(found).is_dir():
        raise BadInput(f"--python {python}: no such interpreter",
                       "pass the path of the environment's python, e.g. .venv/bin/python")
    try:
        subprocess.run([found, "-c", "pass"], check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        raise BadInput(f"--python {python}: does not run as a Python interpreter",
                       "pass the path of the environment's python, e.g. .venv/bin/python") from None
    return found
