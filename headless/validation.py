"""The whole graph checked before any node runs, as ComfyUI's execution.validate_prompt does, so a bad choice on the
last node fails in the first second, not after hours of refinement. Every problem is listed at once, each with the
node id, its type, the input and what is allowed:

- every node's type is installed (all nodes, as ComfyUI checks the whole prompt), and there is an output node;
- for the output nodes and everything they depend on: required inputs present; no input the node does not declare
  (ComfyUI ignores those, but here it is a typo in a hand-written workflow or an override); links point to an
  existing node's existing output of a type the input takes; no cycle; widget values of the declared kind (INT,
  FLOAT, BOOLEAN, STRING), inside min/max, one of a list's choices; and the node's own VALIDATE_INPUTS (e.g. a save
  node's filename_prefix), given the inputs that are not links, where ComfyUI then skips its own checks.

Overrides (``--set NodeType.input=value``, a batch CSV's columns) must each match a node of the workflow and an
input of that node's type, else an error naming the workflow's node types or that type's inputs."""
from __future__ import annotations

import inspect
import json
import math

from .workflow import WorkflowError, declared_inputs, is_link, is_widget

OVERRIDE_FORMAT = "NodeType.input=value"


def parse_overrides(items: list[str]) -> dict:
    """``["NodeType.input=value", ...]`` -> {node type: {input: value}} (values JSON where they parse, else text);
    a malformed item is a WorkflowError."""
    overrides = {}
    for item in items:
        key, equals, value = item.partition("=")
        node_type, dot, name = key.strip().partition(".")
        if not (node_type and name and dot and equals):
            raise WorkflowError(f"expected {OVERRIDE_FORMAT}, got {item!r}")
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
        overrides.setdefault(node_type, {})[name.strip()] = value
    return overrides


def apply_overrides(api: dict, overrides: dict, node_classes: dict, source: str = "--set") -> dict:
    """``api`` with every node of each overridden type given the values (in place, returned). A type the workflow
    lacks, or an input that type does not have, is a WorkflowError naming ``source`` and what there is."""
    problems = []
    types_present = sorted({node["class_type"] for node in api.values()})
    for node_type, values in overrides.items():
        nodes = [node for node in api.values() if node["class_type"] == node_type]
        if not nodes:
            problems.append(f"{source} {node_type}.{next(iter(values))}: the workflow has no node of type "
                            f"'{node_type}'; its node types are {', '.join(types_present)}")
            continue
        declared = declared_inputs(node_classes[node_type]) if node_type in node_classes else {}
        for name in values:
            if name not in declared:
                problems.append(f"{source} {node_type}.{name}: {node_type} has no input '{name}'; its inputs are "
                                f"{', '.join(declared)}")
        for node in nodes:
            node["inputs"].update(values)
    if problems:
        raise WorkflowError("nothing matched:\n  " + "\n  ".join(problems))
    return api


def _accepts(input_type, output_type) -> bool:
    """ComfyUI's validate_node_input: "*" takes anything; comma-joined types are sets that must overlap."""
    if not isinstance(input_type, str) or not isinstance(output_type, str):
        return True  # a list (combo) on either side: checked as a value instead
    if "*" in (input_type, output_type) or input_type == output_type:
        return True
    return bool(set(input_type.split(",")) & set(output_type.split(",")))


def _choice_hint(class_type: str, input_name: str) -> str:
    """For a "not a choice" on a model input: the folders searched and the published models' download commands."""
    from .pack import PACK_ROOT, load_pack

    ops = load_pack().geodream_ops
    entries = ops.model_manifest.entries_for(class_type, input_name)
    if not entries:
        return ""
    folders = dict.fromkeys(p for e in entries for p in ops.model_paths.search_folders(e.folder))
    offers = "; ".join(f"{e.title}: `{e.command}`" for e in entries)
    return (f". That is a model input: searched {', '.join(map(str, folders))}. Fetch a published model (run in "
            f"{PACK_ROOT}) -- {offers}; or put your own file there")


def _checked_value(name: str, spec, value):
    """(problem or None, the value as the node will get it): numbers given as text become numbers, as ComfyUI's
    validate_inputs converts them; NaN, a number out of range, a non-boolean for a BOOLEAN are problems."""
    kind = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if isinstance(kind, (list, tuple)):
        if value not in kind:
            shown = list(kind) if len(kind) <= 20 else f"{len(kind)} choices, e.g. {list(kind)[:5]}"
            return f"'{value}' is not a choice for '{name}'; available: {shown}", value
        return None, value
    if kind == "BOOLEAN" and not isinstance(value, bool):
        return f"{name}={value!r} is not true or false (BOOLEAN expected)", value
    if kind in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                value = float(value) if kind == "FLOAT" else float(str(value).strip())
            except (TypeError, ValueError):
                return f"{name}={value!r} is not a number ({kind} expected)", value
        if not math.isfinite(value):
            return f"{name}={value} is not a finite number", value
        if kind == "FLOAT":
            value = float(value)
        elif kind == "INT":
            if not float(value).is_integer():
                return f"{name}={value!r} is not a whole number (INT expected)", value
            value = int(value)
        low, high = options.get("min"), options.get("max")
        if low is not None and value < low or high is not None and value > high:
            return f"{name}={value} is outside [{low}, {high}]", value
    return None, value


def _node_problems(node_id: str, api: dict, node_classes: dict) -> list[str]:
    node = api[node_id]
    class_type = node["class_type"]
    cls = node_classes[class_type]
    label = f"node #{node_id} ({class_type})"
    types = cls.INPUT_TYPES()
    declared = declared_inputs(cls)
    inputs = node.get("inputs", {})
    validate = getattr(cls, "VALIDATE_INPUTS", None)
    custom = set(inspect.getfullargspec(validate).args) if validate else set()
    problems = []
    for name in types.get("required", {}):
        if name not in inputs:
            problems.append(f"{label} is missing its required input '{name}'")
    for name, value in inputs.items():
        spec = declared.get(name)
        if spec is None:
            problems.append(f"{label} has no input '{name}'; its inputs are {', '.join(declared) or 'none'}")
        elif is_link(value):
            source, slot = value
            if source not in api:
                problems.append(f"{label} input '{name}' links to node #{source}, which is not in the workflow")
                continue
            outputs = node_classes[api[source]["class_type"]].RETURN_TYPES if api[source]["class_type"] in \
                node_classes else ()
            if not 0 <= slot < len(outputs):
                problems.append(f"{label} input '{name}' links to output {slot} of node #{source}, which has "
                                f"{len(outputs)} outputs")
            elif not _accepts(spec[0], outputs[slot]):
                problems.append(f"{label} input '{name}' takes {spec[0]}, but node #{source} "
                                f"({api[source]['class_type']}) output {slot} gives {outputs[slot]}")
        elif isinstance(value, list):
            problems.append(f"{label} input '{name}' is {value!r}: a link is [\"node id\", output number]")
        elif not is_widget(spec):
            problems.append(f"{label} input '{name}' takes {spec[0]} from a link, not the value {value!r}")
        elif name not in custom:
            reason, inputs[name] = _checked_value(name, spec, value)
            if reason:
                hint = _choice_hint(class_type, name) if isinstance(spec[0], (list, tuple)) else ""
                problems.append(f"{label}: {reason}{hint}")
    if validate and not problems:
        given = {k: v for k, v in inputs.items() if k in custom and not is_link(v)}
        answer = validate(**given)
        if answer is not True:
            problems.append(f"{label}: {answer if isinstance(answer, str) else 'its own validation failed'}")
    return problems


def needed_nodes(api: dict, node_classes: dict) -> list[str]:
    """The output nodes and every node they depend on, in an order where each comes after its inputs; a
    WorkflowError for a cycle or a workflow without an output node."""
    wanted = [nid for nid, node in api.items() if getattr(node_classes[node["class_type"]], "OUTPUT_NODE", False)]
    if not wanted:
        raise WorkflowError("the workflow has no output node (a Save/Preview node), so nothing would run")
    order, done = [], set()

    def visit(node_id, path=()):
        if node_id in done or node_id not in api:  # a missing node is reported by the node linking to it
            return
        if node_id in path:
            raise WorkflowError(f"the workflow has a cycle through node #{node_id}")
        for value in api[node_id].get("inputs", {}).values():
            if is_link(value):
                visit(value[0], path + (node_id,))
        done.add(node_id)
        order.append(node_id)

    for node_id in wanted:
        visit(node_id)
    return order


def validate(api: dict, node_classes: dict) -> list[str]:
    """Check ``api`` before anything runs; returns the nodes to run in order, or raises one WorkflowError listing
    every problem found (see the module's docstring)."""
    problems = []
    for node_id, node in api.items():
        if not isinstance(node, dict) or "class_type" not in node or not isinstance(node.get("inputs", {}), dict):
            problems.append(f"node #{node_id} is not {{\"class_type\": ..., \"inputs\": {{...}}}}")
        elif node["class_type"] not in node_classes:
            problems.append(f"node #{node_id} is of type '{node['class_type']}', which is not installed")
    if problems:
        raise WorkflowError("the workflow cannot run:\n  " + "\n  ".join(problems))
    order = needed_nodes(api, node_classes)
    for node_id in order:
        problems += _node_problems(node_id, api, node_classes)
    if problems:
        raise WorkflowError("the workflow cannot run:\n  " + "\n  ".join(problems))
    return order
