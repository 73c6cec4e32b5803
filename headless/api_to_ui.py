"""The API format ({node_id: {"class_type", "inputs"}}) turned into the editor's UI format, so example workflows can
be written as a few lines of API JSON and always match the node classes: sockets, widget order, the seed's control
value and link types all come from INPUT_TYPES / RETURN_TYPES.

    python -m headless.api_to_ui API.json UI.json
"""
from __future__ import annotations

import argparse
import json

from .installed import node_classes
from .workflow import has_control_after_generate, is_link, is_widget, save, widget_names

# Automatic layout: columns by link depth, nodes stacked; a node's size is estimated from its sockets and widgets.
COLUMN_WIDTH, ROW_GAP, NODE_WIDTH, TITLE_HEIGHT, SLOT_HEIGHT = 440, 60, 320, 46, 24
# Nodes whose editor widgets the estimate cannot see: their default size in the editor (frontend 1.35.9).
EDITOR_SIZES = {"Preview3D": [400, 550], "LoadImage": [320, 314]}  # LoadImage shows the image under its widgets
NOTE_SIZE, NOTE_COLOR, NOTE_BGCOLOR = [400, 120], "#432", "#653"


def _type_name(kind) -> str:
    return "COMBO" if isinstance(kind, (list, tuple)) else kind


def _declared(node_class) -> dict:
    types = node_class.INPUT_TYPES()
    return {**types.get("required", {}), **types.get("optional", {})}


def _default(spec):
    if isinstance(spec[0], (list, tuple)):
        options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        return options.get("default", spec[0][0] if spec[0] else None)
    return spec[1].get("default") if len(spec) > 1 and isinstance(spec[1], dict) else None


def _depths(api: dict) -> dict:
    """Longest chain of links feeding each node: its column in the automatic layout."""
    depths = {}

    def depth(node_id, path=()):
        if node_id in path:
            raise ValueError(f"the workflow has a cycle through node #{node_id}")
        if node_id not in depths:
            sources = [v[0] for v in api[node_id]["inputs"].values() if is_link(v)]
            depths[node_id] = 1 + max((depth(s, path + (node_id,)) for s in sources), default=-1)
        return depths[node_id]

    for node_id in api:
        depth(node_id)
    return depths


def _check(api: dict, node_classes: dict) -> None:
    for node_id, node in api.items():
        if not node_id.isdigit():
            raise ValueError(f"node id '{node_id}' must be a number: the editor numbers its nodes")
        if node["class_type"] not in node_classes:
            raise ValueError(f"node #{node_id} is of type '{node['class_type']}', which is not installed")
        declared = _declared(node_classes[node["class_type"]])
        for name, value in node["inputs"].items():
            if name not in declared:
                raise ValueError(f"node #{node_id} ({node['class_type']}) has no input '{name}'")
            if is_link(value):
                if value[0] not in api:
                    raise ValueError(f"node #{node_id} input '{name}' links to node #{value[0]}, which is missing")
                outputs = node_classes[api[value[0]]["class_type"]].RETURN_TYPES
                if not 0 <= value[1] < len(outputs):
                    raise ValueError(f"node #{node_id} input '{name}' links to output {value[1]} of node "
                                     f"#{value[0]}, which has {len(outputs)} outputs")


def api_to_ui(api: dict, node_classes: dict, positions: dict | None = None, notes=(), sizes: dict | None = None) -> dict:
    """UI workflow for ``api``. ``positions`` / ``sizes`` map node ids to [x, y] / [width, height] (others are laid
    out in columns by link depth, and sized by estimate); ``notes`` is a list of (text, [x, y]) shown as Note nodes.
    Widgets missing from ``api`` get their defaults."""
    _check(api, node_classes)
    positions, sizes = positions or {}, sizes or {}
    depths = _depths(api)
    order = sorted(api, key=lambda i: (depths[i], int(i)))
    column_tops = {}
    nodes, links, outgoing = [], [], {}

    for node_id in sorted(api, key=int):
        node = api[node_id]
        cls = node_classes[node["class_type"]]
        declared = _declared(cls)
        inputs = [{"name": name, "type": _type_name(spec[0]), "link": None}
                  for name, spec in declared.items() if not is_widget(spec)]
        # A widget fed by a link keeps its value in widgets_values and gets a socket of its own.
        inputs += [{"name": name, "type": _type_name(spec[0]), "widget": {"name": name}, "link": None}
                   for name, spec in declared.items() if is_widget(spec) and is_link(node["inputs"].get(name))]
        for slot, inp in enumerate(inputs):
            value = node["inputs"].get(inp["name"])
            if is_link(value):
                link_type = _type_name(node_classes[api[value[0]]["class_type"]].RETURN_TYPES[value[1]])
                link_id = len(links) + 1
                links.append([link_id, int(value[0]), value[1], int(node_id), slot, link_type])
                inp["link"] = link_id
                outgoing.setdefault((value[0], value[1]), []).append(link_id)
        values = []
        for name, spec in widget_names(cls):
            value = node["inputs"].get(name)
            values.append(_default(spec) if value is None or is_link(value) else value)
            if has_control_after_generate(name, spec):
                values.append("fixed")  # examples reproduce: the editor must not re-roll the seed
        estimate = [NODE_WIDTH, TITLE_HEIGHT + SLOT_HEIGHT * (max(len(inputs), len(cls.RETURN_TYPES)) + len(values))]
        size = list(sizes.get(node_id, EDITOR_SIZES.get(node["class_type"], estimate)))
        column = depths[node_id]
        top = column_tops.get(column, 100)
        column_tops[column] = top + size[1] + ROW_GAP
        nodes.append({
            "id": int(node_id), "type": node["class_type"],
            "pos": list(positions.get(node_id, [100 + column * COLUMN_WIDTH, top])), "size": size,
            "flags": {}, "order": order.index(node_id), "mode": 0, "inputs": inputs, "outputs": [],
            "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": values,
        })

    for ui_node in nodes:
        cls = node_classes[ui_node["type"]]
        names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
        ui_node["outputs"] = [{"name": name, "type": _type_name(kind),
                               "links": outgoing.get((str(ui_node["id"]), slot), []), "slot_index": slot}
                              for slot, (name, kind) in enumerate(zip(names, cls.RETURN_TYPES))]

    next_id = max((n["id"] for n in nodes), default=0) + 1
    for offset, (text, pos) in enumerate(notes):
        nodes.append({"id": next_id + offset, "type": "Note", "pos": list(pos), "size": list(NOTE_SIZE), "flags": {},
                      "order": len(nodes), "mode": 0, "inputs": [], "outputs": [], "properties": {},
                      "widgets_values": [text], "color": NOTE_COLOR, "bgcolor": NOTE_BGCOLOR})

    return {"last_node_id": max((n["id"] for n in nodes), default=0), "last_link_id": len(links),
            "nodes": nodes, "links": links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m headless.api_to_ui", description=__doc__.split("\n\n")[0])
    parser.add_argument("api", help="API-format workflow (JSON)")
    parser.add_argument("ui", help="where to write the UI-format workflow")
    args = parser.parse_args(argv)
    with open(args.api, encoding="utf-8") as f:
        api = json.load(f)
    save(api_to_ui(api, node_classes()), args.ui)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
