"""The manifest, ``overlay.toml``: the one source of truth for the overlay.

It names the upstream, the pinned ref and the commit that ref resolved to (the
lock), the ordered units, and the models the overlay adds. Loading validates
everything a later step relies on, so a bad manifest fails before anything is
written, with one line naming the file, the key and the fix.

Example::

    [upstream]
    url = "https://github.com/sgl-project/sglang.git"
    ref = "v0.5.1"
    commit = "<40-hex sha the ref resolved to>"

    [[unit]]
    name = "opt-model"
    kind = "files"                 # files | patch | edit
    description = "Native OPT model"
    files = ["python/sglang/srt/models/opt.py"]   # under overlay/
    forwarded = "no"               # no | not-needed | URL of the PR (DEP-3)
    # applied-upstream = "v0.5.2"  # set when upstream has it; the unit retires

    [[model]]
    architecture = "OPTForCausalLM"
    unit = "opt-model"
    hf-id = "facebook/opt-125m"
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from . import durable, patchfile
from .errors import BadInput, ManifestError
from .paths import confine
from .versions import is_release, version_key

MANIFEST_NAME = "overlay.toml"
OVERLAY_DIR = "overlay"
DEFAULT_UPSTREAM = "https://github.com/sgl-project/sglang.git"
KINDS = ("files", "patch", "edit")
EDIT_OPS = ("register-multimodal", "register-mla", "register-config", "add-model-case")
CONFIGS_DIR = "python/sglang/srt/configs/"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
SHA_RE = re.compile(r"^[0-9a-f]{40}$")
IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

TOP_KEYS = {"upstream", "unit", "model"}
UPSTREAM_KEYS = {"url", "ref", "commit"}
UNIT_KEYS = {
    "name", "kind", "description", "forwarded", "applied-upstream", "requires",
    "files", "patch", "edit", "models", "configs", "variant",
}
VARIANT_KEYS = {"from", "until", "patch", "files"}
VARIANTS_DIR = "variants"  # files of a files unit's variants: variants/<unit>/<from>/
# ModelCase keyword arguments of upstream's generation suite, by manifest key.
CASE_KEYS = {
    "tp-size": ("tp_size", int),
    "prefill-tolerance": ("prefill_tolerance", float),
    "decode-tolerance": ("decode_tolerance", float),
    "rouge-l-tolerance": ("rouge_l_tolerance", float),
    "skip-long-prompt": ("skip_long_prompt", bool),
    "trust-remote-code": ("trust_remote_code", bool),
}
MODEL_KEYS = {
    "architecture", "unit", "hf-id", "multimodal", "mla", "family", "description", "config",
} | set(CASE_KEYS)


@dataclass(frozen=True)
class Variant:
    """A unit's content for a range of upstream releases: from <= release < until."""

    from_ref: str
    until: str | None = None
    patch: str | None = None  # patch units
    files: tuple[str, ...] = ()  # files units: upstream paths, under files_root

    @property
    def label(self) -> str:
        return f"{self.from_ref}..{self.until}" if self.until else f"{self.from_ref}+"



@dataclass(frozen=True)
class Unit:
    name: str
    kind: str
    description: str
    forwarded: str = "no"
    applied_upstream: str | None = None
    requires: tuple[str, ...] = ()
    files: tuple[str, ...] = ()  # files units: upstream paths, stored under overlay/
    patch: str | None = None  # patch units: path relative to the overlay root
    edit: str | None = None  # edit units: the operation
    models: tuple[str, ...] = ()  # edit units: the architectures it registers
    configs: tuple[str, ...] = ()  # register-config: the config classes it registers
    variants: tuple[Variant, ...] = ()  # content for ranges of releases, oldest first
    variant: str | None = None  # set on the unit variant_for chose: the variant's from
    files_root: str = OVERLAY_DIR  # where a files unit's files are stored

    @property
    def retired(self) -> bool:
        return self.applied_upstream is not None

    @property
    def summary(self) -> str:
        return self.description.strip().splitlines()[0] if self.description.strip() else ""


@dataclass(frozen=True)
class Model:
    architecture: str
    unit: str | None = None
    hf_id: str | None = None
    multimodal: bool = False
    mla: bool = False
    family: str | None = None
    description: str | None = None
    config: str | None = None  # its PretrainedConfig subclass (see register-config)
    case: tuple[tuple[str, Any], ...] = ()  # ModelCase keyword arguments, in order


@dataclass
class Manifest:
    root: Path
    upstream_url: str
    ref: str | None
    commit: str | None
    units: list[Unit]
    models: list[Model] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.root / MANIFEST_NAME

    @property
    def overlay_dir(self) -> Path:
        return self.root / OVERLAY_DIR

    @property
    def active_units(self) -> list[Unit]:
        return [u for u in self.units if not u.retired]

    def ref_or(self, given: str | None, option: str = "--sglang-ref") -> str:
        """The ref given on the command line, else the pinned one; bad input if neither."""
        ref = given or self.ref
        if not ref:
            raise BadInput(f"{self.path}: upstream.ref: missing and no {option} given",
                           f'pin a ref with ref = "v0.5.1" under [upstream], or pass {option}')
        return ref

    def unit(self, name: str) -> Unit:
        for u in self.units:
            if u.name == name:
                return u
        known = ", ".join(u.name for u in self.units) or "none"
        raise BadInput(f"{MANIFEST_NAME}: no unit named '{name}'",
                       f"use one of: {known}")

    def model(self, architecture: str) -> Model:
        for m in self.models:
            if m.architecture == architecture:
                return m
        raise KeyError(architecture)

    def variant_for(self, unit: Unit, release: str | None) -> Unit:
        """The unit as it applies on release: its newest variant covering it, else itself.

        release is an upstream release tag (see versions.is_release); None or a
        ref that is not one picks the unit's own content.
        """
        if not unit.variants or unit.variant is not None or not release \
                or not is_release(release):
            return unit
        chosen = chosen_variant(unit, release)
        return unit if chosen is None else with_variant(unit, chosen)

    def all_contents(self, unit: Unit) -> list[Unit]:
        """unit itself, then each of its variants as variant_for gives them."""
        return [unit] + [with_variant(unit, v) for v in unit.variants]

    def files_dir(self, unit: Unit) -> Path:
        """Where a files unit (or the variant variant_for chose) keeps its files."""
        return self.root / unit.files_root

    def models_of(self, unit: Unit) -> list[Model]:
        if unit.kind == "edit":
            return [self.model(a) for a in unit.models]
        return [m for m in self.models if m.unit == unit.name]

    def content_hash(self, upstream_commit: str) -> str:
        """sha256 of what the overlay applies, and the upstream commit it applies to.

        Only content counts: file bytes and modes, patch diffs (not their
        message headers), edit operations and the model fields they use. The
        lock, forwarding statuses and descriptions do not, so recording a PR
        URL does not make an install look stale.
        """
        import hashlib

        h = hashlib.sha256(f"upstream {upstream_commit}\n".encode())
        for u in (c for unit in self.active_units for c in self.all_contents(unit)):
            h.update(f"unit {u.name} {u.kind}\n".encode())
            if u.variant:
                h.update(f"variant {u.variant}\n".encode())
            if u.kind == "files":
                for rel in self.unit_files(u):
                    p = self.files_dir(u) / rel
                    link = p.is_symlink()
                    data = os.readlink(p).encode() if link else p.read_bytes()
                    mode = "link" if link else ("755" if os.access(p, os.X_OK) else "644")
                    h.update(f"file {rel} {mode} {len(data)}\n".encode() + data)
            elif u.kind == "patch":
                _header, diff = patchfile.split((self.root / u.patch).read_bytes())
                h.update(f"patch {len(diff)}\n".encode() + diff)
            else:
                for m in self.models_of(u):
                    h.update(f"edit {u.edit} {m.architecture} {m.hf_id} {m.case}\n".encode())
                for c in u.configs:
                    h.update(f"edit {u.edit} {c}\n".encode())
        return h.hexdigest()

    def overlay_configs(self) -> dict[str, tuple[str, str]]:
        """Class name -> (path, dotted module) of the classes the active files
        units define at module level under python/sglang/srt/configs/."""
        import ast

        out: dict[str, tuple[str, str]] = {}
        for u in self.active_units:
            if u.kind != "files":
                continue
            for rel in self.unit_files(u):
                p = self.overlay_dir / rel
                if not (rel.startswith(CONFIGS_DIR) and rel.endswith(".py") and p.is_file()):
                    continue
                try:
                    tree = ast.parse(p.read_bytes())
                except (SyntaxError, ValueError):
                    continue
                module = rel[len("python/"):-len(".py")].replace("/", ".")
                module = module.removesuffix(".__init__")
                for n in tree.body:
                    if isinstance(n, ast.ClassDef):
                        out.setdefault(n.name, (rel, module))
        return out

    def unit_files(self, unit: Unit) -> list[str]:
        """The upstream paths a files unit writes, directories expanded, sorted."""
        out: list[str] = []
        top = self.files_dir(unit)
        for rel in unit.files:
            src = top / rel
            if src.is_dir() and not src.is_symlink():
                for dirpath, dirnames, filenames in os.walk(src):
                    dirnames.sort()
                    for name in sorted(filenames):
                        p = Path(dirpath) / name
                        out.append(p.relative_to(top).as_posix())
            else:
                out.append(rel)
        return sorted(dict.fromkeys(out))


def variant_dir(unit_name: str, from_ref: str) -> str:
    """Where the files of a files unit's variant live, relative to the overlay root."""
    return f"{VARIANTS_DIR}/{unit_name}/{from_ref}"


def with_variant(unit: Unit, v: Variant) -> Unit:
    """unit with the content of its variant v."""
    if unit.kind == "patch":
        return replace(unit, patch=v.patch, variant=v.from_ref)
    return replace(unit, files=v.files, variant=v.from_ref,
                   files_root=variant_dir(unit.name, v.from_ref))


def _ranges(unit: Unit) -> list[tuple[Variant, str | None]]:
    """Each variant and where it ends: its until, else the next variant's from
    (an open range ends where the next variant begins), else never."""
    vs = unit.variants
    return [(v, v.until or (vs[i + 1].from_ref if i + 1 < len(vs) else None))
            for i, v in enumerate(vs)]


def chosen_variant(unit: Unit, release: str) -> Variant | None:
    """The variant whose range holds release (a release tag), else None."""
    key = version_key(release)
    for v, end in _ranges(unit):
        if version_key(v.from_ref) <= key and (end is None or key < version_key(end)):
            return v
    return None


def unreachable_variants(unit: Unit, pin: str) -> tuple[list[Variant], Variant | None]:
    """What a new pin makes dead: (variants no release >= pin chooses, the variant
    that becomes the unit's own content because no release >= pin uses it anymore).

    Only patch units promote a variant (a files unit keeps its overlay/ files).
    """
    if not unit.variants or not is_release(pin):
        return [], None
    chosen = chosen_variant(unit, pin)
    dropped = [v for v, end in _ranges(unit)
               if end is not None and version_key(end) <= version_key(pin)]
    if chosen is None or unit.kind != "patch":
        return dropped, None
    # the unit's own content stays reachable where a range after pin is left
    # uncovered: a variant's until that no variant starts at
    starts = {v.from_ref for v in unit.variants}
    gap = any(v.until is not None and version_key(v.until) > version_key(pin)
              and v.until not in starts for v in unit.variants)
    return dropped, (None if gap else chosen)


def reachable(unit: Unit, pin: str) -> Unit:
    """unit as an upgrade to pin leaves it: the variants unreachable_variants
    names gone, the promoted one the unit's own patch."""
    dropped, promoted = unreachable_variants(unit, pin)
    gone = {v.from_ref for v in dropped} | ({promoted.from_ref} if promoted else set())
    return replace(unit, patch=promoted.patch if promoted else unit.patch,
                   variants=tuple(v for v in unit.variants if v.from_ref not in gone))


def stored_at(content: Unit) -> str:
    """Where one content of a unit (itself or a variant) is stored: its patch,
    or the folder of its files."""
    return content.patch if content.kind == "patch" else content.files_root


def _timeline(unit: Unit) -> list[tuple[str | None, Unit, Variant | None]]:
    """(first release, content, its variant) oldest first; None is every
    release before the first variant."""
    out: list[tuple[str | None, Unit, Variant | None]] = [(None, unit, None)]
    for v in unit.variants:
        out.append((v.from_ref, with_variant(unit, v), v))
        if v.until:
            out.append((v.until, unit, None))
    return out


def _at(timeline, release: str | None):
    """The timeline's entry that applies on release (None: the oldest)."""
    chosen = timeline[0]
    for entry in timeline[1:]:
        if release is not None and version_key(entry[0]) <= version_key(release):
            chosen = entry
    return chosen


def with_content_before(unit: Unit, earlier: Unit, pin: str) -> Unit:
    """unit with earlier's content again for the releases before pin where
    unit only has its own content left: what upgrades to pin dropped or
    promoted away. earlier is the unit as the overlay had it at an older pin;
    unit's variants, and everything from pin on, stay as they are. A files
    unit keeps its own files (upgrades only drop its variants)."""
    key = version_key
    now, then = _timeline(unit), _timeline(earlier)
    starts = {e[0] for e in now[1:]} | {e[0] for e in then[1:] if key(e[0]) < key(pin)} | {pin}
    seq: list[tuple[str | None, Unit, Variant | None]] = []
    for s in [None, *sorted(starts, key=key)]:
        _, content, variant = _at(now, s)
        if variant is None and (s is None or key(s) < key(pin)):
            _, content, variant = _at(then, s)
            if variant is None and unit.kind == "files":
                content = unit
        if not seq or stored_at(seq[-1][1]) != stored_at(content):
            seq.append((s, content, variant))
    own = seq[0][1]
    # a variant's table as either side had it, also where it was promoted
    known = {stored_at(with_variant(x, v)): v for x in (earlier, unit) for v in x.variants}
    variants = []
    for i, (s, content, variant) in enumerate(seq[1:], 1):
        if stored_at(content) == stored_at(own):
            continue
        variant = variant or known.get(stored_at(content))
        end = seq[i + 1][0] if i + 1 < len(seq) else None
        until = end if end is not None and (
            stored_at(seq[i + 1][1]) == stored_at(own)
            or (variant is not None and variant.until == end)) else None
        if unit.kind == "patch":
            variants.append(Variant(from_ref=s, until=until, patch=content.patch))
        else:  # a files variant's folder is named by its from
            variants.append(replace(variant, until=until))
    return replace(unit, patch=own.patch, variants=tuple(variants))


def with_unit_content(text: str, unit: Unit) -> str:
    """Set the unit's own patch and its [[unit.variant]] tables to unit's;
    tables that stay keep their layout, new ones go where their from sorts."""

    def fields(v: Variant) -> dict[str, Any]:
        out: dict[str, Any] = {"from": v.from_ref}
        if v.until:
            out["until"] = v.until
        if v.patch:
            out["patch"] = v.patch
        if v.files:
            out["files"] = list(v.files)
        return out

    def change(doc):
        import tomlkit

        for table in doc.get("unit", []):
            if table.get("name") != unit.name:
                continue
            if unit.kind == "patch":
                table["patch"] = unit.patch
            wanted = [fields(v) for v in unit.variants]
            if not wanted:
                table.pop("variant", None)
                return
            if "variant" not in table:
                table["variant"] = tomlkit.aot()
            tables = table["variant"]
            for i in reversed(range(len(tables))):
                if tables[i].unwrap() not in wanted:
                    del tables[i]
            for i, want in enumerate(wanted):
                if i < len(tables) and tables[i].unwrap() == want:
                    continue
                new = tomlkit.table()
                for k, v in want.items():
                    new[k] = v
                new.add(tomlkit.nl())
                tables.insert(i, new)
            return
        raise KeyError(unit.name)

    return _edit(text, change)


def with_variants_dropped(text: str, name: str, drop: list[str],
                          promote: str | None = None) -> str:
    """Remove the variants of unit name whose from is in drop; with promote, that
    variant's patch becomes the unit's own and the variant goes too."""

    def change(doc):
        for table in doc.get("unit", []):
            if table.get("name") != name:
                continue
            variants = table.get("variant", [])
            gone = set(drop) | ({promote} if promote else set())
            for i in reversed(range(len(variants))):
                v = variants[i]
                if v.get("from") in gone:
                    if v.get("from") == promote:
                        table["patch"] = v["patch"]
                    del variants[i]
            if not len(variants):
                table.pop("variant", None)
            return
        raise KeyError(name)

    return _edit(text, change)


def find_root(start: Path) -> Path:
    """The overlay repository: start, or its nearest parent with the manifest."""
    start = start.resolve()
    for d in (start, *start.parents):
        if (d / MANIFEST_NAME).is_file():
            return d
    raise BadInput(
        f"no {MANIFEST_NAME} in {start} or any parent directory",
        "run inside an overlay repository, pass -C DIR, or start one with "
        "`overlay init DIR --upstream URL --sglang-ref REF`",
    )


class _Checker:
    """Typed access to the manifest with errors that name file, key and fix."""

    def __init__(self, file: str):
        self.file = file

    def fail(self, key: str, problem: str, fix: str, file: str | None = None):
        if file is not None:  # the problem is in that file, not in the manifest
            raise BadInput(f"{file}: {problem}", fix)
        raise ManifestError(self.file, key, problem, fix)

    def table(self, data: Any, key: str) -> dict:
        if not isinstance(data, dict):
            self.fail(key, f"expected a table, got {_type(data)}",
                      f"write it as [{key}] with key = value lines")
        return data

    def known(self, data: dict, allowed: set, where: str) -> None:
        for k in data:
            if k not in allowed:
                self.fail(f"{where}.{k}" if where else k, "unknown key",
                          f"remove it or use one of: {', '.join(sorted(allowed))}")

    def string(self, data: dict, key: str, where: str, required: bool = False,
               default: str | None = None) -> str | None:
        if key not in data:
            if required:
                self.fail(f"{where}.{key}", "missing", f"add {key} = \"...\"")
            return default
        v = data[key]
        if not isinstance(v, str):
            self.fail(f"{where}.{key}", f"expected a string, got {_type(v)}",
                      f"write it in quotes: {key} = \"...\"")
        return v

    def entry(self, raw: Any, kind: str, i: int, key: str, pattern: re.Pattern, what: str,
              fix: str) -> tuple[dict, str, str]:
        """A [[kind]] entry: its table, its identifying key (which must match
        pattern) and how errors name the entry from then on (kind[i] 'value')."""
        where = f"{kind}[{i}]"
        raw = self.table(raw, where)
        value = self.string(raw, key, where, required=True)
        if not pattern.match(value):
            self.fail(f"{where}.{key}", f"'{value}' is not {what}", fix)
        return raw, value, f"{where} '{value}'"

    def strings(self, data: dict, key: str, where: str) -> tuple[str, ...]:
        v = data.get(key, [])
        if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
            self.fail(f"{where}.{key}", f"expected a list of strings, got {_type(v)}",
                      f'write it as {key} = ["..."]')
        return tuple(v)

    def boolean(self, data: dict, key: str, where: str) -> bool:
        v = data.get(key, False)
        if not isinstance(v, bool):
            self.fail(f"{where}.{key}", f"expected true or false, got {_type(v)}",
                      f"write {key} = true or {key} = false")
        return v

    def rel_path(self, value: str, key: str, what: str) -> str:
        """A safe relative POSIX path: not absolute, no '..', no backslashes."""
        p = PurePosixPath(value)
        if not value or value.startswith("/") or re.match(r"^[A-Za-z]:", value):
            self.fail(key, f"path '{value}' is absolute",
                      f"write it relative to {what}")
        if "\\" in value or ".." in p.parts or "." in value.split("/"):
            self.fail(key, f"path '{value}' climbs out with '..' or is not normalized",
                      f"write a plain path inside {what}")
        if ".git" in p.parts:
            self.fail(key, f"path '{value}' is inside git's own data (.git)",
                      f"name a file of the project inside {what}, never under .git/")
        return p.as_posix()


def _type(v: Any) -> str:
    return {str: "a string", int: "a number", float: "a number", bool: "a boolean",
            list: "a list", dict: "a table"}.get(type(v), type(v).__name__)


def load(root: Path, check_files: bool = True, text: str | None = None) -> Manifest:
    """Load and validate root/overlay.toml (and, by default, the files it names);
    with text, that text instead of the file (an older version from git)."""
    root = Path(root).resolve()
    path = root / MANIFEST_NAME
    c = _Checker(MANIFEST_NAME)
    try:
        data = tomllib.loads(text if text is not None else path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{path}: not found", "run `overlay init` to create it")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ManifestError(MANIFEST_NAME, f"line {line}",
                            f"not UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset "
                            f"{exc.start})", "save the file as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(MANIFEST_NAME, "syntax", str(exc),
                            "fix the TOML syntax at that line") from None
    c.known(data, TOP_KEYS, "")

    up = c.table(data.get("upstream", {}), "upstream")
    c.known(up, UPSTREAM_KEYS, "upstream")
    url = c.string(up, "url", "upstream", default=DEFAULT_UPSTREAM)
    ref = c.string(up, "ref", "upstream")
    commit = c.string(up, "commit", "upstream")
    if commit is not None and not SHA_RE.match(commit):
        c.fail("upstream.commit", f"'{commit}' is not a full 40-hex commit sha",
               "remove it; the next `overlay apply` locks the pinned ref again")

    raw_units = data.get("unit", [])
    if not isinstance(raw_units, list):
        c.fail("unit", f"expected [[unit]] tables, got {_type(raw_units)}",
               "write each unit as a [[unit]] table")
    units: list[Unit] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_units, 1):
        units.append(_unit(c, raw, i, seen))

    raw_models = data.get("model", [])
    if not isinstance(raw_models, list):
        c.fail("model", f"expected [[model]] tables, got {_type(raw_models)}",
               "write each model as a [[model]] table")
    models = [_model(c, raw, i) for i, raw in enumerate(raw_models, 1)]

    m = Manifest(root=root, upstream_url=url, ref=ref, commit=commit,
                 units=units, models=models)
    _cross_check(c, m)
    if check_files:
        _check_files(c, m)
    return m


def _unit(c: _Checker, raw: Any, i: int, seen: dict[str, int]) -> Unit:
    raw, name, where = c.entry(raw, "unit", i, "name", NAME_RE, "a valid unit name",
                               "use lowercase letters, digits, '.', '_' and '-'")
    if name in seen:
        c.fail(f"{where}.name", f"unit '{name}' is listed twice (also unit[{seen[name]}])",
               "give each unit a unique name, or delete the duplicate")
    seen[name] = i
    c.known(raw, UNIT_KEYS, where)
    kind = c.string(raw, "kind", where, required=True)
    if kind not in KINDS:
        c.fail(f"{where}.kind", f"'{kind}' is not a unit kind",
               f"use one of: {', '.join(KINDS)}")
    description = c.string(raw, "description", where, required=True)
    # DEP-3: "no", "not-needed", or anything else (ideally the PR's URL) = forwarded
    forwarded = c.string(raw, "forwarded", where, default="no")
    if not forwarded.strip():
        c.fail(f"{where}.forwarded", "is empty",
               "use \"no\", \"not-needed\" or the URL of the upstream pull request")
    applied = c.string(raw, "applied-upstream", where)
    requires = c.strings(raw, "requires", where)
    files: tuple[str, ...] = ()
    patch = edit = None
    models: tuple[str, ...] = ()
    configs: tuple[str, ...] = ()
    need = {"files": "files", "patch": "patch", "edit": "edit"}[kind]
    for other in ("files", "patch", "edit", "models", "configs"):
        if other in raw and other != need and not (kind == "edit" and other in ("models",
                                                                                "configs")):
            c.fail(f"{where}.{other}", f"a {kind} unit has no '{other}' key",
                   f"remove it, or set kind = \"{other if other != 'models' else 'edit'}\"")
    if kind == "files":
        files = tuple(c.rel_path(p, f"{where}.files", f"{OVERLAY_DIR}/")
                      for p in c.strings(raw, "files", where))
        if not files:
            c.fail(f"{where}.files", "missing or empty",
                   'list the upstream paths it adds, e.g. files = ["python/sglang/..."]')
    elif kind == "patch":
        patch = c.rel_path(c.string(raw, "patch", where, required=True),
                           f"{where}.patch", "the overlay repository")
    else:
        edit = c.string(raw, "edit", where, required=True)
        if edit not in EDIT_OPS:
            c.fail(f"{where}.edit", f"'{edit}' is not an edit operation",
                   f"use one of: {', '.join(EDIT_OPS)}")
        models = c.strings(raw, "models", where)
        if edit == "register-config":
            configs = c.strings(raw, "configs", where)
            if not configs:
                c.fail(f"{where}.configs", "missing or empty",
                       'name the config classes it registers, e.g. configs = ["MyConfig"]')
            for cfg in configs:
                if not IDENT_RE.match(cfg):
                    c.fail(f"{where}.configs", f"'{cfg}' is not a class name",
                           "use the config class name, e.g. \"MyMLAConfig\"")
        elif "configs" in raw:
            c.fail(f"{where}.configs", f"a {edit} edit has no 'configs' key",
                   'remove it, or set edit = "register-config"')
        elif not models:
            c.fail(f"{where}.models", "missing or empty",
                   'name the architectures it registers, e.g. models = ["OPTForCausalLM"]')
    variants = _variants(c, raw, where, kind, name)
    return Unit(name=name, kind=kind, description=description, forwarded=forwarded,
                applied_upstream=applied, requires=requires, files=files,
                patch=patch, edit=edit, models=models, configs=configs,
                variants=variants)


def _variants(c: _Checker, raw: dict, where: str, kind: str, name: str) -> tuple[Variant, ...]:
    """The unit's [[unit.variant]] tables: checked, oldest first, ranges apart."""
    if "variant" not in raw:
        return ()
    tables = raw["variant"]
    if not isinstance(tables, list):
        c.fail(f"{where}.variant", f"expected [[unit.variant]] tables, got {_type(tables)}",
               "write each variant as a [[unit.variant]] table under its [[unit]]")
    if kind == "edit":
        c.fail(f"{where}.variant", "an edit unit has no variants",
               "edits find their anchors on every release; remove the [[unit.variant]]")
    out: list[Variant] = []
    for j, t in enumerate(tables, 1):
        key = f"{where}.variant[{j}]"
        t = c.table(t, key)
        c.known(t, VARIANT_KEYS, key)
        start = c.string(t, "from", key, required=True)
        until = c.string(t, "until", key)
        for k, ref in (("from", start), ("until", until)):
            if ref is not None and not is_release(ref):
                c.fail(f"{key}.{k}", f"'{ref}' is not a release tag",
                       f'name an upstream release, e.g. {k} = "v0.5.21"')
        if until is not None and version_key(until) <= version_key(start):
            c.fail(f"{key}.until", f"'{until}' is not after from = '{start}'",
                   "make until a later release than from, or remove it")
        if out and version_key(start) <= version_key(out[-1].from_ref):
            c.fail(f"{key}.from", f"'{start}' is not after the previous variant's "
                   f"'{out[-1].from_ref}'", "list the variants oldest first, one per release")
        if out and out[-1].until is None:
            pass  # an open range ends where the next variant begins
        elif out and version_key(out[-1].until) > version_key(start):
            c.fail(f"{key}.from", f"'{start}' is inside the previous variant's range "
                   f"({out[-1].label})", f"set the previous variant's until = \"{start}\"")
        other = "files" if kind == "patch" else "patch"
        if other in t:
            c.fail(f"{key}.{other}", f"a variant of a {kind} unit has no '{other}' key",
                   f"give it its own {kind} instead")
        if kind == "patch":
            p = c.rel_path(c.string(t, "patch", key, required=True), f"{key}.patch",
                           "the overlay repository")
            out.append(Variant(start, until, patch=p))
        else:
            files = tuple(c.rel_path(p, f"{key}.files", variant_dir(name, start) + "/")
                          for p in c.strings(t, "files", key))
            if not files:
                c.fail(f"{key}.files", "missing or empty",
                       f"list the upstream paths, stored under {variant_dir(name, start)}/")
            out.append(Variant(start, until, files=files))
    return tuple(out)


def _model(c: _Checker, raw: Any, i: int) -> Model:
    raw, arch, where = c.entry(raw, "model", i, "architecture", IDENT_RE, "a class name",
                               "use the model class name, e.g. \"OPTForCausalLM\"")
    c.known(raw, MODEL_KEYS, where)
    case = []
    for key, (kwarg, typ) in CASE_KEYS.items():
        if key in raw:
            v = raw[key]
            ok = isinstance(v, bool) if typ is bool else (
                isinstance(v, (int, float)) and not isinstance(v, bool)
                and (typ is float or isinstance(v, int)))
            if not ok:
                c.fail(f"{where}.{key}", f"expected {typ.__name__}, got {_type(v)}",
                       f"write {key} = {'true' if typ is bool else '1' if typ is int else '5e-2'}")
            case.append((kwarg, float(v) if typ is float else v))
    config = c.string(raw, "config", where)
    if config is not None and not IDENT_RE.match(config):
        c.fail(f"{where}.config", f"'{config}' is not a class name",
               "use the name of its PretrainedConfig subclass, e.g. \"MyMLAConfig\"")
    hf_id = c.string(raw, "hf-id", where)
    if hf_id is not None and not re.match(r"^[\w.-]+/[\w.-]+$", hf_id):
        c.fail(f"{where}.hf-id", f"'{hf_id}' is not a Hugging Face model id",
               "write it as \"org/name\", e.g. \"facebook/opt-125m\"")
    return Model(
        architecture=arch,
        unit=c.string(raw, "unit", where),
        hf_id=hf_id,
        multimodal=c.boolean(raw, "multimodal", where),
        mla=c.boolean(raw, "mla", where),
        family=c.string(raw, "family", where),
        description=c.string(raw, "description", where),
        config=config,
        case=tuple(case),
    )


def _cross_check(c: _Checker, m: Manifest) -> None:
    names = [u.name for u in m.units]
    for idx, u in enumerate(m.units):
        for r in u.requires:
            if r not in names:
                c.fail(f"unit '{u.name}'.requires", f"no unit named '{r}'",
                       f"use one of: {', '.join(names)}")
            if names.index(r) >= idx:
                c.fail(f"unit '{u.name}'.requires", f"'{r}' comes after '{u.name}'",
                       f"move unit '{r}' above '{u.name}' in {MANIFEST_NAME}")
    archs: dict[str, int] = {}
    for i, mod in enumerate(m.models, 1):
        if mod.architecture in archs:
            c.fail(f"model[{i}].architecture",
                   f"'{mod.architecture}' is declared twice (also model[{archs[mod.architecture]}])",
                   "declare each architecture once")
        archs[mod.architecture] = i
        if mod.unit is not None and mod.unit not in names:
            c.fail(f"model[{i}] '{mod.architecture}'.unit", f"no unit named '{mod.unit}'",
                   f"use one of: {', '.join(names)}")
    for u in m.units:
        if u.kind != "edit":
            continue
        for arch in u.models:
            if arch not in archs:
                c.fail(f"unit '{u.name}'.models", f"'{arch}' is not a declared [[model]]",
                       f"add a [[model]] with architecture = \"{arch}\"")
            mod = m.models[archs[arch] - 1]
            if u.edit == "register-multimodal" and not mod.multimodal:
                c.fail(f"unit '{u.name}'.models",
                       f"model '{arch}' is not declared multimodal = true",
                       "set multimodal = true on that [[model]] or drop it from this unit")
            if u.edit == "register-mla" and not mod.mla:
                c.fail(f"unit '{u.name}'.models", f"model '{arch}' is not declared mla = true",
                       "set mla = true on that [[model]] or drop it from this unit")
            if u.edit == "register-config" and mod.config and mod.config not in u.configs:
                c.fail(f"unit '{u.name}'.models",
                       f"model '{arch}' has config = \"{mod.config}\", which this unit does "
                       "not register", f'add "{mod.config}" to its configs or drop the model')
            if u.edit == "add-model-case" and not mod.hf_id:
                c.fail(f"unit '{u.name}'.models", f"model '{arch}' has no hf-id",
                       "set hf-id = \"org/name\" on that [[model]]")


def _check_files(c: _Checker, m: Manifest) -> None:
    """Every named file exists, overlay/ has no escaping symlink, no file is orphaned."""
    overlay = m.overlay_dir
    real_overlay = overlay.resolve()
    if overlay.is_dir():
        for dirpath, dirnames, filenames in os.walk(overlay):
            for name in sorted(dirnames + filenames):
                p = Path(dirpath) / name
                if p.is_symlink():
                    try:
                        target = p.resolve()
                    except (RuntimeError, OSError):
                        rel = p.relative_to(m.root).as_posix()
                        c.fail(rel, "is a symlink loop (it leads back to itself)",
                               "replace it with the file itself", file=rel)
                    if target != real_overlay and real_overlay not in target.parents:
                        rel = p.relative_to(m.root).as_posix()
                        c.fail(rel, f"symlink points outside {OVERLAY_DIR}/ "
                               f"(to {os.readlink(p)})",
                               "replace it with the file itself or a link inside overlay/",
                               file=rel)
    claimed: dict[str, str] = {}
    patches: dict[str, str] = {}
    for unit in m.active_units:
        for u in m.all_contents(unit):
            if u.kind == "files" and u.variant:
                _check_variant_files(c, m, u)
            elif u.kind == "files":
                for rel in u.files:
                    if not (overlay / rel).exists():
                        c.fail(f"unit '{u.name}'.files", f"{OVERLAY_DIR}/{rel} does not exist",
                               f"add the file under {OVERLAY_DIR}/ or remove it from the list")
                for rel in m.unit_files(u):
                    if rel in claimed:
                        c.fail(f"unit '{u.name}'.files",
                               f"{OVERLAY_DIR}/{rel} is also in unit '{claimed[rel]}'",
                               "list each overlay file in one unit only")
                    claimed[rel] = u.name
            elif u.kind == "patch":
                if u.patch in patches:
                    c.fail(_patch_key(u), f"{u.patch} is also the patch of "
                           f"{patches[u.patch]}", "give each unit and variant its own file")
                patches[u.patch] = (f"unit '{u.name}'" + (f" (variant from {u.variant})"
                                                          if u.variant else ""))
                _check_patch(c, m, u)
    defined = m.overlay_configs()
    for u in m.active_units:
        for cfg in u.configs:
            if cfg not in defined:
                c.fail(f"unit '{u.name}'.configs",
                       f"no overlay file under {OVERLAY_DIR}/{CONFIGS_DIR} defines class {cfg}",
                       f"define it in a files unit's {CONFIGS_DIR}<name>.py, or fix the name")
    if overlay.is_dir():
        retired_files = {rel for u in m.units if u.retired and u.kind == "files"
                         for rel in m.unit_files(u)}
        for dirpath, dirnames, filenames in os.walk(overlay):
            dirnames.sort()
            for name in sorted(filenames):
                rel = (Path(dirpath) / name).relative_to(overlay).as_posix()
                if rel not in claimed and rel not in retired_files and name != ".gitkeep":
                    c.fail("unit", f"{OVERLAY_DIR}/{rel} is not in any files unit",
                           "add it to a [[unit]] of kind files, or delete it")


def _patch_key(u: Unit) -> str:
    if u.variant:
        n = next(i for i, v in enumerate(u.variants, 1) if v.from_ref == u.variant)
        return f"unit '{u.name}'.variant[{n}].patch"
    return f"unit '{u.name}'.patch"


def _check_variant_files(c: _Checker, m: Manifest, u: Unit) -> None:
    n = next(i for i, v in enumerate(u.variants, 1) if v.from_ref == u.variant)
    for rel in u.files:
        if not (m.files_dir(u) / rel).exists():
            c.fail(f"unit '{u.name}'.variant[{n}].files", f"{u.files_root}/{rel} does not exist",
                   f"add the file under {u.files_root}/ or remove it from the list")


def _check_patch(c: _Checker, m: Manifest, u: Unit) -> None:
    key = _patch_key(u)
    path = m.root / u.patch
    confine(path, m.root, key)  # a patch is read only from inside the overlay
    if not path.is_file():
        c.fail(key, f"{u.patch} does not exist",
               "create it with `git format-patch --full-index` or fix the path")
    try:
        parsed = patchfile.parse(path.read_bytes())
    except patchfile.NotAPatch as exc:
        c.fail(key, f"{u.patch} is not a patch ({exc})",
               "regenerate it with `git format-patch --full-index`")
    for f in parsed.files:
        for p in (f.old_path, f.new_path):
            if p is not None:
                c.rel_path(p, f"{key} ({u.patch})", "the upstream tree")
    bad = patchfile.abbreviated_index(parsed)
    if bad:
        c.fail(key, f"{u.patch} has no full index line for {bad[0]}",
               "regenerate it with `git format-patch --full-index` so 3-way merges work")


# --- writing ----------------------------------------------------------------
# Edits go through tomlkit so the user's comments, order and layout survive.
# Each edit is a pure function of the manifest's text, so a verb can collect
# several and write them once (see journal.py); `update` is the one-step form.


def _edit(text: str, change) -> str:
    import tomlkit

    doc = tomlkit.parse(text)
    change(doc)
    return tomlkit.dumps(doc)


def with_lock(text: str, ref: str, commit: str | None, url: str | None = None) -> str:
    """Pin ref and lock it at commit (None: no lock); with url, set the upstream too."""

    def change(doc):
        import tomlkit

        if "upstream" not in doc:
            doc["upstream"] = tomlkit.table()
        if url is not None:
            doc["upstream"]["url"] = url
        doc["upstream"]["ref"] = ref
        if commit is None:
            doc["upstream"].pop("commit", None)
        else:
            doc["upstream"]["commit"] = commit

    return _edit(text, change)


def with_unit_keys(text: str, name: str, **keys: Any) -> str:
    """Set (or, with None, remove) keys of the unit called name.

    Keyword names use '_' for the manifest's '-' (applied_upstream=...).
    """

    def change(doc):
        for table in doc.get("unit", []):
            if table.get("name") == name:
                for k, v in keys.items():
                    key = k.replace("_", "-")
                    if v is None:
                        table.pop(key, None)
                    else:
                        table[key] = v
                return
        raise KeyError(name)

    return _edit(text, change)


def with_unit(text: str, fields: dict[str, Any]) -> str:
    """Add a [[unit]] table at the end of the unit list."""
    return _with_table(text, "unit", fields)


def with_model(text: str, fields: dict[str, Any]) -> str:
    """Add a [[model]] table at the end."""
    return _with_table(text, "model", fields)


def with_tables(text: str, tables: dict[str, list[dict[str, Any]]]) -> str:
    """Add [[key]] tables at the end of each key's list, in order, parsing the
    text once (capture of a large fork adds hundreds; a parse each was quadratic)."""

    def change(doc):
        for key, fields_list in tables.items():
            _append_tables(doc, key, fields_list)

    return _edit(text, change) if any(tables.values()) else text


def _append_tables(doc, key: str, tables: list[dict[str, Any]]) -> None:
    import tomlkit

    for i, fields in enumerate(tables):
        table = tomlkit.table()
        for k, v in fields.items():
            if isinstance(v, str) and "\n" in v:
                v = tomlkit.string(v, multiline=True)
            table[k] = v
        if i == len(tables) - 1:  # the array of tables separates the others
            table.add(tomlkit.nl())
        if key not in doc:
            doc[key] = tomlkit.aot()
        doc[key].append(table)


def _with_table(text: str, key: str, fields: dict[str, Any]) -> str:
    return with_tables(text, {key: [fields]})


def update(root: Path, edit, *args: Any, **kwargs: Any) -> None:
    """Apply one edit function to root/overlay.toml and write it atomically."""
    path = root / MANIFEST_NAME
    text = edit(path.read_text(encoding="utf-8"), *args, **kwargs)
    durable.write_text(path, text)


def write_lock(root: Path, ref: str, commit: str) -> None:
    update(root, with_lock, ref, commit)


def set_unit_keys(root: Path, name: str, **keys: Any) -> None:
    update(root, with_unit_keys, name, **keys)


def table_line(path: Path, table: str, index: int) -> int:
    """The line of the index-th [[table]] header of the manifest at path (1 when
    there is none), for findings to point at."""
    header = re.compile(r"^\s*\[\[\s*" + re.escape(table) + r"\s*\]\]")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return 1
    found = [no for no, line in enumerate(lines, 1) if header.match(line)]
    return found[index] if 0 <= index < len(found) else 1
