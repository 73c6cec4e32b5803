"""Load the pack, convert a workflow file to API format, apply overrides, execute, and list the files written."""
from __future__ import annotations

from . import executor, workflow
from .core_nodes import CORE_NODES
from .pack import load_pack


def node_classes() -> dict:
    return {**CORE_NODES, **load_pack().NODE_CLASS_MAPPINGS}


def written_files(ui: dict) -> list[str]:
    """Files that output nodes report the ComfyUI way: {"filename", "subfolder", "type": "output"}."""
    root = load_pack().nodes.host.output_dir()
    paths = (str(root / entry.get("subfolder", "") / entry["filename"])
             for result in ui.values() for entries in result.values() if isinstance(entries, list)
             for entry in entries if isinstance(entry, dict) and entry.get("type") == "output" and "filename" in entry)
    return list(dict.fromkeys(paths))


def run_workflow(path, overrides: dict | None = None, log=print) -> list[str]:
    """Run a workflow file; ``overrides`` maps node type -> {input: value}. Returns the paths of written files."""
    classes = node_classes()
    api = workflow.load_api(path, classes)
    for node in api.values():
        node["inputs"].update((overrides or {}).get(node["class_type"], {}))
    results = executor.execute(api, classes, log=log)
    return written_files(results["ui"])
