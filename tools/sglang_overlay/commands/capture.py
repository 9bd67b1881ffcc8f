"""`overlay capture --from FORK`: turn an existing fork into overlay units.

The base is the merge-base of the fork with the upstream ref (--base, else
the pinned ref). Against it:
  * every new file goes under overlay/ as a files unit;
  * every modified file becomes a patch unit with a header;
  * additions to multimodal_model_archs or the MLA branch of ModelConfig
    become edit units when the edit reproduces the fork's file exactly
    (otherwise a patch), and new model modules are declared as [[model]];
  * a new config class (a new file under python/sglang/srt/configs/) that the
    fork exports from configs/__init__.py and adds to _CONFIG_REGISTRY becomes
    a register-config edit unit, again only when the edit reproduces both
    files exactly;
  * deleted files, binary and mode-only changes are captured too and
    reported, never dropped silently.
`overlay apply --sglang-ref <base>` then rebuilds the fork's tree exactly.
"""

from __future__ import annotations

from pathlib import PurePosixPath

import click

from .. import export, journal, report
from ..durable import crash_point
from ..errors import OK, BadInput
from ..gitutil import Git
from ..lint.facts import extract
from ..manifest import MANIFEST_NAME, with_tables
from ..units import edit as edits
from ..upstream import Resolved
from . import open_overlay

MODELS_DIR = "python/sglang/srt/models/"
CAPTURE_REF = "refs/overlay-capture/fork"


def run(opts, source, base, upstream, offline, as_json) -> int:
    manifest, session = open_overlay(opts, upstream, offline, writes="capture")
    base_ref = base or manifest.ref
    if not base_ref:
        raise BadInput("no --base given and the manifest pins no ref",
                       "pass --base REF (the upstream release the fork started from)")
    base = session.resolve(base_ref)  # before the workspace: an unknown ref leaves nothing
    fork, label, merge_base = _fork_and_merge_base(session, source, base, base_ref, opts)
    g = session.workspace.git
    changes = export.changes(g, merge_base, fork)
    if not changes:
        raise BadInput(f"the fork {label} has no changes against {base_ref} ({merge_base[:12]})",
                       "pass --from the fork's checkout or branch")
    claimed = {p for u in manifest.active_units if u.kind == "files"
               for p in manifest.unit_files(u)}
    if any(ch.path in claimed for ch in changes) and _already_captured(
            session, base_ref, merge_base, fork):
        # a capture that was killed after writing (or simply run twice): the
        # overlay already rebuilds the fork exactly, so nothing is added again
        message = (f"the overlay already rebuilds the fork {label} ({fork[:12]}) on "
                   f"{merge_base[:12]}: nothing to capture")
        if as_json:
            report.emit_json({"fork": label, "fork_commit": fork, "base": base_ref,
                              "merge_base": merge_base, "units": [], "models": [],
                              "notes": [message], "written": [], "exit_code": OK})
        else:
            click.echo(message)
        return OK

    tx = journal.Transaction(manifest.root)
    cap = _Capture(g, tx, label, merge_base, fork, {u.name for u in manifest.units})
    config_unit = _config_registration(g, changes, merge_base, label, cap.taken)
    if config_unit:
        changes = [ch for ch in changes if ch.path not in config_unit[2]]
    cap.read_fork([ch.path for ch in changes])
    for ch in changes:
        if ch.path in claimed or any(u.kind == "patch" and ch.path in _patch_paths(manifest, u)
                                     for u in manifest.active_units):
            raise BadInput(f"the overlay already has a unit for {ch.path}",
                           "capture into a new overlay (`overlay init`), or remove that unit")
        cap.change(ch)
    if config_unit:
        cap.add_unit(config_unit[0], config_unit[1])
    ordered = cap.ordered()
    declared = {m.architecture for m in manifest.models}
    text = with_tables((manifest.root / MANIFEST_NAME).read_text(), {
        "unit": [{**fields, "forwarded": "no"} for fields, _ in ordered],
        "model": [fields for arch, fields in cap.new_models.items() if arch not in declared]})
    tx.write(MANIFEST_NAME, text.encode())
    crash_point("capture-read")
    written = tx.commit()
    rows = [row for _, row in ordered]
    if as_json:
        report.emit_json({"fork": label, "fork_commit": fork, "base": base_ref,
                          "merge_base": merge_base,
                          "units": [{"name": r[0], "kind": r[1], "files": [r[2]], "note": r[3]}
                                    for r in rows],
                          "models": list(cap.new_models), "notes": cap.notes,
                          "written": written, "exit_code": OK})
        return OK
    click.echo(report.table(("UNIT", "KIND", "FILES", "NOTE"), rows))
    for n in cap.notes:
        click.echo(f"note: {n}")
    click.echo("")
    click.echo(f"captured {report.plural(len(rows), 'unit')} from {label} ({fork[:12]}) against "
               f"{base_ref} (merge-base {merge_base[:12]})")
    if merge_base != base.commit:
        click.echo(f"the fork started from {merge_base[:12]}, not {base_ref}: rebuild it with "
                   f"`overlay apply --sglang-ref {merge_base}`")
    else:
        click.echo(f"rebuild it with `overlay apply --sglang-ref {base_ref}`")
    return OK


def _fork_and_merge_base(session, source: str, base, base_ref: str, opts):
    """(commit, label, merge-base) of the fork, the merge-base's objects at hand;
    bad input when the fork and base_ref share no history."""
    ws = session.workspace
    ws.ensure()
    fork, label, merge_base = _fork_commit(session, source, base, opts)
    if merge_base is None:
        raise BadInput(f"the fork {label} and {base_ref} share no history",
                       "pass --base with the upstream release the fork started from")
    if not session.mirror.ensure_commit(merge_base, f"fetching {merge_base[:12]}") \
            and not ws.git.has_object(merge_base):
        raise BadInput(f"the merge-base {merge_base[:12]} of the fork and {base_ref} is not "
                       "in the upstream", "pass --base with the release the fork started from")
    return fork, label, merge_base


class _Capture:
    """The units (and models) one capture writes, built change by change; the
    overlay's files go into the transaction tx."""

    def __init__(self, g, tx, label: str, merge_base: str, fork: str, taken: set[str]):
        self.g, self.tx, self.label = g, tx, label
        self.merge_base, self.fork = merge_base, fork
        self.taken = taken  # unit names in use
        self.notes: list[str] = []
        self.new_models: dict[str, dict] = {}
        # files units first, then patches, then edits (the repository's own order)
        self.buckets: dict[str, list] = {"files": [], "patch": [], "edit": []}

    def read_fork(self, paths: list[str]) -> None:
        """What every change needs from git, each read once for the whole fork."""
        g, base, fork = self.g, self.merge_base, self.fork
        self.history = _history(g, base, fork)
        self.binaries = _binaries(g, base, fork)
        self.diffs = _diffs(g, base, fork, paths)

    def add_unit(self, fields: dict, row: list) -> None:
        self.taken.add(fields["name"])
        self.buckets[fields["kind"]].append((fields, row))

    def ordered(self) -> list[tuple[dict, list]]:
        return [fr for kind in ("files", "patch", "edit") for fr in self.buckets[kind]]

    def change(self, ch) -> None:
        """The unit(s) that carry one changed path."""
        stem = PurePosixPath(ch.path).stem
        binary = ch.status != "D" and ch.path in self.binaries
        if ch.status == "A" and ch.new_mode in ("100644", "100755"):
            name = export.slug(f"{stem}-model" if ch.path.startswith(MODELS_DIR) else stem,
                               self.taken)
            self.whole_file(ch, name, f"Add {ch.path} (captured from {self.label})", "new file")
            if ch.path.startswith(MODELS_DIR) and ch.path.count("/") == 4:
                for arch in _entry_classes(self.g.object_bytes(ch.new_blob), ch.path):
                    self.new_models.setdefault(arch, {"architecture": arch})["unit"] = name
            return
        if ch.status == "M" and binary and ch.new_mode == ch.old_mode:
            self.whole_file(ch, export.slug(stem, self.taken),
                            f"Replace {ch.path} (binary; captured from {self.label})",
                            "binary change: whole file")
            self.notes.append(f"{ch.path}: binary change, captured as a whole-file replacement "
                              f"in overlay/{ch.path}")
            return
        if ch.path == edits.MODEL_CONFIG and ch.status == "M":
            captured = _config_edits(self.g, ch, self.label, self.taken, self.new_models)
            if captured:
                for fields, row in captured:
                    self.add_unit(fields, row)
                return
        # everything else is a patch: modifications, deletions, mode and type changes
        self.patch(ch, stem, binary)

    def whole_file(self, ch, name: str, description: str, note: str) -> None:
        """A files unit that carries the fork's copy of ch.path."""
        self.tx.write(f"overlay/{ch.path}", self.g.object_bytes(ch.new_blob), ch.permissions)
        self.add_unit({"name": name, "kind": "files", "description": description,
                       "files": [ch.path]}, [name, "files", f"overlay/{ch.path}", note])

    def patch(self, ch, stem: str, binary: bool) -> None:
        """A patch unit for ch, its header naming the fork's commits that touched it."""
        what = {"D": "delete", "T": "change the type of"}.get(ch.status, "change")
        if ch.mode_only:
            what = "change the mode of"
            self.notes.append(f"{ch.path}: mode-only change ({ch.old_mode} -> {ch.new_mode}), "
                              "captured as a patch")
        elif ch.status == "D":
            self.notes.append(f"{ch.path}: the fork deletes this file; captured as a patch "
                              "that deletes it (check that you meant it)")
        elif binary:
            self.notes.append(f"{ch.path}: binary change, captured as a binary patch")
        elif ch.status == "T":
            self.notes.append(f"{ch.path}: type change ({ch.old_mode} -> {ch.new_mode}), "
                              "captured as a patch")
        name = export.slug(("delete-" if ch.status == "D" else "") + stem, self.taken)
        subjects, author, date = self.history.get(ch.path, ("", "", ""))
        body = (f"What: {what} {ch.path}, as the fork {self.label} does.\n\n"
                "Why: (describe why the overlay carries this change)\n\n"
                + ("Fork commits:\n" + "\n".join(f"  {s}" for s in subjects.splitlines()[:10])
                   + "\n\n" if subjects else "")
                + "Forwarded: no")
        patch = f"patches/{name}.patch"
        header = export.new_header(f"{stem}: {what} {ch.path}", body, author or None,
                                   date or "Thu, 1 Jan 1970 00:00:00 +0000")
        diff = self.diffs.get(ch.path) or export.diff(self.g, self.merge_base, self.fork,
                                                       [ch.path])
        self.tx.write(patch, header + diff)
        self.add_unit({"name": name, "kind": "patch",
                       "description": f"{what.capitalize()} {ch.path} (captured from "
                                      f"{self.label})",
                       "patch": patch},
                      [name, "patch", patch, {"D": "deleted file"}.get(ch.status, what)])


def _already_captured(session, base_ref: str, merge_base: str, fork: str) -> bool:
    build = session.build(Resolved(base_ref, merge_base, None))
    return build.ok and build.tree == session.workspace.git.tree_of(fork)


def _fork_commit(session, source: str, base, opts) -> tuple[str, str, str | None]:
    """(commit, label, merge-base with base) of the fork; its objects are
    fetched into the workspace."""
    g = session.workspace.git
    path = opts.path(source)
    if path.is_dir():
        fg = Git(path)
        if not fg.is_work_tree():
            raise BadInput(f"{path} is not a git checkout",
                           "pass --from the checkout of your fork, or a revision")
        if fg.has_changes():
            raise BadInput(f"{path} has uncommitted changes",
                           "commit them in the fork first; capture reads commits")
        fork = g.fetch_head_of(path.resolve(), CAPTURE_REF)
        # the fork has the history: its merge-base with the release, found there
        mb = fg.merge_base("HEAD", base.commit) if fg.has_object(base.commit) else None
        if mb is not None:
            return fork, str(path), mb
        return fork, str(path), g.merge_base(fork, base.commit)
    # a revision in the upstream repository (a fork's branch or tag pushed there)
    resolved = session.resolve(source)
    return resolved.commit, source, session.mirror.merge_base(resolved, base)


def _patch_paths(manifest, unit) -> list[str]:
    from .. import patchfile

    return patchfile.parse((manifest.root / unit.patch).read_bytes()).paths


def _history(g, base: str, fork: str) -> dict[str, tuple[str, str, str]]:
    """path -> (subjects of the fork's commits touching it, newest first; the
    newest one's author and date), from one `git log` for the whole fork."""
    return {p: ("\n".join(s), a, d) for p, (s, a, d) in g.path_history(base, fork).items()}


def _binaries(g, base: str, fork: str) -> set[str]:
    """Paths git sees as binary between base and fork (one --numstat)."""
    return g.binary_paths(base, fork)


def _diffs(g, base: str, fork: str, paths: list[str]) -> dict[str, bytes]:
    """Each path's diff, cut from one `git diff` in git's own path order; empty
    when the pieces do not line up with the paths (each is then diffed alone)."""
    whole = export.diff(g, base, fork, paths)
    pieces = whole.split(b"\ndiff --git ")
    pieces = [pieces[0]] + [b"diff --git " + p for p in pieces[1:]]
    pieces = [p if p.endswith(b"\n") else p + b"\n" for p in pieces]
    if not whole or len(pieces) != len(paths):
        return {}
    out = {}
    for path, piece in zip(paths, pieces):
        if not piece.startswith(b"diff --git a/" + path.encode("utf-8", "surrogateescape")):
            return {}
        out[path] = piece
    return out


def _entry_classes(source: bytes, path: str) -> list[str]:
    module = path[len("python/"):-3].replace("/", ".")
    facts = extract(source, module, False)
    return [e for e in facts.get("entry") or [] if e in facts.get("classes", {})]


def _config_edits(g, ch, label, taken, new_models):
    """Edit units for model_config.py when the edits reproduce the fork's file."""
    before = g.object_bytes(ch.old_blob).decode()
    after = g.object_bytes(ch.new_blob).decode()
    mm_before = edits.multimodal_archs(before) or set()
    mm_after = edits.multimodal_archs(after) or set()
    mm_new = [a for a in _in_order(after, mm_after - mm_before)]
    mla_new = [a for a in _in_order(after, edits.mla_archs(after) - edits.mla_archs(before))]
    if not (mm_new or mla_new):
        return None
    try:
        text = edits.register_multimodal(before, mm_new).text if mm_new else before
        text = edits.register_mla(text, mla_new).text if mla_new else text
    except edits.MissingAnchor:
        return None
    if text != after:
        return None  # the fork did more, or placed them elsewhere: keep a patch
    out = []
    for op, archs, flag in (("register-multimodal", mm_new, "multimodal"),
                            ("register-mla", mla_new, "mla")):
        if not archs:
            continue
        for a in archs:
            new_models.setdefault(a, {"architecture": a})[flag] = True
        name = export.slug(op + "-archs", taken)
        taken.add(name)
        out.append(({"name": name, "kind": "edit",
                     "description": f"{op}: {', '.join(archs)} (captured from {label})",
                     "edit": op, "models": archs},
                    [name, "edit", edits.MODEL_CONFIG, f"{op} {', '.join(archs)}"]))
    return out


def _config_registration(g, changes, merge_base, label, taken):
    """(fields, row, consumed paths) of a register-config unit when the fork's
    changes to configs/__init__.py and the registry file are exactly what the
    edit makes for the config classes its new files define; else None."""
    new_classes: dict[str, str] = {}
    for ch in changes:
        if ch.status == "A" and ch.path.startswith(edits.CONFIGS_DIR) and ch.path.endswith(".py"):
            module = ch.path[len("python/"):-len(".py")].replace("/", ".")
            facts = extract(g.object_bytes(ch.new_blob), module, False)
            for name in facts.get("classes", {}):
                new_classes.setdefault(name, module)
    if not new_classes:
        return None
    registry = edits.find_registry(lambda p: g.file_at(merge_base, p))
    by_path = {ch.path: ch for ch in changes if ch.status == "M"}
    if registry is None or registry not in by_path or edits.CONFIGS_INIT not in by_path:
        return None
    before = g.object_bytes(by_path[registry].old_blob).decode()
    after = g.object_bytes(by_path[registry].new_blob).decode()
    try:
        added = edits.registered_configs(after)[0] - edits.registered_configs(before)[0]
        names = sorted((n for n in added if n in new_classes), key=after.find)
        if not names or set(added) - set(names):
            return None
        init = by_path[edits.CONFIGS_INIT]
        exported = edits.export_configs(g.object_bytes(init.old_blob).decode(),
                                        {n: new_classes[n] for n in names}).text
        registered = edits.register_configs(before, names).text
    except (edits.MissingAnchor, SyntaxError):
        return None
    if exported != g.object_bytes(init.new_blob).decode() or registered != after:
        return None  # the fork did more, or wrote it elsewhere: patches keep it exact
    name = export.slug("register-" + "-".join(n.lower() for n in names), taken)
    taken.add(name)
    fields = {"name": name, "kind": "edit",
              "description": f"register-config: {', '.join(names)} (captured from {label})",
              "edit": "register-config", "configs": names}
    row = [name, "edit", f"{edits.CONFIGS_INIT}, {registry}",
           f"register-config {', '.join(names)}"]
    return fields, row, {edits.CONFIGS_INIT, registry}


def _in_order(text: str, names: set[str]) -> list[str]:
    return sorted(names, key=lambda n: text.find(f'"{n}"'))
