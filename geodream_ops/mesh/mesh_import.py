"""Reading a mesh file (GLB, glTF, OBJ, PLY, OFF) as one TexturedMesh in our frame, every part of the scene with its
node transform and its own colours. Files are taken to be in glTF's frame (Y up), as our exporter writes them.

Colours follow each format's material model, per part (trimesh reads the files; we merge the scene):
- glTF 2.0: base colour = baseColorTexture (sRGB-encoded) x baseColorFactor (linear) x COLOR_0 (linear), multiplied
  in linear light and stored sRGB-encoded like every texture of the pack (glTF 2.0 spec, "Metallic-Roughness
  Material"). COLOR_0 beside a texture is kept as a per-vertex multiplier (encoded on its own: exact for factors of
  0 and 1, within the sRGB curve's departure from a power law otherwise).
- OBJ/MTL: map_Kd x Kd as written (OBJ has no colour-space convention; tools treat both as display values).
- PLY/OFF/OBJ vertex or face colours: display values as written.
Textured parts are packed side by side into one atlas (each tile edge-padded so bilinear look-ups never bleed);
UVs outside 0..1 (REPEAT wrapping) are brought into the tile face by face, so a face spanning more than one repeat
of its texture is read clamped (logged)."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..cameras import from_gltf_frame
from ..errors import GeoDreamError
from ..images import from_pil, linear_to_srgb, srgb_to_linear
from .textured_mesh import TexturedMesh
from .mesh_repair import clean_faces
from ..uni3d.point_sampling import NO_COLOUR

log = logging.getLogger("GeoDream")

SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".off")
ATLAS_SIZE = 4096  # the packed atlas's longest side at most; one texture alone is kept at its own size
TILE_PAD = 2  # texels of edge padding around each tile in a packed atlas


@dataclass
class _Part:
    vertices: np.ndarray  # [V, 3] float64, the scene's frame (node transform applied)
    faces: np.ndarray  # [F, 3] int64
    uvs: np.ndarray | None = None  # [V, 2], (0, 0) bottom-left of ``tile``
    tile: np.ndarray | None = None  # [H, W, 3] float32 sRGB-encoded base colour (factor applied)
    colours: np.ndarray | None = None  # [V, 3] float32 sRGB-encoded, multiplying ``tile`` when there is one


def _unit(values) -> np.ndarray:
    """Colours of any stored type (uint8, uint16, float) as float32 RGB in 0..1."""
    array = np.asarray(values)
    scale = np.iinfo(array.dtype).max if np.issubdtype(array.dtype, np.integer) else 1.0
    return (array[..., :3].astype(np.float32) / scale).clip(0, 1)


def _part(geometry, transform: np.ndarray, gltf: bool) -> _Part:
    """One scene geometry placed by its node ``transform`` [4, 4], with its colours resolved (see module doc)."""
    from trimesh.visual.material import PBRMaterial
    from trimesh.visual.texture import TextureVisuals

    linear = transform[:3, :3]
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite vertices are refused by name after the merge
        vertices = np.asarray(geometry.vertices, dtype=np.float64) @ linear.T + transform[:3, 3]
    faces = np.asarray(geometry.faces, dtype=np.int64)
    if np.linalg.det(linear) < 0:  # a mirroring node turns the winding inside out
        faces = faces[:, ::-1].copy()
    part, visual = _Part(vertices, faces), geometry.visual
    encode = linear_to_srgb if gltf else (lambda c: c)
    if isinstance(visual, TextureVisuals):
        material = visual.material
        pbr = isinstance(material, PBRMaterial)
        factor = getattr(material, "baseColorFactor" if pbr else "diffuse", None)
        image = getattr(material, "baseColorTexture" if pbr else "image", None)
        if not pbr and image is not None and "kd" not in getattr(material, "kwargs", {}):
            factor = None  # map_Kd without Kd: the texture is the colour (trimesh would put its grey default there)
        factor = np.ones(3, np.float32) if factor is None else _unit(factor)
        vertex = visual.vertex_attributes.get("color")
        vertex = None if vertex is None or len(vertex) != len(vertices) else _unit(vertex)
        if image is not None and visual.uv is not None and len(visual.uv) == len(vertices):
            texture = from_pil(image)[0].numpy()
            part.tile = (encode(srgb_to_linear(texture) * factor) if gltf else texture * factor).astype(np.float32)
            part.uvs = np.asarray(visual.uv, dtype=np.float64)
            part.colours = None if vertex is None else encode(vertex)
        else:
            part.colours = encode(np.broadcast_to(factor, vertices.shape) * (1 if vertex is None else vertex))
    elif visual.kind == "vertex":
        part.colours = encode(_unit(visual.vertex_colors))  # glTF COLOR_0 is linear; other formats display values
    elif visual.kind == "face":  # per-face colours: each face gets its own three vertices
        part.colours = np.repeat(_unit(visual.face_colors), 3, axis=0)
        part.vertices, part.faces = vertices[faces].reshape(-1, 3), np.arange(faces.size).reshape(-1, 3)
    if part.colours is not None:
        part.colours = np.ascontiguousarray(part.colours, dtype=np.float32)
    return part


def _wrap_into_unit_square(part: _Part, name: str) -> None:
    """UVs of a repeating texture brought into 0..1 face by face (faces get their own vertices when needed)."""
    if part.uvs.min() >= 0 and part.uvs.max() <= 1:
        return
    corners = part.uvs[part.faces]  # [F, 3, 2]
    corners = corners - np.floor(corners.min(axis=1, keepdims=True))
    if corners.max() > 1:
        log.warning("GeoDream: %s: some faces span more than one repeat of their texture; read clamped", name)
    flat = part.faces.reshape(-1)
    part.vertices, part.uvs = part.vertices[flat], corners.reshape(-1, 2).clip(0, 1)
    part.colours = None if part.colours is None else part.colours[flat]
    part.faces = np.arange(flat.size).reshape(-1, 3)


def _pack(tiles: list[np.ndarray]):
    """Tiles [h, w, 3] in a grid -> (atlas [H, W, 3], per tile (row, column, height, width) of its texels).
    One tile is the atlas itself; several are shrunk to fit ATLAS_SIZE and edge-padded by TILE_PAD."""
    if len(tiles) == 1:
        return tiles[0], [(0, 0, *tiles[0].shape[:2])]
    from PIL import Image

    columns = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    largest = ATLAS_SIZE // columns - 2 * TILE_PAD
    shrunk = []
    for tile in tiles:
        scale = min(1.0, largest / max(tile.shape[:2]))
        if scale < 1:
            size = (max(1, round(tile.shape[1] * scale)), max(1, round(tile.shape[0] * scale)))
            tile = np.stack([np.asarray(Image.fromarray(tile[..., c]).resize(size, Image.BILINEAR)) for c in range(3)], -1)
        shrunk.append(tile)
    cell_h = max(t.shape[0] for t in shrunk) + 2 * TILE_PAD
    cell_w = max(t.shape[1] for t in shrunk) + 2 * TILE_PAD
    atlas = np.zeros((rows * cell_h, columns * cell_w, 3), np.float32)
    rects = []
    for index, tile in enumerate(shrunk):
        top, left = (index // columns) * cell_h, (index % columns) * cell_w
        h, w = tile.shape[:2]
        atlas[top:top + h + 2 * TILE_PAD, left:left + w + 2 * TILE_PAD] = np.pad(
            tile, ((TILE_PAD, TILE_PAD), (TILE_PAD, TILE_PAD), (0, 0)), mode="edge")
        rects.append((top + TILE_PAD, left + TILE_PAD, h, w))
    return atlas, rects


def _merge(parts: list[_Part], name: str):
    """(vertices [V, 3], faces [F, 3], uvs, texture, vertex colours) of all parts in one mesh."""
    textured = [p for p in parts if p.tile is not None]
    if textured and len(textured) < len(parts):
        for part in parts:
            if part.tile is None:  # a plain part reads a white tile, its colour a per-vertex multiplier
                part.tile, part.uvs = np.ones((4, 4, 3), np.float32), np.full((len(part.vertices), 2), 0.5)
    for part in textured:
        _wrap_into_unit_square(part, name)
    atlas, rects = _pack([p.tile for p in parts]) if textured else (None, [])
    uvs = []
    for part, (row, column, h, w) in zip(parts, rects):
        height, width = atlas.shape[:2]
        uvs.append(np.stack([(column + part.uvs[:, 0] * w) / width,
                             1 - (row + (1 - part.uvs[:, 1]) * h) / height], axis=-1))
    if any(p.colours is not None for p in parts):
        default = 1.0 if textured else NO_COLOUR
        colours = np.concatenate([p.colours if p.colours is not None else np.full((len(p.vertices), 3), default,
                                                                                  np.float32) for p in parts])
    else:
        colours = None
    offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
    faces = np.concatenate([p.faces + offset for p, offset in zip(parts, offsets)])
    return (np.concatenate([p.vertices for p in parts]), faces, np.concatenate(uvs) if uvs else None, atlas, colours)


def load_mesh(path, y_up: bool = True) -> TexturedMesh:
    """Every triangle part of the file at ``path``, placed by its node transforms, with its colours (module doc).

    ``y_up``: the file is in glTF's frame (the usual case) and is turned into ours; else it is already Z up.
    Duplicate and zero-area faces are dropped (mesh_repair). GeoDreamError naming the file when it cannot be read,
    has an unknown suffix, holds no triangles or has non-finite vertices."""
    import trimesh

    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise GeoDreamError(f"GeoDream: cannot read '{path.name}'; mesh files must be one of {', '.join(SUFFIXES)}.")
    if not path.is_file():
        raise GeoDreamError(f"GeoDream: no mesh file at '{path}'; put it into the input folder.")
    try:
        scene = trimesh.load(path, force="scene", process=False)
    except Exception as err:  # trimesh raises whatever its parsers raise on a damaged file
        raise GeoDreamError(f"GeoDream: could not read the mesh file '{path}' ({type(err).__name__}: {err}); it is "
                            "damaged or not what its suffix says: export it again (GLB is the safest choice).") from err
    gltf = path.suffix.lower() in (".glb", ".gltf")
    parts = []
    for node in scene.graph.nodes_geometry:
        transform, geometry_name = scene.graph[node]
        geometry = scene.geometry[geometry_name]
        if isinstance(geometry, trimesh.Trimesh) and len(geometry.faces):
            parts.append(_part(geometry, np.asarray(transform, dtype=np.float64), gltf))
    if not parts:
        raise GeoDreamError(f"GeoDream: '{path.name}' holds no triangles (only points, lines or nothing).")
    vertices, faces, uvs, texture, colours = _merge(parts, path.name)
    vertices = torch.from_numpy(vertices).float()
    faces = clean_faces(vertices, torch.from_numpy(faces), f"'{path.name}'")
    as_tensor = lambda a: None if a is None else torch.from_numpy(np.ascontiguousarray(a)).float()  # noqa: E731
    return TexturedMesh(from_gltf_frame(vertices) if y_up else vertices, faces, uvs=as_tensor(uvs),
                        texture=as_tensor(texture), vertex_colors=as_tensor(colours))
