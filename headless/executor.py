"""Execute an API-format workflow: the whole graph validated first (validation.py), then the output nodes and what
they depend on, each node once, in dependency order."""
from __future__ import annotations

import time

import torch

from .pack import load_pack
from .validation import validate
from .workflow import WorkflowError, is_link  # noqa: F401  (WorkflowError: what execute raises for a bad graph)


class NodeError(Exception):
    """A node failed while running with an error of its own (a core node's, another pack's, a library's): the
    message names the node (#id and type) and the error; the error itself is the ``__cause__``."""


def execute(api: dict, node_classes: dict, log=print, before_run=None) -> dict:
    """Returns {node_id: outputs tuple}; output nodes' "ui" dicts are collected under the key "ui", and each node's
    wall-clock seconds under "seconds" ({node_id: s}). A graph that cannot run raises WorkflowError before any
    node runs; an error a node raises that is not a GeoDreamError becomes a NodeError naming the node.
    ``before_run()``, when given, is called once the graph is valid and before the first node runs (the
    runner checks the models there, so a bad value, quick to fix, is reported before a download is asked for)."""
    order = validate(api, node_classes)
    pack = load_pack()
    if before_run is not None:
        before_run()
    results, ui, seconds = {}, {}, {}
    for step, node_id in enumerate(order, 1):
        node = api[node_id]
        cls = node_classes[node["class_type"]]
        kwargs = {k: (results[v[0]][v[1]] if is_link(v) else v) for k, v in node["inputs"].items()}
        log(f"[{step}/{len(order)}] #{node_id} {node['class_type']} ...")
        start = time.perf_counter()
        try:
            with torch.inference_mode():  # as ComfyUI runs every node
                out = getattr(cls(), cls.FUNCTION)(**kwargs)
        except (pack.geodream_ops.errors.GeoDreamError, pack.nodes.host.Interrupted):
            raise  # a GeoDreamError says what to fix as it is; a cancel is no failure
        except Exception as err:
            raise NodeError(f"node #{node_id} ({node['class_type']}) failed: {type(err).__name__}: {err}") from err
        if isinstance(out, dict):
            if "ui" in out:
                ui[node_id] = out["ui"]
            out = out.get("result", ())
        results[node_id] = tuple(out or ())
        seconds[node_id] = time.perf_counter() - start
        log(f"[{step}/{len(order)}] #{node_id} {node['class_type']} done in {seconds[node_id]:.2f}s")
    results["ui"], results["seconds"] = ui, seconds
    return results
