"""The user's upstream setting: where to fetch SGLang from, once per machine.

Two sources, besides ``--upstream`` on the command line (which wins):

* ``SGLANG_OVERLAY_UPSTREAM`` (environment): a URL or a path used instead of
  the manifest's upstream, for every verb;
* ``$XDG_CONFIG_HOME/sglang-overlay/config.toml`` (default
  ``~/.config/sglang-overlay/config.toml``), a ``[mirrors]`` table mapping an
  upstream URL to a mirror, like git's ``url.<base>.insteadOf``::

      [mirrors]
      "https://github.com/sgl-project/sglang" = "/srv/mirrors/sglang.git"

  A key matches the URL exactly or as a prefix (``.git`` and a trailing ``/``
  do not matter); the longest matching key wins.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import BadInput

ENV_UPSTREAM = "SGLANG_OVERLAY_UPSTREAM"
GITHUB_URL = "https://github.com/sgl-project/sglang.git"
HINT = (f"set {ENV_UPSTREAM}, map the URL under [mirrors] in "
        "$XDG_CONFIG_HOME/sglang-overlay/config.toml, or pass --upstream; "
        "without GitHub, `python scripts/local_upstream.py` builds a local upstream "
        "from SGLang's PyPI releases")


def config_path() -> Path:
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(xdg) / "sglang-overlay" / "config.toml"


def _key(url: str) -> str:
    return url.rstrip("/").removesuffix(".git").rstrip("/")


def mirrors() -> dict[str, str]:
    """The [mirrors] table of the user's config file ({} when there is none)."""
    path = config_path()
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BadInput(f"{path}: not valid TOML: {exc}",
                       "fix the file or move it away") from None
    table = data.get("mirrors", {})
    if not isinstance(table, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in table.items()):
        raise BadInput(f"{path}: mirrors: must map upstream URLs to mirror URLs or paths",
                       '[mirrors] "https://github.com/sgl-project/sglang" = "/path/to/mirror.git"')
    return table


@dataclass
class Choice:
    """Which upstream to fetch from, and why."""

    url: str            # what to fetch (URL or path, not yet normalized)
    source: str         # "--upstream", "env", "config" or "manifest"
    base: Path | None   # what a relative path is relative to (None: the cwd)

    def describe(self) -> str:
        return {"--upstream": "from --upstream",
                "env": f"from ${ENV_UPSTREAM}",
                "config": f"a mirror from {config_path()}",
                "manifest": "the manifest's"}[self.source]


def choose(cli_upstream: str | None, manifest_url: str | None,
           manifest_root: Path | None, cwd: Path | None = None) -> Choice:
    """The upstream a verb fetches from: --upstream, then the environment, then a
    [mirrors] entry matching the manifest's URL, then the manifest's URL."""
    if cli_upstream:
        return Choice(cli_upstream, "--upstream", cwd)
    env = os.environ.get(ENV_UPSTREAM, "").strip()
    if env:
        return Choice(env, "env", None)
    if manifest_url is None:
        raise BadInput("no upstream given", HINT)
    mirror = map_url(manifest_url)
    if mirror is not None:
        return Choice(mirror, "config", config_path().parent)
    return Choice(manifest_url, "manifest", manifest_root)


def map_url(url: str) -> str | None:
    """The mirror [mirrors] gives for url (longest matching prefix), or None."""
    table = mirrors()
    want = _key(url)
    best = None
    for key, value in table.items():
        k = _key(key)
        if want == k or want.startswith(k + "/"):
            if best is None or len(k) > len(_key(best[0])):
                best = (key, value + want[len(k):])
    return best[1] if best else None
