"""The model manifest (``models.json`` at the pack's root): every model file the pack can use, where it comes from,
the ComfyUI models folder and name it goes to, how it is checked, and which node inputs select it. The model command
(``python -m headless.models``), the loaders' model lists, their missing-model errors and README's table all read
it, so they never disagree. Plain Python (no torch): the command's ``list`` starts in a blink."""
from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import GeoDreamError

MANIFEST_PATH = Path(__file__).resolve().parent.parent / "models.json"
COMMAND = "python -m headless.models"
# Beside the files in each models folder: what a download verified (so `list` and `check` know sizes and hashes
# offline), and the folder where transfers grow until they are verified and moved in whole.
RECORD_NAME = ".geodream-verified.json"
STAGING_NAME = ".geodream-download"


class ModelNotFound(GeoDreamError, FileNotFoundError):
    """A model file or folder is not where the loaders look; the message says which, where, and the command."""


@dataclass(frozen=True)
class ModelEntry:
    """One model of the manifest. ``kind`` "file" or "folder" (a diffusers folder); ``source`` {"repo", "revision",
    "files": glob patterns} on the model hub, or {"url"}; ``sha256``/``md5``/``bytes`` when the publisher (or a
    record we cite in ``checked``) gives them; ``used_by``: the node inputs and choice values that select it."""
    key: str
    title: str
    source: dict
    folder: str
    name: str
    kind: str
    size: str
    checked: str
    used_by: tuple = ()
    match: tuple = ()
    also_named: tuple = ()
    bytes: int | None = None
    sha256: str | None = None
    md5: str | None = None
    checksum: str | None = None
    keep: str | None = None
    signature: dict | None = None
    extra: dict = field(default_factory=dict)

    @property
    def command(self) -> str:
        return f"{COMMAND} download {self.key}"

    @property
    def origin(self) -> str:
        """Where it is fetched from, as one line."""
        if "url" in self.source:
            return self.source["url"]
        return f"huggingface.co/{self.source['repo']} @ {self.source['revision']}: {', '.join(self.source['files'])}"

    def published_checksum(self) -> str:
        if self.sha256:
            return f"sha256 {self.sha256}"
        if self.md5:
            return f"md5 {self.md5}"
        return self.checksum or "none published"

    def looks_like(self, name: str, path: Path | None = None) -> bool:
        """Whether a file or folder can be this model: by its name (its own, an older one, or a name pattern), or
        by its signature (``signature``: a small file inside the folder that holds a telling string, e.g.
        Zero123++'s ramping_coefficients in model_index.json)."""
        if name in (self.name, *self.also_named) or any(fnmatch.fnmatch(name.lower(), p.lower()) for p in self.match):
            return True
        sign = self.signature
        if not sign or path is None or not (path / sign["file"]).is_file():
            return False
        with open(path / sign["file"], encoding="utf-8", errors="replace") as f:
            return sign["contains"] in f.read(1 << 16)


_FIELDS = set(ModelEntry.__dataclass_fields__) - {"key", "extra"}


def load_manifest(path: Path | None = None) -> dict[str, ModelEntry]:
    """The manifest's entries by key, in file order (read once per change of the file: loaders' lists ask often)."""
    path = Path(path or MANIFEST_PATH)
    try:
        return _parse(path, path.stat().st_mtime_ns)
    except OSError as err:
        raise GeoDreamError(f"GeoDream: the model manifest {path} cannot be read ({err}); reinstall the pack.") \
            from None


@functools.lru_cache(maxsize=4)
def _parse(path: Path, _mtime: int) -> dict[str, ModelEntry]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise GeoDreamError(f"GeoDream: the model manifest {path} is not valid JSON ({err}); reinstall the pack.") \
            from None
    entries = {}
    for key, spec in data["models"].items():
        known = {k: (tuple(v) if isinstance(v, list) else v) for k, v in spec.items() if k in _FIELDS}
        entries[key] = ModelEntry(key=key, extra={k: v for k, v in spec.items() if k not in _FIELDS}, **known)
    return entries


def entries_for(node: str, input_name: str, manifest: dict[str, ModelEntry] | None = None) -> list[ModelEntry]:
    """The models a node input can select, in manifest order."""
    manifest = manifest or load_manifest()
    return [e for e in manifest.values() if any(u["node"] == node and u["input"] == input_name for u in e.used_by)]


def entry_for_choice(node: str, input_name: str, value, manifest=None) -> ModelEntry | None:
    """The model a node input's value selects, if it is one of the manifest's (by its choice or an older name)."""
    for entry in entries_for(node, input_name, manifest):
        for use in entry.used_by:
            if use["node"] == node and use["input"] == input_name:
                prefix = use["choice"][: -len(entry.name)]
                if value == use["choice"] or value in (prefix + n for n in entry.also_named):
                    return entry
    return None


def order_choices(node: str, input_name: str, present: list[str], locate=lambda choice: None,
                  manifest=None) -> list[str]:
    """A loader's list: present names that can be this input's model first (the manifest's own name, then those
    that look like it by name or signature; ``locate`` gives a choice's path), then the other present names, then
    the manifest's choices not yet downloaded -- so a workflow naming one still validates, and running it says
    which command fetches the file."""
    entries = entries_for(node, input_name, manifest)

    def rank(choice: str) -> int:
        name = choice.split("/", 1)[-1]  # "checkpoints/x.pt" -> "x.pt"
        if any(use["choice"] == choice for e in entries for use in e.used_by if use["node"] == node):
            return 0
        return 1 if any(e.looks_like(name, locate(choice)) for e in entries) else 2

    ordered = sorted(present, key=lambda c: (rank(c), c.lower()))
    wanted = [use["choice"] for e in entries for use in e.used_by if use["node"] == node and use["input"] == input_name]
    return ordered + [c for c in dict.fromkeys(wanted) if c not in present]


def missing_message(entry: ModelEntry, searched: list[Path], wanted: str | None = None) -> str:
    """The error for a model file that is not there: what, where it was looked for, the command that fetches it."""
    where = ", ".join(str(p) for p in searched)
    asked = f"'{wanted}'" if wanted and wanted != entry.name else f"'{entry.name}'"
    renamed = (f" (it is now stored as '{entry.name}'; pick that name once downloaded)"
               if wanted and wanted != entry.name else "")
    return (f"GeoDream: {entry.title} {asked} is missing; looked in {where}{renamed}. "
            f"Fetch it with: {entry.command}   (run in {MANIFEST_PATH.parent}; `{COMMAND} list` shows every model).")


def fetch_hint(folder_name: str) -> str:
    """For an incomplete model folder or file: the command that fetches it whole (by its manifest name)."""
    entry = next((e for e in load_manifest().values() if e.name == folder_name), None)
    if entry is None:
        return f"`{COMMAND} list` (run in {MANIFEST_PATH.parent}) names the published models and their downloads."
    return f"Fetch it whole with: {entry.command} (run in {MANIFEST_PATH.parent})."


def unknown_message(name: str, kinds: tuple[str, ...], searched: list[Path], candidates: list[ModelEntry]) -> str:
    """The error for a name the manifest does not know and that is not on disk."""
    where = ", ".join(str(p) for p in searched)
    folders = " or ".join(f"models/{kind}/" for kind in kinds)
    offer = "; ".join(f"{e.title}: {e.command}" for e in candidates) or f"`{COMMAND} list` shows every model"
    return (f"GeoDream: '{name}' was not found in {where}. Put the file there ({folders} of your ComfyUI "
            f"install), or fetch a published one (run in {MANIFEST_PATH.parent}) -- {offer}.")


# --- what a workflow needs -------------------------------------------------------------------------------------
def needed_by(api: dict, manifest=None) -> tuple[list[ModelEntry], list[str]]:
    """The manifest models an API-format workflow selects, and 'node #id Type.input = value' lines for model inputs
    whose value is not a manifest model (the user's own files)."""
    manifest = manifest or load_manifest()
    model_inputs = {(u["node"], u["input"]) for e in manifest.values() for u in e.used_by}
    found, own = {}, []
    for node_id, node in api.items():
        for input_name, value in node.get("inputs", {}).items():
            if (node["class_type"], input_name) not in model_inputs or not isinstance(value, str):
                continue
            entry = entry_for_choice(node["class_type"], input_name, value, manifest)
            if entry is not None:
                found[entry.key] = entry
            elif not value.startswith("("):  # "(same as model)" and similar mean no file
                own.append(f"node #{node_id} {node['class_type']}.{input_name} = {value!r}")
    return [e for e in manifest.values() if e.key in found], own


# --- on disk ---------------------------------------------------------------------------------------------------
def file_digest(path: Path, kind: str) -> str:
    """``sha256`` or ``md5`` of a file, or ``git`` (the hub's git blob id of a small file: sha1 of a
    'blob <size>\\0' header and the bytes)."""
    digest = hashlib.new("sha1" if kind == "git" else kind)
    if kind == "git":
        digest.update(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def read_record(folder: Path) -> dict:
    try:
        return json.loads((folder / RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


@dataclass
class ModelStatus:
    """Where a model is and in what state: "present", "missing" or "incomplete" (with the problems named)."""
    entry: ModelEntry
    state: str
    path: Path | None
    searched: list[Path]
    size: int = 0
    problems: list[str] = field(default_factory=list)
    verified: bool = False


def _files_on_disk(path: Path) -> dict[str, int]:
    if path.is_file():
        return {".": path.stat().st_size}
    return {p.relative_to(path).as_posix(): p.stat().st_size for p in path.rglob("*") if p.is_file()}


def model_status(entry: ModelEntry, searched: list[Path]) -> ModelStatus:
    """Is the model there, and whole? Sizes are checked against what its download verified (the record beside it)
    or the manifest; a folder model without a record against the manifest's file patterns."""
    for root, name in ((r, n) for r in searched for n in (entry.name, *entry.also_named)):
        path = root / name  # an older name (the full CLIP file) serves as well
        if not path.exists():
            continue
        files = _files_on_disk(path)
        status = ModelStatus(entry, "present", path, searched, sum(files.values()))
        recorded = read_record(root).get(name, {}).get("files")
        expected = recorded or ({".": {"size": entry.bytes}} if name == entry.name and entry.bytes else None)
        if expected:
            status.verified = recorded is not None
            for rel, want in expected.items():
                have = files.get(rel)
                if have is None:
                    status.problems.append(f"{rel} is missing")
                elif want.get("size") is not None and have != want["size"]:
                    cut = "truncated" if have < want["size"] else "larger than published"
                    status.problems.append(f"{path if rel == '.' else path / rel} is {cut}: {have:,} of "
                                           f"{want['size']:,} bytes")
        elif entry.kind == "folder":
            for pattern in entry.source.get("files", ()):
                if not any(fnmatch.fnmatch(rel, pattern) for rel in files):
                    status.problems.append(f"nothing matches {pattern}")
        if status.problems:
            status.state = "incomplete"
        return status
    return ModelStatus(entry, "missing", None, searched)


def staging_dir(target_root: Path) -> Path:
    """Where a download into ``target_root`` (e.g. models/diffusers) grows: beside the models folders, on the same
    disk, hidden from ComfyUI's lists."""
    return target_root.parent / STAGING_NAME


# --- README ----------------------------------------------------------------------------------------------------
def readme_table(manifest=None) -> str:
    """README's model table, generated from the manifest."""
    manifest = manifest or load_manifest()
    rows = ["| model | `download` name | goes to `ComfyUI/models/` | size | source | checksum |",
            "|---|---|---|---|---|---|"]
    for e in manifest.values():
        source = e.source.get("url") or f"[{e.source['repo']}](https://huggingface.co/{e.source['repo']})"
        if "publisher" in e.source:
            source += f" (mirror; the publisher's {e.source['publisher'].split(' ')[0]} is gone)"
        kept = f" ({e.keep} only)" if e.keep else ""
        checksum = "sha256 in manifest" if e.sha256 else "md5 in manifest" if e.md5 else "hub sha256 at download"
        rows.append(f"| {e.title} | `{e.key}` | `{e.folder}/{e.name}`{kept} | {e.size} | {source} | {checksum} |")
    return "\n".join(rows)
