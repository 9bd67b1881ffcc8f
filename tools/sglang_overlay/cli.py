"""The `overlay` command line. Only parsing lives here; each verb's logic is
in ``commands/<verb>.py``."""

from __future__ import annotations

import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import click

from . import __version__
from .errors import BAD_INPUT, INTERNAL, INTERRUPTED, BadInput, OverlayError


@dataclass
class Options:
    directory: Path
    cache_dir: Path | None

    def path(self, p: Path | str) -> Path:
        """A path from the command line, relative to -C DIR like git's."""
        p = Path(p).expanduser()
        # normalized: '-C ov ../fork' is /abs/fork, never /abs/ov/../fork
        return Path(os.path.normpath((p if p.is_absolute() else self.directory / p).absolute()))

    def existing(self, p: Path | str, flag: str) -> Path:
        """opts.path(p), which must exist (bad input naming the flag otherwise)."""
        path = self.path(p)
        if not path.exists():
            raise BadInput(f"{flag} {p}: {path} does not exist",
                           f"pass an existing path (relative to -C {self.directory})")
        return path


pass_options = click.make_pass_decorator(Options)
json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print machine-readable JSON on stdout.")
ref_option = click.option("--sglang-ref", "sglang_ref", metavar="REF",
                          help="Upstream tag, branch or commit (default: the pinned ref).")
upstream_option = click.option("--upstream", metavar="URL|PATH",
                               help="Upstream repository (default: the manifest's).")
offline_option = click.option("--offline", is_flag=True,
                              help="Use only what the cache has; never touch the network.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sglang-overlay")
@click.option("-C", "directory", default=".", metavar="DIR",
              type=click.Path(file_okay=False, path_type=Path),
              help="Run as if started in DIR (the overlay repository).")
@click.option("--cache-dir", envvar="SGLANG_OVERLAY_CACHE", metavar="DIR",
              type=click.Path(file_okay=False, path_type=Path),
              help="Cache for upstream mirrors (default: $XDG_CACHE_HOME/sglang-overlay).")
@click.pass_context
def cli(ctx: click.Context, directory: Path, cache_dir: Path | None) -> None:
    """Keep your changes to SGLang as an overlay on any pinned release."""
    if not directory.is_dir():
        raise click.BadParameter(f"{directory} is not a directory", param_hint="-C")
    ctx.obj = Options(directory=directory, cache_dir=cache_dir)


@cli.command()
@ref_option
@upstream_option
@click.option("--worktree", type=click.Path(path_type=Path), metavar="PATH",
              help="Where the patched worktree goes (default: ./sglang-<ref> in the overlay).")
@click.option("--branch", metavar="NAME", help="Branch name (default: overlay/<ref>).")
@click.option("--force", is_flag=True,
              help="Replace a worktree with uncommitted changes (saved to a backup ref first).")
@click.option("--no-lint", is_flag=True, help="Skip `overlay lint` after applying.")
@click.option("--update-lock", is_flag=True,
              help="Accept the commit the pinned ref resolves to now, and lock it.")
@offline_option
@json_option
@pass_options
def apply(opts: Options, **kwargs) -> int:
    """Apply the overlay to an upstream ref in a worktree, one commit per unit."""
    from .commands import apply as cmd

    return cmd.run(opts, **kwargs)


@cli.command()
@ref_option
@upstream_option
@offline_option
@json_option
@pass_options
def lint(opts: Options, **kwargs) -> int:
    """Static checks of the patched tree (registry, API drift, config); no GPU."""
    from .commands import lint as cmd

    return cmd.run(opts, **kwargs)


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--upstream", metavar="URL|PATH",
              help="The upstream SGLang repository the manifest names (URL or local path; "
                   "default: SGLang's GitHub repository, fetched through "
                   "$SGLANG_OVERLAY_UPSTREAM or a [mirrors] entry when set).")
@click.option("--sglang-ref", "sglang_ref", metavar="REF",
              help="Upstream tag, branch or commit to pin (required).")
@click.option("--ci", "ci", type=click.Choice(["github"]), default=None,
              help="Also write CI workflows (see `overlay ci github`).")
@click.option("--gpu-runner", "gpu_runner", metavar="LABEL", default=None,
              help="With --ci github: the self-hosted GPU runner label.")
@offline_option
@json_option
@pass_options
def init(opts: Options, **kwargs) -> int:
    """Start an empty overlay in DIRECTORY, pinned and locked to an upstream ref."""
    from .commands import init as cmd

    return cmd.run(opts, **kwargs)


@cli.command()
@click.option("--sglang-ref", "sglang_refs", metavar="REF", multiple=True,
              help="A ref to check (repeatable).")
@click.option("--tags", metavar="GLOB", help="Check every upstream tag matching GLOB, e.g. 'v0.5.*'.")
@upstream_option
@offline_option
@click.option("--markdown", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Also write the matrix as a markdown file.")
@click.option("--jobs", type=click.IntRange(1, 64), default=None,
              help="Parallel workers (default: the number of cores).")
@json_option
@pass_options
def check(opts: Options, **kwargs) -> int:
    """Dry-run apply + lint on several refs: a unit-by-ref compatibility matrix."""
    from .commands import check as cmd

    return cmd.run(opts, **kwargs)


@cli.command()
@click.option("--to", "to_ref", metavar="REF", required=True, help="The new upstream ref.")
@click.option("--yes", is_flag=True, help="Retire every unit upstream now provides, without asking.")
@upstream_option
@offline_option
@json_option
@pass_options
def upgrade(opts: Options, **kwargs) -> int:
    """Move the pin to REF, newer or older: retire upstreamed units, bring back
    those an older REF needs again, regenerate stale patches."""
    from .commands import upgrade as cmd

    return cmd.run(opts, **kwargs)


@cli.command()
@click.option("--worktree", type=click.Path(path_type=Path), metavar="PATH",
              help="The applied worktree to read (default: the pinned ref's).")
@click.option("--continue", "continue_", is_flag=True,
              help="Finish an apply or upgrade that stopped on a conflict.")
@click.option("--abort", is_flag=True, help="Drop an unfinished apply or upgrade.")
@json_option
@pass_options
def refresh(opts: Options, **kwargs) -> int:
    """Write edits made in an applied worktree back into the overlay."""
    from .commands import refresh as cmd

    return cmd.run(opts, **kwargs)


@cli.command()
@click.option("--from", "source", metavar="PATH_OR_REV", required=True,
              help="The fork: a path to its checkout, or a revision in the upstream.")
@click.option("--base", metavar="REF", help="Upstream ref to diff against (default: the pinned ref).")
@upstream_option
@offline_option
@json_option
@pass_options
def capture(opts: Options, **kwargs) -> int:
    """Turn an existing fork into overlay units."""
    from .commands import capture as cmd

    return cmd.run(opts, **kwargs)


@cli.command()
@ref_option
@upstream_option
@offline_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Where the wheel goes (default: dist/ in the overlay).")
@click.option("--repack", type=click.Path(dir_okay=False, path_type=Path),
              metavar="UPSTREAM_WHEEL",
              help="Patch upstream's official wheel instead of building from source.")
@json_option
@pass_options
def build(opts: Options, **kwargs) -> int:
    """Build a reproducible wheel of the patched tree (version +overlay.<hash>)."""
    from .commands import build as cmd

    return cmd.run(opts, **kwargs)


@cli.command()
@click.option("--python", "python", metavar="PATH", help="Interpreter of the target environment.")
@click.option("--no-deps", is_flag=True, help="Do not install dependencies.")
@click.option("--wheel", type=click.Path(dir_okay=False, path_type=Path),
              help="Wheel to install (default: the newest one `overlay build` made).")
@click.option("--gpu-deps", is_flag=True,
              help="Also install the GPU dependencies upstream declares as an extra "
                   "(its 'srt' extra on releases that have one).")
@json_option
@pass_options
def install(opts: Options, **kwargs) -> int:
    """Install the built wheel into an environment."""
    from .commands import install as cmd

    return cmd.run(opts, **kwargs)


@cli.command()
@click.option("--python", "python", metavar="PATH", help="Interpreter of the environment to inspect.")
@json_option
@pass_options
def verify(opts: Options, **kwargs) -> int:
    """Check an installed patched sglang against the current overlay."""
    from .commands import verify as cmd

    return cmd.run(opts, **kwargs)


@cli.command(name="test")
@click.option("--model", "models", metavar="HF_ID", multiple=True,
              help="Model to run (repeatable; default: every model the overlay declares).")
@click.option("--dry-run", is_flag=True, help="Print the exact commands and environment.")
@ref_option
@click.option("--worktree", type=click.Path(path_type=Path), metavar="PATH",
              help="Patched checkout holding the suite (default: the pinned ref's worktree).")
@click.option("--python", "python", metavar="PATH", help="Interpreter with the patched sglang.")
@click.option("--standin-suite", "standin_suite", metavar="PATH",
              type=click.Path(path_type=Path),
              envvar="SGLANG_OVERLAY_STANDIN_SUITE",
              help="For CI without a GPU: run this CPU stand-in suite instead of the "
                   "checkout's, without the CUDA check; its reports say cpu-standin.")
@click.option("--shard", metavar="I/N",
              help="Run the I-th of N deterministic shares of the models (for a CI job matrix).")
@click.option("--merge-reports", "merge_reports", is_flag=True,
              help="Merge the shards' report directories given as arguments into one report.")
@click.argument("report_dirs", nargs=-1, type=click.Path(path_type=Path), metavar="[DIR]...")
@json_option
@pass_options
def test_(opts: Options, **kwargs) -> int:
    """Run SGLang's generation-model suite for the overlay's models (needs CUDA)."""
    from .commands import test as cmd

    return cmd.run(opts, **kwargs)


@cli.command()
@click.option("--unit", "unit_name", metavar="NAME", required=True, help="The unit to send upstream.")
@click.option("--base", metavar="REF", help="Upstream ref to base the branch on (default: the pinned ref).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Where the patch series and PR_BODY.md go (default: pr/<unit>/).")
@click.option("--push", metavar="REMOTE", help="Push the branch to REMOTE (never without this flag).")
@click.option("--replace", is_flag=True,
              help="Prepare it even where upstream has the unit's files: the PR replaces them.")
@upstream_option
@offline_option
@json_option
@pass_options
def pr(opts: Options, **kwargs) -> int:
    """Prepare an upstream-ready pull request for one unit."""
    from .commands import pr as cmd

    return cmd.run(opts, **kwargs)


@cli.command()
@json_option
@pass_options
def gc(opts: Options, **kwargs) -> int:
    """Remove what killed runs left in the cache (scratch, temporary worktrees)."""
    from .commands import gc as cmd

    return cmd.run(opts, **kwargs)


@cli.group()
def ci() -> None:
    """Write CI workflows that lint, check, upgrade and test the overlay."""


@ci.command(name="github")
@click.option("--gpu-runner", "gpu_runner", metavar="LABEL", default=None,
              help="Label of the self-hosted GPU runners (default: gpu).")
@json_option
@pass_options
def ci_github(opts: Options, **kwargs) -> int:
    """GitHub Actions workflows in .github/workflows/: CPU checks on push and pull
    request, a nightly upgrade, and the GPU suite sharded over a job matrix."""
    from .commands import ci as cmd

    return cmd.run_github(opts, **kwargs)


def main(argv: list[str] | None = None) -> int:
    try:
        rv = cli.main(args=argv, prog_name="overlay", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:  # click's form of Ctrl-C (or end of input at a prompt)
        click.echo("overlay: interrupted", err=True)
        return INTERRUPTED
    except click.ClickException as exc:
        click.echo(f"overlay: {_usage_line(exc)}", err=True)
        return BAD_INPUT
    except OverlayError as exc:
        click.echo(f"overlay: {exc.line()}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("overlay: interrupted", err=True)
        return INTERRUPTED
    except Exception as exc:
        bad = _upstream_problem(exc)
        if bad is not None:  # a fact from the upstream plumbing, worded in one place
            click.echo(f"overlay: {bad.line()}", err=True)
            return bad.exit_code
        # a bug: say so, with the traceback
        traceback.print_exc()
        click.echo("overlay: internal error (this is a bug; please report it "
                   "with the traceback above)", err=True)
        return INTERNAL
    return rv if isinstance(rv, int) else 0


def _upstream_problem(exc: Exception) -> BadInput | None:
    """An ``upstream.UpstreamError`` as its bad-input line; None for anything else.

    upstream.py (git, gitpython) loads lazily, with the verbs that need it: when
    it was never loaded, exc cannot come from it."""
    if f"{__package__}.upstream" not in sys.modules:
        return None
    from .upstream import UpstreamError
    from .upstream_problems import as_bad_input
    return as_bad_input(exc) if isinstance(exc, UpstreamError) else None


def _usage_line(exc: click.ClickException) -> str:
    """Click's usage error as the one line every bad input gets, with the fix."""
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "overlay"
    return f"{exc.format_message()} (fix: see `{command} --help`)"


def entry() -> None:
    code = main()
    if code == INTERRUPTED:
        # the stack is unwound (locks released, scratch removed); skip the
        # interpreter's teardown, where a git process object's finalizer would
        # print a second KeyboardInterrupt traceback after "interrupted"
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
