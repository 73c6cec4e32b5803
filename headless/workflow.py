"""Workflow files: the editor's UI format (nodes + links + positional widgets_values) and the API format
({node_id: {"class_type", "inputs"}}), and the conversion from the first to the second. The bottom of the headless
runner: validation.py checks what this reads, executor.py runs it, run.py and the commands sit on top."""
from __future__ import annotations

import json
from pathlib import Path

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
MUTED, BYPASSED = 2, 4
# Nodes that only exist in the editor.
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


class WorkflowError(Exception):
    """A workflow that cannot run as it is; the message names the node, its type, the input and what is allowed."""


def is_link(value) -> bool:
    """An API-format input value that is a link: [source node id, output index]."""
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def declared_inputs(node_class) -> dict:
    """A node class's required and optional inputs, {name: spec}."""
    types = node_class.INPUT_TYPES()
    return {**types.get("required", {}), **types.get("optional", {})}


def is_widget(spec) -> bool:
    """An input shown as a widget (holds a value) rather than a socket (takes a link)."""
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    # Inputs that accept several types (core Preview3D's model_file) name their widget's kind in "widgetType".
    kind = options.get("widgetType", spec[0])
    return (isinstance(kind, (list, tuple)) or kind in WIDGET_TYPES) and not options.get("forceInput")


def has_control_after_generate(name: str, spec) -> bool:
    """The editor stores an extra 'fixed/randomize/...' value after these INT widgets."""
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return spec[0] == "INT" and (options.get("control_after_generate") or name in ("seed", "noise_seed"))


def widget_names(node_class) -> list[tuple[str, tuple]]:
    types = node_class.INPUT_TYPES()
    ordered = list(types.get("required", {}).items()) + list(types.get("optional", {}).items())
    return [(name, spec) for name, spec in ordered if is_widget(spec)]


def load(path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def is_api_format(workflow: dict) -> bool:
    return "nodes" not in workflow and all(isinstance(v, dict) and "class_type" in v for v in workflow.values())


def ui_to_api(workflow: dict, node_classes: dict) -> dict:
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = {link[0]: link for link in workflow.get("links", [])}

    def source(link_id):
        """(node_id, slot) feeding a link, looking through reroutes, bypassed nodes and primitives."""
        _, from_id, from_slot, *_ = links[link_id]
        node = nodes[from_id]
        if node["type"] == "Reroute":
            return source(node["inputs"][0]["link"])
        if node.get("mode") == BYPASSED:
            wanted = node["outputs"][from_slot]["type"]
            for inp in node.get("inputs", []):
                if inp.get("link") is not None and inp.get("type") == wanted:
                    return source(inp["link"])
            raise ValueError(f"bypassed node #{from_id} ({node['type']}) has no input of type {wanted} to pass on")
        if node["type"] == "PrimitiveNode":
            return ("value", node["widgets_values"][0])
        return (str(from_id), from_slot)

    api = {}
    for node_id, node in nodes.items():
        if node["type"] in FRONTEND_ONLY or node.get("mode") in (MUTED, BYPASSED):
            continue
        if node["type"] not in node_classes:
            raise ValueError(f"node #{node_id} is of type '{node['type']}', which is not installed")
        inputs = {}
        values = list(node.get("widgets_values") or [])
        if isinstance(node.get("widgets_values"), dict):
            inputs.update(node["widgets_values"])
            values = []
        for name, spec in widget_names(node_classes[node["type"]]):
            if not values:
                break
            inputs[name] = values.pop(0)
            if has_control_after_generate(name, spec) and values:
                values.pop(0)
        for inp in node.get("inputs", []):
            if inp.get("link") is None or inp["link"] not in links:
                continue
            src = source(inp["link"])
            inputs[inp["name"]] = src[1] if src[0] == "value" else [src[0], src[1]]
        api[str(node_id)] = {"class_type": node["type"], "inputs": inputs}
    return api


def load_api(path, node_classes: dict) -> dict:
    workflow = load(path)
    return workflow if is_api_format(workflow) else ui_to_api(workflow, node_classes)


def link_type_errors(workflow: dict, node_classes: dict) -> list[str]:
    """Links in a UI workflow whose ends disagree with the node classes' declared types."""
    errors = []
    nodes = {node["id"]: node for node in workflow["nodes"]}
    for link_id, from_id, from_slot, to_id, to_slot, link_type in workflow.get("links", []):
        src, dst = nodes[from_id], nodes[to_id]
        if src["type"] in node_classes:
            declared = node_classes[src["type"]].RETURN_TYPES[from_slot]
            if declared != link_type:
                errors.append(f"link {link_id}: #{from_id} {src['type']} outputs {declared}, link says {link_type}")
        if dst["type"] in node_classes:
            name = dst["inputs"][to_slot]["name"]
            types = node_classes[dst["type"]].INPUT_TYPES()
            spec = {**types.get("required", {}), **types.get("optional", {})}.get(name)
            if spec is None:
                errors.append(f"link {link_id}: #{to_id} {dst['type']} has no input '{name}'")
            elif not is_widget(spec) and link_type not in spec[0].split(",") and "*" not in (spec[0], link_type):
                errors.append(f"link {link_id}: #{to_id} {dst['type']}.{name} takes {spec[0]}, link carries {link_type}")
    return errors


def save(workflow: dict, path) -> None:
    """Write a workflow file whole or not at all (geodream_ops/atomic.py): example workflows are tracked files."""
    from .pack import load_pack

    with load_pack().geodream_ops.atomic.atomic_write(Path(path)) as tmp:
        tmp.write_text(json.dumps(workflow, indent=2), encoding="utf-8")
