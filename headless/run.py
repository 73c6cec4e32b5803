"""Load the pack, convert a workflow file to API format, apply overrides, validate the whole graph, check its
models, execute, and list the files written (previews apart)."""
from __future__ import annotations

from . import executor, validation, workflow
from .installed import node_classes
from .pack import PACK_ROOT, load_pack


def written_files(ui: dict, kind: str = "output") -> list[str]:
    """Files that output nodes report the ComfyUI way: {"filename", "subfolder", "type": "output"}; ``kind``
    "temp": the previews (PreviewImage's), which are not outputs."""
    root = load_pack().nodes.host.FOLDERS[kind]()
    paths = (str(root / entry.get("subfolder", "") / entry["filename"])
             for result in ui.values() for entries in result.values() if isinstance(entries, list)
             for entry in entries if isinstance(entry, dict) and entry.get("type") == kind and "filename" in entry)
    return list(dict.fromkeys(paths))


def require_models(api: dict, path, log=print) -> None:
    """Before anything runs: every manifest model the workflow selects must be there, else one error listing them
    all, where they were looked for, and the command that fetches exactly these."""
    pack = load_pack()
    manifest, host = pack.geodream_ops.model_manifest, pack.nodes.host
    missing = []
    for entry in manifest.needed_by(api)[0]:
        status = manifest.model_status(entry, host.model_folders(entry.folder))
        if status.state == "missing":
            missing.append(f"  {entry.title}: {entry.folder}/{entry.name} (looked in "
                           f"{', '.join(map(str, status.searched))}); alone: {entry.command}")
        for problem in status.problems:
            log(f"warning: {entry.key} may be incomplete: {problem}; `{entry.command}` completes it")
    if missing:
        raise pack.geodream_ops.errors.GeoDreamError(
            "GeoDream: this workflow needs models that are not downloaded yet:\n" + "\n".join(missing)
            + f"\nFetch them all with: {manifest.COMMAND} download --for {path}   (run in {PACK_ROOT})")


def run_workflow(path, overrides: dict | None = None, log=print) -> list[str]:
    """Run a workflow file; ``overrides`` maps node type -> {input: value}, each of which must match a node and
    an input of the workflow (validation.apply_overrides). Before any node runs: the graph's values are checked
    (a WorkflowError listing every problem), then its models (a GeoDreamError listing the missing ones and the
    command that fetches them). Returns the paths of written files."""
    classes = node_classes()
    api = validation.apply_overrides(workflow.load_api(path, classes), overrides or {}, classes)
    results = executor.execute(api, classes, log=log, before_run=lambda: require_models(api, path, log))
    previews = written_files(results["ui"], "temp")
    if previews:
        log(f"{len(previews)} preview image{'s' if len(previews) > 1 else ''} (temporary, not outputs) in "
            f"{load_pack().nodes.host.temp_dir()}")
    return written_files(results["ui"])
