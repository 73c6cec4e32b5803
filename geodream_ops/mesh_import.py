"""Reading a mesh file (GLB, glTF, OBJ, PLY, OFF) as a TexturedMesh in our frame, with its base-colour texture or
vertex colours when it has them. Files are taken to be in glTF's frame (Y up), as our exporter writes them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .cameras import from_gltf_frame
from .mesh import TexturedMesh

SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".off")


def _floats(array) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array, dtype=np.float32))


def load_mesh(path, y_up: bool = True) -> TexturedMesh:
    """``y_up``: the file is in glTF's frame (the usual case) and is turned into ours; else it is already Z up."""
    import trimesh

    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise ValueError(f"GeoDream: cannot read '{path.name}'; mesh files must be one of {', '.join(SUFFIXES)}")
    mesh = trimesh.load(path, force="mesh", process=False)
    if len(mesh.faces) == 0:
        raise ValueError(f"GeoDream: '{path.name}' holds no triangles")
    uvs = texture = colours = None
    visual = mesh.visual
    if visual.kind == "texture" and visual.uv is not None:
        material = visual.material
        image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
        if image is not None:
            uvs, texture = _floats(visual.uv), _floats(np.asarray(image.convert("RGB"))) / 255
    elif visual.kind == "vertex":
        colours = _floats(visual.vertex_colors[:, :3]) / 255
    vertices = _floats(mesh.vertices)
    return TexturedMesh(from_gltf_frame(vertices) if y_up else vertices,
                        torch.as_tensor(np.asarray(mesh.faces), dtype=torch.long),
                        uvs=uvs, texture=texture, vertex_colors=colours)
