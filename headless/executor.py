"""Execute an API-format workflow: the output nodes and what they depend on, each node once, in dependency order."""
from __future__ import annotations

import time

import torch


class WorkflowError(Exception):
    pass


def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def _validate(node_id, class_type, node_class, inputs) -> None:
    types = node_class.INPUT_TYPES()
    declared = {**types.get("required", {}), **types.get("optional", {})}
    for name in types.get("required", {}):
        if name not in inputs:
            raise WorkflowError(f"node #{node_id} ({class_type}) is missing its required input '{name}'")
    for name, value in inputs.items():
        spec = declared.get(name)
        if spec is None or _is_link(value):
            continue
        if isinstance(spec[0], (list, tuple)) and value not in spec[0]:
            from .models import missing_choice_hint

            raise WorkflowError(f"node #{node_id} ({class_type}): '{value}' is not a choice for '{name}'; "
                                f"available: {list(spec[0])}{missing_choice_hint(class_type, name)}")
        # The same bounds ComfyUI enforces before it runs anything.
        options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        if spec[0] in ("INT", "FLOAT") and isinstance(value, (int, float)):
            if "min" in options and value < options["min"] or "max" in options and value > options["max"]:
                raise WorkflowError(f"node #{node_id} ({class_type}): {name}={value} is outside "
                                    f"[{options.get('min')}, {options.get('max')}]")


def execute(api: dict, node_classes: dict, log=print) -> dict:
    """Returns {node_id: outputs tuple}; output nodes' "ui" dicts are collected under the key "ui", and each node's
    wall-clock seconds under "seconds" ({node_id: s})."""
    for node_id, node in api.items():
        if node["class_type"] not in node_classes:
            raise WorkflowError(f"node #{node_id} is of type '{node['class_type']}', which is not installed")
    wanted = [nid for nid, node in api.items() if getattr(node_classes[node["class_type"]], "OUTPUT_NODE", False)]
    if not wanted:
        raise WorkflowError("the workflow has no output node (a Save/Preview node), so nothing would run")

    order, state = [], {}

    def visit(node_id, path=()):
        if state.get(node_id) == "done":
            return
        if node_id in path:
            raise WorkflowError(f"the workflow has a cycle through node #{node_id}")
        if node_id not in api:
            raise WorkflowError(f"a link points to node #{node_id}, which is not in the workflow")
        for value in api[node_id]["inputs"].values():
            if _is_link(value):
                visit(value[0], path + (node_id,))
        state[node_id] = "done"
        order.append(node_id)

    for node_id in wanted:
        visit(node_id)

    results, ui, seconds = {}, {}, {}
    for step, node_id in enumerate(order, 1):
        node = api[node_id]
        cls = node_classes[node["class_type"]]
        _validate(node_id, node["class_type"], cls, node["inputs"])
        kwargs = {k: (results[v[0]][v[1]] if _is_link(v) else v) for k, v in node["inputs"].items()}
        log(f"[{step}/{len(order)}] #{node_id} {node['class_type']} ...")
        start = time.perf_counter()
        with torch.inference_mode():  # as ComfyUI runs every node
            out = getattr(cls(), cls.FUNCTION)(**kwargs)
        if isinstance(out, dict):
            if "ui" in out:
                ui[node_id] = out["ui"]
            out = out.get("result", ())
        results[node_id] = tuple(out or ())
        seconds[node_id] = time.perf_counter() - start
        log(f"[{step}/{len(order)}] #{node_id} {node['class_type']} done in {seconds[node_id]:.2f}s")
    results["ui"], results["seconds"] = ui, seconds
    return results
