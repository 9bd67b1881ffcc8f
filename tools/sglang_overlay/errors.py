"""Exit codes and the errors that carry them.

Every command raises one of these instead of printing and exiting itself;
``cli.main`` turns it into one line on stderr and the exit code, so the codes
are the same everywhere:

    0  ok
    1  findings or conflicts (the command ran; the result needs attention)
    2  bad input or usage (nothing was written)
    3  needs a GPU (the step cannot run on this machine)
    4  internal error (a bug: the traceback is printed)
  130  interrupted (Ctrl-C), as shells report SIGINT
"""

from __future__ import annotations

OK = 0
FINDINGS = 1
BAD_INPUT = 2
NEEDS_GPU = 3
INTERNAL = 4
INTERRUPTED = 130


class OverlayError(Exception):
    """A fatal error with a one-line message and an exit code."""

    exit_code = BAD_INPUT

    def __init__(self, message: str, fix: str | None = None):
        self.message = message
        self.fix = fix
        super().__init__(self.line())

    def line(self) -> str:
        if self.fix:
            return f"{self.message} (fix: {self.fix})"
        return self.message


class BadInput(OverlayError):
    """The user's input (manifest, ref, path, flag) is wrong. Exit 2."""

    exit_code = BAD_INPUT


class Findings(OverlayError):
    """The command ran and found something the user must look at. Exit 1."""

    exit_code = FINDINGS


class NeedsGPU(OverlayError):
    """The step needs CUDA, which this machine does not have. Exit 3."""

    exit_code = NEEDS_GPU


class ManifestError(BadInput):
    """A problem in the manifest, naming the file, the key and the fix."""

    def __init__(self, file: str, key: str, problem: str, fix: str):
        self.file = file
        self.key = key
        super().__init__(f"{file}: {key}: {problem}", fix)
