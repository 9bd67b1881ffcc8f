"""Real cases built from real SGLang releases (see scripts/local_upstream.py)."""

from __future__ import annotations

from pathlib import Path

from helpers import git, make_patch

EXPERT_LOCATION = "python/sglang/srt/eplb/expert_location.py"
# Upstream changed this file between v0.5.1 and v0.5.2 (a two-line change).
UPSTREAMED_FILE = "python/sglang/srt/mem_cache/allocator.py"


def upstreamed_patch(upstream: Path) -> bytes:
    """Upstream's own v0.5.1 -> v0.5.2 change to one file, as a patch made on v0.5.1.

    On v0.5.2 and later it reverse-applies: upstream already has it.
    """
    diff = git(upstream, "diff", "--full-index", "v0.5.1", "v0.5.2", "--", UPSTREAMED_FILE,
               raw=True)
    header = (
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
        "From: Overlay Tests <tests@example.invalid>\n"
        "Subject: [PATCH] allocator: the change upstream made in v0.5.2\n\n"
        "Carried by the overlay until upstream released it.\n---\n"
    )
    return (header + diff).encode()


def three_way_patch(upstream: Path, work: Path) -> bytes:
    """Adds `import os` to expert_location.py on v0.5.1.

    v0.5.3 inserted `from __future__ import annotations` right above the
    import block, so the patch's context no longer matches there: plain
    `git apply` fails and a 3-way merge succeeds.
    """
    return make_patch(upstream, "v0.5.1", work, {
        EXPERT_LOCATION: lambda t: t.replace("import logging\n", "import logging\nimport os\n", 1),
    }, "eplb: import os")


def conflict_patch(upstream: Path, work: Path) -> bytes:
    """Edits a line of expert_location.py that v0.5.3 rewrote itself."""
    old = "    num_local_physical_experts = num_physical_experts // num_gpus\n"

    def edit(t: str) -> str:
        assert old in t
        return t.replace(old, "    num_local_physical_experts = max(1, num_physical_experts // num_gpus)\n")

    return make_patch(upstream, "v0.5.1", work, {EXPERT_LOCATION: edit}, "eplb: clamp experts")
