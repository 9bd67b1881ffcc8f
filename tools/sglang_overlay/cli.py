"""The `overlay` command line. Only parsing lives here; each verb's logic is
in ``commands/<verb>.py``."""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import click

from . import __version__
from .errors import BAD_INPUT, INTERNAL, OverlayError


@dataclass
class Options:
    directory: Path
    cache_dir: Path | None


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


def main(argv: list[str] | None = None) -> int:
    try:
        rv = cli.main(args=argv, prog_name="overlay", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("overlay: aborted", err=True)
        return BAD_INPUT
    except click.ClickException as exc:
        exc.show()
        return BAD_INPUT
    except OverlayError as exc:
        click.echo(f"overlay: {exc.line()}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("overlay: interrupted", err=True)
        return BAD_INPUT
    except Exception:  # a bug: say so, with the traceback
        traceback.print_exc()
        click.echo("overlay: internal error (this is a bug; please report it "
                   "with the traceback above)", err=True)
        return INTERNAL
    return rv if isinstance(rv, int) else 0


def entry() -> None:
    sys.exit(main())
