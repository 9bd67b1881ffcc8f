"""Shared fixtures: a real SGLang upstream built from PyPI releases, caches,
and helpers to write overlays and run the CLI."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))  # this checkout's tool, not an installed one
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import local_upstream  # noqa: E402


@pytest.fixture(scope="session")
def upstream() -> Path:
    """Bare repo: v0.5.1 .. v0.5.6 (ten releases), v0.5.8, v0.5.10.post1 and the
    wheel-only v0.5.12, v0.5.18, v0.5.21 and v0.5.23, tagged, one history."""
    return local_upstream.build_upstream(local_upstream.DEFAULT_RELEASES)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One overlay cache for the session, so mirrors are fetched once."""
    return tmp_path_factory.mktemp("overlay-cache")


@pytest.fixture(scope="session")
def _empty_config_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("xdg-config")


@pytest.fixture(autouse=True)
def _no_user_upstream_setting(monkeypatch, _empty_config_home):
    """The user's $SGLANG_OVERLAY_UPSTREAM and ~/.config/sglang-overlay/config.toml
    never reach a test: each test sets what it needs itself."""
    monkeypatch.delenv("SGLANG_OVERLAY_UPSTREAM", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(_empty_config_home))
