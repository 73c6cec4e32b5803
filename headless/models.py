"""python -m headless.models list | check | download [NAMES... | --for WORKFLOW.json] [--models-dir DIR]

Lists, fetches and verifies the model files of models.json. Run from the pack's folder: inside a ComfyUI install
(custom_nodes/<pack>/) files go to ComfyUI's models folder (extra_model_paths.yaml included); elsewhere to
$GEODREAM_MODELS_DIR or ./models; --models-dir beats both. Downloads use huggingface_hub (HF_ENDPOINT selects the
hub; HF_TOKEN or `hf auth login` for gated files): progress bars, transfers that resume where they were cut, every
file checked against the publisher's checksum, and a model appears under its final name only once whole."""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import sys
from pathlib import Path

from .pack import PACK_ROOT

# The manifest and folder modules are plain Python: import them without the pack (and torch) so `list` is quick.
if str(PACK_ROOT) not in sys.path:
    sys.path.insert(0, str(PACK_ROOT))
from geodream_ops import model_manifest as mm  # noqa: E402
from geodream_ops.atomic import atomic_write, existing_folder, free_bytes  # noqa: E402
from geodream_ops.errors import GeoDreamError  # noqa: E402
from geodream_ops.model_paths import models_folder_reason, search_folders  # noqa: E402


def _endpoint() -> str | None:
    """HF_ENDPOINT as set now (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_ENDPOINT") or None


def _human(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return ""


# --- list / check ------------------------------------------------------------------------------------------------
def list_models(manifest, models_dir=None, out=print) -> int:
    """One line per model: present / missing / incomplete, its size and path, in columns as wide as their longest
    cell (a manifest's size text can be long); problems and cut downloads below, under the model's name."""
    rows, notes = [], []
    for entry in manifest.values():
        folders = search_folders(entry.folder, models_dir)
        status = mm.model_status(entry, folders)
        where = status.path or folders[0] / entry.name
        size = _human(status.size) if status.path else entry.size
        rows.append((status.state, entry.key, size, str(where)))
        notes.append([f"{problem}: `{entry.command}` completes it" for problem in status.problems])
        partial = mm.staging_dir(folders[0]) / entry.key
        if status.state != "present" and partial.is_dir():
            done = sum(p.stat().st_size for p in partial.rglob("*") if p.is_file())
            notes[-1].append(f"a download was cut at {_human(done)}; `{entry.command}` resumes it")
    state_width, key_width, size_width = (max((len(row[i]) for row in rows), default=0) for i in range(3))
    for (state, key, size, where), below in zip(rows, notes):
        out(f"{state:<{state_width}}  {key:<{key_width}}  {size:<{size_width}}  {where}")
        for note in below:
            out(f"{'':<{state_width}}  {note}")
    return 0


def _expected_digests(entry, root: Path) -> dict[str, dict]:
    """rel path -> {"size", and a digest kind: value} from the download record, else from the manifest."""
    recorded = mm.read_record(root).get(entry.name, {}).get("files")
    if recorded:
        return recorded
    digests = {k: getattr(entry, k) for k in ("sha256", "md5") if getattr(entry, k)}
    return {".": {"size": entry.bytes, **digests}} if digests else {}


def _problems(entry, status) -> list[str] | None:
    """What is wrong with a present model: missing or truncated files (model_status) and files whose hash differs
    from the download record's or the manifest's; None when no checksum is known (a model placed by hand)."""
    expected = _expected_digests(entry, status.path.parent)
    if not expected:
        return None
    problems = list(status.problems)
    for rel, want in expected.items():
        path = status.path if rel == "." else status.path / rel
        if not path.is_file() or path.stat().st_size != want.get("size", path.stat().st_size):
            continue  # missing or truncated: named by model_status already
        for kind in ("sha256", "md5", "git"):
            if want.get(kind) and mm.file_digest(path, kind) != want[kind]:
                problems.append(f"{path} is corrupt: its {kind} differs from the published one")
    return problems


def check_models(manifest, models_dir=None, names=None, out=print) -> int:
    """Hash every present model file against its checksum; names each truncated or corrupt file. 1 if any is bad."""
    bad = 0
    for entry in _select(manifest, names):
        status = mm.model_status(entry, search_folders(entry.folder, models_dir))
        if status.path is None:
            out(f"missing    {entry.key}: `{entry.command}`")
            continue
        problems = _problems(entry, status)
        if problems is None:
            out(f"unchecked  {entry.key}: no checksum known for {status.path} (placed by hand?); "
                f"`{entry.command}` checks it against the hub and records it")
            continue
        bad += bool(problems)
        out(f"{'BAD' if problems else 'ok':<10} {entry.key}: {status.path}")
        for problem in problems:
            out(f"{'':<11}{problem}; `{entry.command}` fetches it again")
    return 1 if bad else 0


# --- download ----------------------------------------------------------------------------------------------------
def _select(manifest, names):
    if not names:
        return list(manifest.values())
    unknown = [n for n in names if n not in manifest]
    if unknown:
        raise GeoDreamError(f"GeoDream: no model named {', '.join(unknown)} in the manifest; "
                            f"known: {', '.join(manifest)}.")
    return [manifest[n] for n in names]


def _hub_files(entry) -> tuple[str, list[tuple[str, str, int | None, dict]]]:
    """(revision, [(rel path under the model, url, size, {digest kind: value})]) of a manifest entry, as the hub
    lists it now: each file's size, and its LFS sha256 or, for small files, its git blob id."""
    from huggingface_hub import HfApi, hf_hub_url

    source = entry.source
    if "url" in source:
        return "", [(".", source["url"], entry.bytes, {"md5": entry.md5} if entry.md5 else {})]
    info = HfApi(endpoint=_endpoint()).model_info(source["repo"], revision=source["revision"], files_metadata=True)
    chosen = {}
    for pattern in source["files"]:
        hits = [s for s in info.siblings if fnmatch.fnmatch(s.rfilename, pattern)]
        if not hits:
            raise GeoDreamError(f"GeoDream: huggingface.co/{source['repo']} at {source['revision']} has no file "
                                f"matching {pattern}; the manifest (models.json) needs updating.")
        chosen.update({s.rfilename: s for s in hits})
    chosen = {n: s for n, s in chosen.items() if _safetensors_copy(n) not in chosen}
    files = []
    for name, sibling in chosen.items():
        digests = {"sha256": sibling.lfs.sha256} if sibling.lfs else {"git": sibling.blob_id}
        if entry.sha256 and digests.get("sha256") != entry.sha256:
            raise GeoDreamError(f"GeoDream: huggingface.co/{source['repo']} now serves a {name} whose sha256 differs "
                                f"from the manifest's ({entry.sha256}); not downloading it.")
        size = sibling.lfs.size if sibling.lfs else sibling.size
        rel = "." if entry.kind == "file" else name
        files.append((rel, hf_hub_url(source["repo"], name, revision=info.sha, endpoint=_endpoint()), size, digests))
    return info.sha or source["revision"], files


def _safetensors_copy(name: str) -> str | None:
    """For weights published in both formats, the safetensors name of a .bin (diffusers: x.bin -> x.safetensors;
    transformers: pytorch_model.bin -> model.safetensors), so only that copy is fetched."""
    if not name.endswith(".bin"):
        return None
    folder, _, base = name.rpartition("/")
    base = "model.safetensors" if base == "pytorch_model.bin" else base[:-4] + ".safetensors"
    return f"{folder}/{base}" if folder else base


def _transfer(url: str, part: Path, size: int | None, hub: bool) -> None:
    """Fetch ``url`` into ``part``, continuing from what a cut transfer left there (HTTP Range)."""
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    part.parent.mkdir(parents=True, exist_ok=True)
    done = part.stat().st_size if part.exists() else 0
    if size is not None and done > size:
        part.unlink()
        done = 0
    with open(part, "ab") as f:
        http_get(url, f, resume_size=done, expected_size=size, headers=build_hf_headers() if hub else {},
                 displayed_filename=part.name.removesuffix(".part"))


def _verify(path: Path, digests: dict, what: str) -> None:
    for kind, value in digests.items():
        if value and mm.file_digest(path, kind) != value:
            path.unlink()
            raise GeoDreamError(f"GeoDream: {what} arrived with a {kind} that differs from the published {value}; "
                                "it was deleted, nothing was installed. Run the command again; if it persists the "
                                "source has changed and models.json needs updating.")


def download_summary(entries, models_dir=None, out=print) -> list:
    """Before the first byte (and for a dry run): what each model takes (already there, or its size as the hub
    lists it now less what a cut transfer left), the total, and the free space of each target folder's disk; a
    GeoDreamError with the figures when a disk cannot hold what goes to it (with 1% of its free space to spare).
    Returns the entries that are not there yet. Asks the hub for file lists only; fetches nothing."""
    needs: dict[int, list] = {}
    total, missing = 0, []
    for entry in entries:
        folders = search_folders(entry.folder, models_dir)
        status = mm.model_status(entry, folders)
        root = folders[0]
        if status.verified and _problems(entry, status) == []:
            out(f"  {entry.key:<22} already there ({status.path})")
            continue
        _, files = _hub_files(entry)
        final, stage = root / entry.name, mm.staging_dir(root) / entry.key
        need = 0
        for rel, _, size, digests in files:
            if size is None:
                continue
            if _already_here(entry, folders, final, rel, size, digests) is not None:
                continue
            part = stage / (_fetched_name(entry) if rel == "." else rel)
            staged = max((p.stat().st_size for p in (part, part.with_name(part.name + ".part")) if p.is_file()),
                         default=0)
            need += max(size - staged, 0)
        out(f"  {entry.key:<22} {_human(need):>10} to fetch into {root}")
        missing.append(entry)
        needs.setdefault(existing_folder(root).stat().st_dev, []).append((root, need))
        total += need
    out(f"total to fetch: {_human(total)}")
    for targets in needs.values():
        need, root = sum(n for _, n in targets), targets[0][0]
        free = free_bytes(root)
        if free is None:
            out(f"free space at {root}: unknown")
            continue
        fits = need <= 0.99 * free
        out(f"free space at {root}: {_human(free)}" + (f", enough for the {_human(need)} going there" if fits else ""))
        if not fits:
            raise GeoDreamError(f"GeoDream: the models need {_human(need)} at {root} but its disk has "
                                f"{_human(free)} free; free space there, or give another folder with --models-dir "
                                "(or in ComfyUI's extra_model_paths.yaml). Nothing was downloaded.")
    return missing


def download(entry, models_dir=None, out=print) -> Path:
    """Fetch one model into the first folder ComfyUI searches for it, verified, appearing whole or not at all."""
    folders = search_folders(entry.folder, models_dir)
    status = mm.model_status(entry, folders)
    if status.verified and _problems(entry, status) == []:
        out(f"{entry.key}: already there, verified ({status.path})")
        return status.path
    root = folders[0]
    final = root / entry.name
    stage = mm.staging_dir(root) / entry.key
    out(f"{entry.key}: {entry.title} from {entry.origin}")
    revision, files = _hub_files(entry)
    record, in_place, full = {}, set(), None
    for rel, url, size, digests in files:
        part = stage / (_fetched_name(entry) if rel == "." else rel)
        # A file already here that checks out is used as it is: placed by hand, by an earlier run of a folder
        # model, or (for a kept text tower) the full CLIP file under its published name.
        existing = _already_here(entry, folders, final, rel, size, digests)
        if existing is not None and not entry.keep:
            record[rel] = {"size": size, **digests}
            in_place.add(rel)
            continue
        if existing is None:
            if not part.is_file() or part.stat().st_size != size:
                _transfer(url, part.with_name(part.name + ".part"), size, "repo" in entry.source)
                os.replace(part.with_name(part.name + ".part"), part)
            _verify(part, digests, f"{entry.key}/{rel}")
        full = existing or part
        record[rel] = {"size": size or part.stat().st_size, **digests}
    if entry.keep == "text tower":
        record = {".": _keep_text_tower(entry, full, record["."]["sha256"], stage, revision)}
    _place(entry, stage, final, [rel for rel in record if rel not in in_place])
    _write_record(root, entry, revision, record)
    shutil.rmtree(stage, ignore_errors=True)
    out(f"{entry.key}: installed at {final}")
    return final


def _already_here(entry, folders, final: Path, rel: str, size: int | None, digests: dict) -> Path | None:
    """A file that checks out and serves for ``rel``: in place under ``final``, or for a kept text tower the full
    file under one of its published names in any of ``folders``."""
    here = [r / n for r in folders for n in entry.also_named] if entry.keep else [final / rel]
    return next((path for path in here if _checks_out(path, size, digests)), None)


def _checks_out(path: Path, size: int | None, digests: dict) -> bool:
    return (path.is_file() and path.stat().st_size == size
            and all(mm.file_digest(path, kind) == value for kind, value in digests.items() if value))


def _keep_text_tower(entry, full: Path, full_sha256: str, stage: Path, revision: str) -> dict:
    """The text tower of the verified full CLIP checkpoint ``full`` (uni3d_text.save_text_tower), written in the
    staging folder; the full file goes if it was downloaded here, stays if it was the user's. Returns its record."""
    target = stage / entry.name
    from geodream_ops.uni3d.uni3d_text import save_text_tower

    source = f"huggingface.co/{entry.source['repo']}@{revision}/{entry.source['files'][0]}"
    with atomic_write(target) as tmp:
        save_text_tower(full, tmp, {"geodream_source": source,
                                    "geodream_source_sha256": full_sha256})
    if full.parent == stage:
        full.unlink()
    return {"size": target.stat().st_size, "sha256": mm.file_digest(target, "sha256"), "kept": "text tower"}


def _place(entry, stage: Path, final: Path, rels: list[str]) -> None:
    """Move the verified download (``rels``: what is not in place yet) under its final name: a single file, or a
    whole new folder, in one rename; into an existing (partial) folder, file by file, each whole."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if entry.kind == "file":
        if rels:
            os.replace(stage / (entry.name if entry.keep else _fetched_name(entry)), final)
    elif not final.exists():
        os.replace(stage, final)
    else:
        for rel in rels:
            (final / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / rel, final / rel)


def _fetched_name(entry) -> str:
    return entry.source["files"][0].rsplit("/", 1)[-1] if "repo" in entry.source else entry.name


def _write_record(root: Path, entry, revision: str, files: dict) -> None:
    record = mm.read_record(root)
    record[entry.name] = {"model": entry.key, "source": entry.origin, "revision": revision, "files": files}
    with atomic_write(root / mm.RECORD_NAME) as tmp:
        tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")


def workflow_models(path, manifest) -> tuple[list, list[str]]:
    """The manifest models a workflow file (UI or API format) selects, and its model inputs naming other files."""
    from . import workflow
    from .installed import node_classes

    try:
        api = workflow.load_api(path, node_classes())
    except (OSError, ValueError) as err:
        raise GeoDreamError(f"GeoDream: cannot read the workflow {path}: {err}") from None
    return mm.needed_by(api, manifest)


def main(argv=None, manifest=None) -> int:
    """The command line; ``manifest`` replaces models.json (tests point it at twins). 0 on success, 1 on a clear
    error printed as one line."""
    parser = argparse.ArgumentParser(prog="python -m headless.models", description=__doc__.split("\n\n")[1])
    parser.add_argument("--models-dir", help="the models folder (default: ComfyUI's, or $GEODREAM_MODELS_DIR)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="what is present, missing or incomplete, with sizes")
    check = commands.add_parser("check", help="hash present files against their checksums")
    check.add_argument("names", nargs="*")
    get = commands.add_parser("download", help="fetch models by name, or all that a workflow needs")
    get.add_argument("names", nargs="*")
    get.add_argument("--for", dest="workflow", metavar="WORKFLOW.json", help="only what this workflow needs")
    get.add_argument("--dry-run", action="store_true",
                     help="say what would be fetched, how large, and whether the disk holds it; fetch nothing")
    args = parser.parse_args(argv)
    print(models_folder_reason(args.models_dir))
    # The models asked for, and the one being fetched: a gated one's licence hint names it (the size summary asks
    # the hub about every model before the first is fetched, so a refusal can come before any download starts).
    entries, current = [], None
    try:
        manifest = manifest or mm.load_manifest()
        if args.command == "list":
            return list_models(manifest, args.models_dir)
        if args.command == "check":
            return check_models(manifest, args.models_dir, args.names)
        if args.workflow:
            entries, own = workflow_models(args.workflow, manifest)
            print(f"{args.workflow} needs: {', '.join(e.key for e in entries) or 'no manifest model'}")
            for line in own:
                print(f"  not in the manifest (your own file; put it in place yourself): {line}")
            if args.names:
                entries += [e for e in _select(manifest, args.names) if e not in entries]
        elif args.names:
            entries = _select(manifest, args.names)
        else:
            parser.error("download needs model names or --for WORKFLOW.json; `list` shows the names")
        missing = download_summary(entries, args.models_dir)
        if args.dry_run:
            for entry in missing:
                print(f"would fetch {entry.key} from {entry.origin} to "
                      f"{search_folders(entry.folder, args.models_dir)[0] / entry.name}")
            print("dry run: nothing was fetched")
            return 0
        for entry in entries:
            current = entry
            download(entry, args.models_dir)
    except GeoDreamError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # network and hub errors (huggingface_hub words them clearly): one line, no traceback
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        # A gated publisher refuses (401/403) until its licence is accepted: then say where and how, not "connection".
        refused = getattr(getattr(err, "response", None), "status_code", None) in (401, 403)
        gated = [e for e in ([current] if current is not None else entries) if e.extra.get("licence")]
        if refused and gated:
            for entry in gated:
                print(entry.extra["licence"], file=sys.stderr)
        else:
            print(f"Check the connection to {_endpoint() or 'huggingface.co'} and run the command again: verified "
                  "files are kept and a cut transfer resumes.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
