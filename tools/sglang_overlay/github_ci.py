"""GitHub Actions workflows for an overlay repository.

Three files under ``.github/workflows/``:

* ``overlay.yml`` (push, pull request; a CPU runner): install the tool, lint,
  ``overlay check`` over the pin and the newest release, the markdown matrix as
  the job summary;
* ``overlay-nightly.yml`` (schedule): look at upstream's tags; when the newest
  release applies, ``overlay upgrade --to <it> --yes`` and a pull request with
  the upgrade table (``gh``); when it conflicts, an issue with the matrix;
* ``overlay-gpu.yml`` (the self-hosted GPU runner label): apply, build, install
  into a fresh environment with upstream's GPU dependencies, ``overlay test
  --shard I/N`` per job of a matrix, upload ``reports/`` (JUnit included), and
  one job that merges the shards' reports.

The output depends only on the arguments and the manifest: the same overlay
gives the same bytes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from .errors import BadInput

WORKFLOWS_DIR = Path(".github") / "workflows"
CPU_FILE = "overlay.yml"
NIGHTLY_FILE = "overlay-nightly.yml"
GPU_FILE = "overlay-gpu.yml"
DEFAULT_GPU_RUNNER = "gpu"
MAX_SHARDS = 8
PYTHON = "3.11"
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
HEADER = ("# Written by `overlay ci github`; regenerate it rather than editing by hand.\n"
          "# Set the repository variable SGLANG_OVERLAY_UPSTREAM to fetch SGLang from a mirror.\n")
CHECKOUT = {"uses": "actions/checkout@v4"}
SETUP_PYTHON = {"uses": "actions/setup-python@v5", "with": {"python-version": PYTHON}}
UPSTREAM_ENV = {"SGLANG_OVERLAY_UPSTREAM": "${{ vars.SGLANG_OVERLAY_UPSTREAM }}"}

# The shell steps (named by id so the tests can run the ones that need no GPU).
CHECK_SCRIPT = """\
set +e
overlay check --markdown overlay-check.md
code=$?
set -e
cat overlay-check.md >> "$GITHUB_STEP_SUMMARY"
exit $code
"""

NEWEST_SCRIPT = """\
set +e
overlay check --json --markdown overlay-check.md > overlay-check.json
code=$?
set -e
if [ "$code" -ge 2 ]; then exit "$code"; fi
python - <<'EOF' >> "$GITHUB_OUTPUT"
import json, tomllib
pin = tomllib.load(open("overlay.toml", "rb"))["upstream"]["ref"]
data = json.load(open("overlay-check.json"))
newest = data["refs"][-1]["ref"]
cells = [u["cells"][newest]["status"] for u in data["units"]]
bad = any(s in ("conflict", "lint-error") for s in cells)
print(f"pin={pin}")
print(f"newest={newest}")
print("action=" + ("none" if newest == pin else "issue" if bad else "upgrade"))
EOF
cat overlay-check.md >> "$GITHUB_STEP_SUMMARY"
"""

UPGRADE_SCRIPT = """\
branch="overlay/upgrade-$NEWEST"
if git ls-remote --exit-code --heads origin "$branch" > /dev/null; then
  echo "$branch already exists upstream of this repository; nothing to do"
  exit 0
fi
git checkout -b "$branch"
overlay upgrade --to "$NEWEST" --yes > overlay-upgrade.txt
git add -A -- $(ls -d overlay.toml overlay patches 2>/dev/null)
git -c user.name="sglang-overlay" -c user.email="sglang-overlay@users.noreply.github.com" \\
  commit -q -m "Upgrade the overlay to SGLang $NEWEST"
git push origin "$branch"
{
  echo "\\`overlay upgrade --to $NEWEST --yes\\`:"
  echo
  echo '```'
  cat overlay-upgrade.txt
  echo '```'
  echo
  cat overlay-check.md
} > overlay-pr.md
gh pr create --base "$GITHUB_REF_NAME" --head "$branch" \\
  --title "Upgrade the overlay to SGLang $NEWEST" --body-file overlay-pr.md
"""

ISSUE_SCRIPT = """\
title="The overlay does not apply on SGLang $NEWEST"
if gh issue list --state open --search "$title in:title" --json number --jq '.[].number' \\
    | grep -q .; then
  echo "an open issue already says so"
  exit 0
fi
{
  echo "\\`overlay check\\` found conflicts on $NEWEST (pinned: $PIN)."
  echo
  cat overlay-check.md
} > overlay-issue.md
gh issue create --title "$title" --body-file overlay-issue.md
"""

GPU_ENV_SCRIPT = """\
python -m venv "$RUNNER_TEMP/sglang-env"
overlay install --gpu-deps --python "$RUNNER_TEMP/sglang-env/bin/python"
"""

MERGE_SCRIPT = """\
set +e
overlay test --merge-reports shards/*
code=$?
set -e
if [ -f reports/merged.md ]; then cat reports/merged.md >> "$GITHUB_STEP_SUMMARY"; fi
exit $code
"""


def check_label(label: str) -> None:
    if not LABEL_RE.match(label):
        raise BadInput(f"--gpu-runner {label!r}: not a runner label",
                       "pass the label of your self-hosted GPU runners, e.g. --gpu-runner gpu")


def install_step(root: Path) -> dict:
    """This repository when it is the tool's own, else the package from PyPI."""
    pyproject = root / "pyproject.toml"
    own = pyproject.is_file() and re.search(
        r'^name\s*=\s*"sglang-overlay"', pyproject.read_text(errors="replace"), re.M)
    spec = "." if own else "sglang-overlay"
    return {"name": "Install sglang-overlay", "run": f"python -m pip install {spec}"}


def shard_count(manifest) -> int:
    models = len({m.hf_id for m in manifest.models if m.hf_id})
    return max(1, min(models, MAX_SHARDS))


def workflows(root: Path, manifest, gpu_runner: str = DEFAULT_GPU_RUNNER) -> dict[str, dict]:
    """File name -> workflow document."""
    check_label(gpu_runner)
    install = install_step(root)
    setup = [CHECKOUT, SETUP_PYTHON, install]
    return {CPU_FILE: _cpu(setup), NIGHTLY_FILE: _nightly(install),
            GPU_FILE: _gpu(setup, shard_count(manifest), gpu_runner)}


def _cpu(setup: list) -> dict:
    """Every push and pull request: lint, and check the pin and the newest release."""
    return {
        "name": "overlay",
        "on": {"push": None, "pull_request": None},
        "permissions": {"contents": "read"},
        "env": UPSTREAM_ENV,
        "jobs": {"check": {
            "runs-on": "ubuntu-latest",
            "steps": [*setup,
                      {"name": "Lint", "id": "lint", "run": "overlay lint"},
                      {"name": "Check the pin and the newest release", "id": "check",
                       "run": CHECK_SCRIPT}],
        }},
    }


def _nightly(install: dict) -> dict:
    """Each night: upgrade to a new release and open a PR, or an issue with the matrix."""
    return {
        "name": "overlay nightly",
        "on": {"schedule": [{"cron": "17 3 * * *"}], "workflow_dispatch": None},
        "permissions": {"contents": "write", "pull-requests": "write", "issues": "write"},
        "env": UPSTREAM_ENV,
        "jobs": {"upgrade": {
            "runs-on": "ubuntu-latest",
            "env": {"GH_TOKEN": "${{ github.token }}"},
            "steps": [
                {**CHECKOUT, "with": {"fetch-depth": 0}}, SETUP_PYTHON, install,
                {"name": "Check the newest upstream release", "id": "newest",
                 "run": NEWEST_SCRIPT},
                {"name": "Upgrade and open a pull request", "id": "upgrade",
                 "if": "steps.newest.outputs.action == 'upgrade'",
                 "env": {"NEWEST": "${{ steps.newest.outputs.newest }}"},
                 "run": UPGRADE_SCRIPT},
                {"name": "Open an issue with the matrix", "id": "issue",
                 "if": "steps.newest.outputs.action == 'issue'",
                 "env": {"NEWEST": "${{ steps.newest.outputs.newest }}",
                         "PIN": "${{ steps.newest.outputs.pin }}"},
                 "run": ISSUE_SCRIPT},
            ],
        }},
    }


def _gpu(setup: list, n: int, gpu_runner: str) -> dict:
    """Pushes to main: apply, build, install and test on GPU runners in n shards."""
    return {
        "name": "overlay gpu",
        "on": {"push": {"branches": ["main"]}, "workflow_dispatch": None},
        "permissions": {"contents": "read"},
        "env": UPSTREAM_ENV,
        "jobs": {
            "test": {
                "runs-on": ["self-hosted", gpu_runner],
                "strategy": {"fail-fast": False,
                             "matrix": {"shard": list(range(1, n + 1))}},
                "steps": [
                    *setup,
                    {"name": "Apply", "id": "apply", "run": "overlay apply"},
                    {"name": "Build the wheel", "id": "build", "run": "overlay build"},
                    {"name": "Install into a fresh environment with upstream's GPU "
                             "dependencies", "id": "install", "run": GPU_ENV_SCRIPT},
                    {"name": "Test", "id": "test",
                     "run": 'overlay test --python "$RUNNER_TEMP/sglang-env/bin/python" '
                            f'--shard "${{{{ matrix.shard }}}}/{n}"'},
                    {"name": "Upload the reports and JUnit files", "if": "always()",
                     "uses": "actions/upload-artifact@v4",
                     "with": {"name": "reports-shard-${{ matrix.shard }}",
                              "path": "reports/", "if-no-files-found": "ignore"}},
                ],
            },
            "report": {
                "needs": "test",
                "if": "always()",
                "runs-on": "ubuntu-latest",
                "steps": [
                    *setup,
                    {"uses": "actions/download-artifact@v4",
                     "with": {"pattern": "reports-shard-*", "path": "shards"}},
                    {"name": "Merge the shards' reports", "id": "merge",
                     "run": MERGE_SCRIPT},
                    {"uses": "actions/upload-artifact@v4",
                     "with": {"name": "reports", "path": "reports/"}},
                ],
            },
        },
    }


class _Dumper(yaml.SafeDumper):
    """Block scalars for multi-line scripts, so the files read like hand-written ones;
    no anchors for the steps the jobs share."""

    def ignore_aliases(self, data) -> bool:
        return True


def _str(dumper, data: str):
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)


def render(doc: dict) -> str:
    return HEADER + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=100,
                              default_flow_style=False, allow_unicode=True)


def write(root: Path, manifest, gpu_runner: str | None = None) -> list[Path]:
    """Write the workflows into root/.github/workflows/; returns their paths."""
    docs = workflows(root, manifest, gpu_runner or DEFAULT_GPU_RUNNER)
    out_dir = root / WORKFLOWS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, doc in docs.items():
        path = out_dir / name
        tmp = path.with_name(f".{name}.tmp-{os.getpid()}")
        tmp.write_text(render(doc), encoding="utf-8")
        os.replace(tmp, path)
        paths.append(path)
    return paths
