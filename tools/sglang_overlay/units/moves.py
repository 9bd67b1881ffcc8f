"""Patch units whose files moved or split upstream.

When a file a patch edits is gone from the target tree, the change follows
the file, the way git's merge-ort follows renames:

  1. rename detection: the blob the patch was made on (its index line) is
     compared with every file of the target tree (``git diff -M``, git's
     default 50% threshold). When every gone file has a rename, the patch is
     applied at the new paths: plainly, or by a 3-way merge from the base
     blobs onto the renamed files (``git apply --3way`` after remapping).
  2. hunk relocation, where the file was split or no rename was found: a
     hunk that merges on its own into the renamed file stays there; any other
     goes to the one other file that defines the function or class its header
     names (or a top-level def/class in its context), in the nearest
     directory above the old file that has one, where its context matches
     (``git apply -C1``: at least one line on each side) with the change
     landing inside that definition. Several candidates or none is a conflict
     that names them.

``whereabouts`` says where a gone file's content most likely went, with git's
similarity index, for the guidance of a conflict.
"""

from __future__ import annotations

import ast
import itertools
import posixpath
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .. import patchfile
from ..gitutil import Git
from . import ALREADY_UPSTREAM, APPLIED_MOVED, CONFLICT, Context, Outcome

DEF_NAME = re.compile(r"^\s*(?:async\s+def|def|class)\s+([A-Za-z_]\w*)")
RENAME_THRESHOLD = "50%"  # git's default for -M
LIKELY_THRESHOLD = "20%"  # a rename worth naming in guidance


@dataclass
class Candidate:
    """A file of the target tree where a gone file's content may have gone."""

    path: str
    similarity: int  # git's similarity index with the gone file's base, in %
    defines: list[str] = field(default_factory=list)
    renamed: bool = False  # git's rename detection picks it

    def text(self) -> str:
        what = f"{self.similarity}% similar"
        if self.renamed:
            what = "renamed, " + what
        if self.defines:
            what += "; defines " + ", ".join(self.defines)
        return f"{self.path} ({what})"


# --- finding where things went ------------------------------------------------


def gone_files(stage_has, parsed: patchfile.Patch) -> list[patchfile.FileDiff]:
    """The modified files of a patch that the target tree no longer has."""
    return [f for f in parsed.files
            if f.old_path and f.new_path and f.hunks and not stage_has(f.old_path)]


def hunk_names(hunk: patchfile.Hunk) -> list[str]:
    """The def/class the hunk header names, then the top-level ones in its
    context and removed lines (git's header names the definition before the
    hunk, which is not the edited one when the hunk starts above a def)."""
    names = []
    top_level = [line for line in hunk.old_side() if not line[:1].isspace()]
    for line in [hunk.function, *top_level]:
        m = DEF_NAME.match(line)
        if m and m.group(1) not in names:
            names.append(m.group(1))
    return names


def _listing(paths, limit: int = 4) -> str:
    paths = sorted(paths)
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return ", ".join(paths[:limit]) + more


_INDEXES = itertools.count()


def _scratch(git: Git, tmp: str, entries: dict[str, tuple[str, str]]) -> Git:
    """A git with a temporary index holding entries {path: (mode, blob)}."""
    index = str(Path(tmp) / f"index-{next(_INDEXES)}")
    g = git.with_env(GIT_INDEX_FILE=index)
    g.run("read-tree", "--empty")
    for path, (mode, blob) in entries.items():
        g.run("update-index", "--add", "--cacheinfo", f"{mode},{blob},{path}")
    return g


def renames(git: Git, tree: str, bases: dict[str, str], threshold: str = RENAME_THRESHOLD,
            tmp: str | None = None) -> dict[str, tuple[str, int]]:
    """{old path: (new path, similarity %)} for base blobs renamed in tree."""
    bases = {p: b for p, b in bases.items() if b and set(b) != {"0"} and git.has_object(b)}
    if not bases:
        return {}
    with tempfile.TemporaryDirectory(dir=tmp) as scratch:
        g = _scratch(git, scratch, {p: ("100644", b) for p, b in bases.items()})
        old_tree = g.run("write-tree")
    out = git.run("diff-tree", "-r", "-z", f"-M{threshold}", "--diff-filter=R",
                  old_tree, tree)
    found = {old: (new, score) for _kind, score, old, new in _pairs(out)}
    if any(score == 100 for _new, score in found.values()):
        # an exact copy at several paths (an empty __init__.py, say) says
        # nothing about where the file went: no rename then
        listing = git.run("ls-tree", "-r", tree)
        for old, (_new, score) in list(found.items()):
            if score == 100 and listing.count(f" {bases[old]}\t") > 1:
                del found[old]
    return found


def _pairs(raw: str) -> list[tuple[str, int, str, str]]:
    """(R or C, score, source, destination) of `git diff-tree -z` output."""
    parts = raw.split("\0")
    out = []
    i = 0
    while i < len(parts):
        status = parts[i].split()[-1] if parts[i].startswith(":") else ""
        if status[:1] in ("R", "C") and i + 2 < len(parts):
            out.append((status[0], int(status[1:] or 0), parts[i + 1], parts[i + 2]))
            i += 3
        else:
            i += 2 if status else 1
    return out


def similarities(git: Git, old_path: str, base: str, tree: str, paths: list[str],
                 tmp: str | None = None) -> dict[str, int]:
    """git's similarity index (%) between base and each of paths in tree."""
    if not paths or not base or not git.has_object(base):
        return {p: 0 for p in paths}
    entries = {}
    for p in paths:
        line = git.run("ls-tree", tree, "--", p)
        if line:
            mode, _type, blob = line.split("\t", 1)[0].split()
            entries[p] = (mode, blob)
    # the base in both trees, the candidates added: copy detection scores
    # each candidate against the base
    with tempfile.TemporaryDirectory(dir=tmp) as scratch:
        g = _scratch(git, scratch, {old_path: ("100644", base)})
        a = g.run("write-tree")
        for p, e in entries.items():
            g.run("update-index", "--add", "--cacheinfo", f"{e[0]},{e[1]},{p}")
        b = g.run("write-tree")
    out = git.run("diff-tree", "-r", "-z", "-C1%", "--find-copies-harder", a, b)
    scores = {p: 0 for p in paths}
    for _kind, score, _src, dst in _pairs(out):
        if dst in scores:
            scores[dst] = score
    return scores


def _levels(old_path: str) -> list[str]:
    """Directories to search, nearest first, up to the path's top directory."""
    levels = []
    d = posixpath.dirname(old_path)
    while d:
        levels.append(d)
        d = posixpath.dirname(d)
    return levels or [""]


@dataclass(frozen=True)
class Definition:
    qualname: str  # Class.method
    name: str
    start: int  # first line, decorators included (1-based)
    end: int  # last line
    end_blank: int  # last line, with the blank lines after it


_DEFINITIONS: dict[str, list[Definition]] = {}  # by blob: blobs never change


def definitions(git: Git, blob: str) -> list[Definition]:
    """Every def and class of a Python blob (none when it does not parse)."""
    if blob not in _DEFINITIONS:
        source = git.object_bytes(blob)
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            tree = None
        lines = source.splitlines()
        found: list[Definition] = []

        def visit(node, prefix):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    start = min([child.lineno] + [d.lineno for d in child.decorator_list])
                    end = blank = child.end_lineno or child.lineno
                    while blank < len(lines) and not lines[blank].strip():
                        blank += 1
                    found.append(Definition(prefix + child.name, child.name, start, end, blank))
                    visit(child, prefix + child.name + ".")
                elif not isinstance(child, (ast.expr, ast.Import, ast.ImportFrom)):
                    visit(child, prefix)

        if tree is not None:
            visit(tree, "")
        _DEFINITIONS[blob] = found
    return _DEFINITIONS[blob]


def nearest_definers(git: Git, tree: str, names: list[str],
                     old_path: str) -> tuple[str, dict[str, list[str]]]:
    """(directory, {path: names it defines}) at the nearest directory above
    old_path (up to its top directory) with a .py file defining any of names."""
    levels = _levels(old_path)
    for directory in levels:
        found = definers(git, tree, names, directory)
        if found:
            return directory, found
    return levels[-1], {}


def definers(git: Git, tree: str, names: list[str], directory: str) -> dict[str, list[str]]:
    """{path: names it defines} for the .py files under directory in tree."""
    if not names:
        return {}
    pattern = (r"^[[:space:]]*(async[[:space:]]+def|def|class)[[:space:]]+(" +
               "|".join(names) + r")([^A-Za-z0-9_]|$)")
    spec = f"{directory}/*.py" if directory else "*.py"
    r = git.result("grep", "-l", "-I", "-E", "-e", pattern, tree, "--", spec)
    found = {}
    for line in r.out.splitlines():
        path = line.split(":", 1)[1] if ":" in line else line
        blob = git.run("rev-parse", f"{tree}:{path}")
        defined = {d.name for d in definitions(git, blob)} & set(names)
        if defined:
            found[path] = sorted(defined, key=names.index)
    return found


ZERO_CONTEXT_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+\d+(?:,\d+)? @@", re.M)


def changed_ranges(git: Git, before: str, after: str) -> list[tuple[int, int]]:
    """0-based [i1, i2) line ranges of blob before that the change to blob
    after touches (i1 == i2: lines inserted before line i1)."""
    out = git.result("diff", "-U0", "--no-color", "--no-ext-diff", before, after).out
    ranges = []
    for m in ZERO_CONTEXT_HUNK.finditer(out):
        start, length = int(m.group(1)), int(m.group(2) or 1)
        ranges.append((start - 1, start - 1 + length) if length else (start, start))
    return ranges


def enclosing(git: Git, before: str, after: str) -> list[str]:
    """The innermost definitions (qualified: Class.method) the change touches."""
    defs = definitions(git, before)
    out = []
    for i1, i2 in changed_ranges(git, before, after):
        inside = [(d.end - d.start, d.qualname) for d in defs
                  if d.start <= i1 + 1 and i2 <= d.end]
        if inside:
            name = min(inside)[1]
            if name not in out:
                out.append(name)
    return out


def lands_inside(git: Git, before: str, after: str, names: list[str]) -> bool:
    """Whether every line the change touches lies inside a definition named in names."""
    spans = [(d.start, d.end_blank) for d in definitions(git, before) if d.name in names]
    ranges = changed_ranges(git, before, after)
    return bool(ranges) and all(any(s - 1 <= i1 and i2 <= e for s, e in spans)
                                for i1, i2 in ranges)


# --- remapping patches -------------------------------------------------------


def section(fd: patchfile.FileDiff, path: str, hunks: list[patchfile.Hunk] | None = None,
            keep_index: bool = True) -> bytes:
    """fd's diff section with its paths set to path (and only hunks, if given)."""
    out = b""
    for line in fd.preamble.splitlines(keepends=True):
        if line.startswith(patchfile.DIFF_START):
            line = f"diff --git a/{path} b/{path}\n".encode()
        elif line.startswith(b"--- "):
            line = f"--- a/{path}\n".encode()
        elif line.startswith(b"+++ "):
            line = f"+++ b/{path}\n".encode()
        elif line.startswith(b"index ") and not keep_index:
            continue
        out += line
    return out + b"".join(h.lines for h in (fd.hunks if hunks is None else hunks))


class Placer:
    """Tries hunks on single blobs of the target tree, on scratch indexes."""

    def __init__(self, git: Git, tree: str, tmp: str):
        self.git, self.tree, self.tmp = git, tree, tmp

    def entry(self, path: str) -> tuple[str, str] | None:
        line = self.git.run("ls-tree", self.tree, "--", path)
        if not line:
            return None
        mode, _type, blob = line.split("\t", 1)[0].split()
        return mode, blob

    def try_hunk(self, fd, hunk, path: str, mode: str, blob: str, *flags: str) -> str | None:
        """The blob that hunk makes of blob at path, or None if it does not
        apply (with --3way: does not merge cleanly from the patch's base blob)."""
        g = _scratch(self.git, self.tmp, {path: (mode, blob)})
        three_way = "--3way" in flags
        if not g.result("apply", "--cached", *flags, "-",
                        stdin=section(fd, path, [hunk], keep_index=three_way)).ok:
            return None
        line = g.run("ls-files", "--stage", "--", path)
        if not line or len(line.splitlines()) != 1:
            return None  # unmerged
        return line.split()[1]

    def landed(self, before: str, after: str) -> list[str]:
        """The definitions a change from blob before to blob after touches."""
        return enclosing(self.git, before, after)


@dataclass
class Placement:
    fd: patchfile.FileDiff
    hunk: patchfile.Hunk
    path: str
    names: list[str]  # the definitions the change landed in
    fuzzy: bool  # placed by definition with reduced context (-C1)
    three_way: bool = False  # on the renamed file, merged from the base blob


def place_hunks(placer: Placer, fd: patchfile.FileDiff, renamed: str | None,
                three_way: bool) -> tuple[list[Placement], list[str]]:
    """Where each hunk of a gone file goes; (placements, problems).

    A hunk stays in the renamed file when it applies there (by a 3-way merge
    of that hunk alone, when the base blob is at hand). Otherwise it goes to
    the one other file that defines what it names, with matching context: the
    renamed file is not a candidate then, since it did not take the hunk.
    """
    placements, problems = [], []
    for hunk in fd.hunks:
        names = hunk_names(hunk)
        if renamed:
            e = placer.entry(renamed)
            flags = ["--3way"] if three_way else []
            new = placer.try_hunk(fd, hunk, renamed, *e, *flags) if e else None
            if new:
                placements.append(Placement(fd, hunk, renamed,
                                            placer.landed(e[1], new), False, three_way))
                continue
        where = f"{fd.old_path} {hunk.header}"
        if not names:
            problems.append(f"{where} (it names no function or class to look for)")
            continue
        directory, defined = nearest_definers(placer.git, placer.tree, names, fd.old_path)
        matching: dict[str, list[str]] = {}
        for path in defined:
            if path == renamed:
                continue
            mode, blob = placer.entry(path)
            new = placer.try_hunk(fd, hunk, path, mode, blob, "-C1")
            if new and lands_inside(placer.git, blob, new, names):
                matching[path] = placer.landed(blob, new)
        if len(matching) == 1:
            path, landed = next(iter(matching.items()))
            placements.append(Placement(fd, hunk, path, landed, True))
        elif matching:
            landed = list(dict.fromkeys(n for ns in matching.values() for n in ns))
            problems.append(f"{where} ({' or '.join(landed or names)}: defined with matching "
                            f"context in several files: {_listing(matching, 8)})")
        elif defined:
            found = [n for n in names if any(n in v for v in defined.values())]
            problems.append(f"{where} ({' or '.join(found)}: defined in {_listing(defined)}, "
                            "but the hunk's context does not match there)")
        else:
            problems.append(f"{where} (no file under {directory or '.'}/ defines "
                            f"{' or '.join(names)})")
    return placements, problems


def _describe(moves: list[tuple[str, str, list[str]]]) -> str:
    """'old -> new' per moved file; per hunk (with its names) where it split."""
    by_old: dict[str, dict[str, list[str]]] = {}
    for old, new, names in moves:
        by_old.setdefault(old, {}).setdefault(new, [])
        for n in names:
            if n not in by_old[old][new]:
                by_old[old][new].append(n)
    parts = []
    for old, news in by_old.items():
        if len(news) == 1:
            parts.append(f"{old} -> {next(iter(news))}")
        else:
            parts.append(f"{old} -> " + ", ".join(
                f"{new} ({', '.join(ns)})" if ns else new for new, ns in news.items()))
    return "; ".join(parts)


# --- applying -------------------------------------------------------------------


def apply(ctx: Context, parsed: patchfile.Patch, gone: list[patchfile.FileDiff]) -> Outcome:
    """Apply a patch some of whose files are gone from the stage."""
    stage = ctx.stage
    tree = stage.tree()
    present = [f for f in parsed.files if f not in gone]
    have_base = ctx.ensure_patch_base()
    with tempfile.TemporaryDirectory(prefix="moves-", dir=stage.dir) as tmp:
        found = renames(stage.git, tree, {f.old_path: f.old_blob for f in gone}, tmp=tmp) \
            if have_base else {}
        renamed = {old: new for old, (new, _score) in found.items()}
        whole = [(old, new, []) for old, new in renamed.items()]

        # 1. every gone file was renamed: the patch at its new paths
        if all(f.old_path in renamed for f in gone):
            new_paths = [renamed.get(f.path, f.path) for f in parsed.files]
            remapped = b"".join(section(f, renamed[f.old_path]) if f in gone else
                                f.preamble + b"".join(h.lines for h in f.hunks)
                                for f in parsed.files)
            if stage.apply(remapped).ok:
                return Outcome(APPLIED_MOVED, new_paths, _describe(whole), stale=True)
            if stage.apply(remapped, "--reverse", "--check").ok:
                return Outcome(ALREADY_UPSTREAM, new_paths,
                               f"the patch reverse-applies at {_describe(whole)}")
            if stage.apply(remapped, "--3way").ok:
                return Outcome(APPLIED_MOVED, new_paths,
                               f"{_describe(whole)}; 3-way merge", stale=True)
            stage.reset()

        # 2. hunk by hunk, where the file was split or not renamed
        problems: list[str] = []
        if present:
            sub = b"".join(f.preamble + b"".join(h.lines for h in f.hunks) for f in present)
            if not (stage.apply(sub).ok or (have_base and stage.apply(sub, "--3way").ok)):
                stage.reset()
                problems.append("does not apply: " + ", ".join(f.path for f in present))
        placer = Placer(stage.git, tree, tmp)
        placements: list[Placement] = []
        for f in gone:
            placed, trouble = place_hunks(placer, f, renamed.get(f.old_path), have_base)
            placements += placed
            problems += trouble
        if not problems:
            problems += _apply_placements(stage, placer, placements)
        if problems:
            stage.reset()
            reason = ", ".join(f.old_path for f in gone) + \
                f" {'is' if len(gone) == 1 else 'are'} gone on {ctx.ref}"
            if whole:
                reason += f" (renamed: {_describe(whole)})"
            elif not have_base:
                reason += " (no rename detection: the blobs the patch was made on are " \
                          "not available)"
            return Outcome(CONFLICT, [f.old_path for f in gone] + [f.path for f in present],
                           reason, problems)
        moves = [(p.fd.old_path, p.path, p.names) for p in placements]
        files = [f.path for f in present] + [p.path for p in placements]
        return Outcome(APPLIED_MOVED, list(dict.fromkeys(files)), _describe(moves), stale=True)


def _apply_placements(stage, placer: Placer, placements: list[Placement]) -> list[str]:
    """Apply placed hunks in order, file by file, onto the stage; problems."""
    current: dict[str, tuple[str, str]] = {}
    problems = []
    for p in placements:
        mode, blob = current.get(p.path) or stage.entry(p.path) or (None, None)
        if blob is None:
            problems.append(f"{p.fd.old_path} {p.hunk.header} ({p.path} is not in the tree)")
            continue
        flags = ["-C1"] if p.fuzzy else ["--3way"] if p.three_way else []
        new = placer.try_hunk(p.fd, p.hunk, p.path, mode, blob, *flags)
        if new is None:
            problems.append(f"{p.fd.old_path} {p.hunk.header} (does not apply on {p.path} "
                            "after the hunks before it)")
            continue
        current[p.path] = (mode, new)
    if not problems:
        for path, (mode, blob) in current.items():
            stage.git.run("update-index", "--cacheinfo", f"{mode},{blob},{path}")
    return problems


# --- guidance -------------------------------------------------------------------


def whereabouts(git: Git, tree: str, fd: patchfile.FileDiff, limit: int = 4) -> list[Candidate]:
    """Where the content of fd's gone file most likely went in tree, best first:
    its rename (at a lower threshold than applying uses) and the files that
    define the functions and classes its hunks name, with git's similarity."""
    names: list[str] = []
    for h in fd.hunks:
        names += [n for n in hunk_names(h) if n not in names]
    _directory, defined = nearest_definers(git, tree, names, fd.old_path)
    with tempfile.TemporaryDirectory(prefix="overlay-moves-") as tmp:
        found = renames(git, tree, {fd.old_path: fd.old_blob}, LIKELY_THRESHOLD, tmp=tmp)
        paths = list(dict.fromkeys([*(new for new, _s in found.values()), *defined]))
        scores = similarities(git, fd.old_path, fd.old_blob or "", tree, paths, tmp=tmp)
    renamed = {new for new, _s in found.values()}
    cands = [Candidate(p, scores.get(p, 0), defined.get(p, []), p in renamed) for p in paths]
    cands.sort(key=lambda c: (not c.renamed, -c.similarity, c.path))
    return cands[:limit]
