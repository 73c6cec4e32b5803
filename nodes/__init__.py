"""ComfyUI nodes: thin adapters over geodream_ops. Every module here that defines ``NODES`` (node id -> (class,
display name)) is registered; nothing else needs editing to add a node."""
import importlib
import pkgutil

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}

for _module in pkgutil.iter_modules(__path__):
    _nodes = getattr(importlib.import_module(f".{_module.name}", __name__), "NODES", {})
    for _node_id, (_cls, _display) in _nodes.items():
        NODE_CLASS_MAPPINGS[_node_id] = _cls
        NODE_DISPLAY_NAME_MAPPINGS[_node_id] = _display
