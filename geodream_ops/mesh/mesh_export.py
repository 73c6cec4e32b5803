"""Writing a TexturedMesh as GLB or OBJ + MTL + PNG through trimesh, each file whole or not at all.

glTF and most OBJ importers (Blender's default) are Y up with the front facing +Z, so vertices are written in that
frame (cameras.to_gltf_frame)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..cameras import to_gltf_frame
from ..images import srgb_to_linear, to_pil
from .textured_mesh import TexturedMesh
from .mesh_repair import check_vertices

FORMATS = ("glb", "obj")


def to_trimesh(mesh: TexturedMesh, name: str = "material", linear_colours: bool = False):
    """``linear_colours``: for glTF: vertex colours written in linear light, as its COLOR_0 is defined
    (mesh_import), and a plain material when there is no texture (plain_material)."""
    import trimesh

    vertices = to_gltf_frame(mesh.vertices).detach().cpu().numpy()
    faces = mesh.faces.detach().cpu().numpy()
    colors = None
    if mesh.vertex_colors is not None:
        colors = mesh.vertex_colors.detach().float().clamp(0, 1).cpu().numpy()
        colors = (srgb_to_linear(colors) if linear_colours else colors) * 255
        colors = np.concatenate([colors.round().astype(np.uint8), np.full_like(colors[:, :1], 255, np.uint8)], 1)
    if mesh.texture is not None and mesh.uvs is not None:
        visual = trimesh.visual.TextureVisuals(uv=mesh.uvs.detach().cpu().numpy(),
                                               material=plain_material(name, to_pil(mesh.texture)))
        if colors is not None:  # multiplying the texture; glTF writes them as COLOR_0
            visual.vertex_attributes["color"] = colors
    elif linear_colours:
        # glTF without a texture: a plain non-metallic material. Without one glTF's default (metallic 1,
        # roughness 1) draws the mesh as dark metal in spec-following viewers, and Blender gives it none at all.
        visual = trimesh.visual.TextureVisuals(material=plain_material(name))
        if colors is not None:  # the base colour, written as COLOR_0
            visual.vertex_attributes["color"] = colors
    elif colors is not None:  # OBJ / PLY: colours on the vertex lines, no material needed
        visual = trimesh.visual.ColorVisuals(vertex_colors=colors)
    else:
        visual = None
    return trimesh.Trimesh(vertices, faces, visual=visual, process=False)


def safe_stem(stem: str) -> str:
    """``stem`` as a name every OBJ reader parses in ``mtllib`` / ``map_Kd`` lines: OBJ has no quoting, so a space
    splits the name in two and ``#`` starts a comment; such characters become ``_``."""
    return re.sub(r"[^\w.\-]", "_", stem)


def plain_material(name: str = "material", texture=None):
    """White (or ``texture``, a PIL image, as the base colour), non-metallic, fully rough: every mesh we write is
    drawn with it (vertex colours multiply it)."""
    import trimesh

    return trimesh.visual.material.PBRMaterial(baseColorTexture=texture, metallicFactor=0.0, roughnessFactor=1.0,
                                               baseColorFactor=[255, 255, 255, 255], name=name)


def suffixes(mesh: TexturedMesh, file_format: str) -> tuple[str, ...]:
    """The files ``mesh_files`` gives, main first: GLB one; OBJ its .obj, and with a texture the .mtl and .png."""
    if file_format not in FORMATS:
        raise ValueError(f"GeoDream: unknown mesh format {file_format!r}; expected one of {FORMATS}")
    textured = mesh.texture is not None and mesh.uvs is not None
    return (".glb",) if file_format == "glb" else ((".obj", ".mtl", ".png") if textured else (".obj",))


def mesh_files(mesh: TexturedMesh, stem: str, file_format: str) -> dict[str, bytes]:
    """The bytes of every file of ``mesh`` saved as ``<stem><suffix>`` (suffixes() order): the material, and so
    OBJ's texture file, is named after the file so meshes in one folder never collide. OBJ stems must be
    ``safe_stem``'s."""
    kinds = suffixes(mesh, file_format)
    check_vertices(mesh.vertices, f"the mesh for '{stem}{kinds[0]}'")
    if file_format == "obj" and safe_stem(stem) != stem:
        raise ValueError(f"GeoDream: '{stem}' cannot name OBJ files (use safe_stem)")
    scene = to_trimesh(mesh, stem, linear_colours=file_format == "glb")
    if file_format == "glb":
        return {".glb": scene.export(file_type="glb")}
    from trimesh.exchange.obj import export_obj

    text, extras = export_obj(scene, include_texture=True, return_texture=True, mtl_name=f"{stem}.mtl")
    files = {".obj": text.encode("utf-8"), **{Path(name).suffix.lower(): data for name, data in extras.items()}}
    if set(files) != set(kinds):
        raise RuntimeError(f"GeoDream: trimesh wrote {sorted(files)} for an OBJ, expected {kinds}")
    return files


def save_mesh(mesh: TexturedMesh, path, file_format: str) -> list[Path]:
    """Write ``mesh`` at ``path`` (its suffix is replaced by the format's, an OBJ's name made safe_stem); returns
    every file written, main first. Each file is atomic, and an OBJ's .mtl and texture are in place before its
    .obj appears, so a present .obj is always complete. (Save Mesh claims new numbered names through
    nodes/host.save_output instead.)"""
    path = Path(path)
    stem = safe_stem(path.stem) if file_format == "obj" else path.stem
    files = mesh_files(mesh, stem, file_format)
    written = []
    for suffix in (*list(files)[1:], next(iter(files))):
        with atomic_write(path.with_name(stem + suffix)) as tmp:
            tmp.write_bytes(files[suffix])
        written.append(path.with_name(stem + suffix))
    return [written[-1], *written[:-1]]
