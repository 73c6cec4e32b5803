"""The node types a headless workflow can use: this pack's and the stand-ins for the core nodes it uses."""
from __future__ import annotations

from .core_nodes import CORE_NODES
from .pack import load_pack


def node_classes() -> dict:
    return {**CORE_NODES, **load_pack().NODE_CLASS_MAPPINGS}
