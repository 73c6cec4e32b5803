"""Objects whose answer is known, made in code: a signed distance (analytic CSG of boxes and cylinders), a colour
per surface region, a mesh (marching cubes of the SDF, so the mesh *is* the truth every measure compares with) and
ground-truth renders through the pack's rasteriser. They stand in for the diffusion models when the machinery has to
be measured (bench/known_shape.py, tests/test_known_shape.py, the known-object demo template).

Frame: cameras.py's (Z up, front +X, left +Y), lengths in world units; every object fits a ball of radius ~0.5
around the origin, well inside the prior's box (release_frame.BBOX, half side 1.34). The three objects and the mistake each
one shows:

- ``block``: a box with a different colour on each of its six sides and a cyan handle on its left (+Y) near the front
  top -- a mirrored, rotated or upside-down result, or swapped colour channels, all differ from it.
- ``plate``: a square plate 0.054 thick (2 % of the prior's box), a round hole off centre: thin parts (free-space
  skipping, DMTet's resolution).
- ``cup``: an open cylinder with a deep cavity: a concavity that silhouettes (a visual hull) cannot see.

Renders (``render_truth``) are [N, H, W, C] like neus_renderer's: colour over a background, the mask, and world
normals of the flat faces; ``normal_image`` is the geometry pass's picture of them (mesh_render.MeshRenderer.normals).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .cameras import Cameras
from .mesh.mesh_render import MeshRenderer
from .mesh.rasterizer import Rasterizer, clip_positions
from .mesh.textured_mesh import TexturedMesh
from .mesh_metrics import sample_textured

PLATE_THICKNESS = 0.054  # 2 % of the prior's box side (2 x release_frame.SCALE = 2.68)

# The block's side colours, by the outward axis (chosen so that any swap of two channels changes each of them).
BLOCK_COLOURS = {"+x": (0.85, 0.10, 0.10), "-x": (0.10, 0.65, 0.20), "+y": (0.15, 0.25, 0.90),
                 "-y": (0.90, 0.80, 0.10), "+z": (0.95, 0.55, 0.15), "-z": (0.55, 0.10, 0.60),
                 "handle": (0.10, 0.80, 0.80)}


def _box(p: torch.Tensor, centre, half) -> torch.Tensor:
    """Exact SDF of an axis-aligned box."""
    q = (p - torch.tensor(centre, dtype=p.dtype)).abs() - torch.tensor(half, dtype=p.dtype)
    return q.clamp_min(0).norm(dim=-1) + q.amax(-1).clamp_max(0)


def _cylinder_z(p: torch.Tensor, centre, radius: float, half_height: float) -> torch.Tensor:
    """Exact SDF of a cylinder along Z."""
    c = torch.tensor(centre, dtype=p.dtype)
    d = torch.stack([(p[:, :2] - c[:2]).norm(dim=-1) - radius, (p[:, 2] - c[2]).abs() - half_height], dim=-1)
    return d.clamp_min(0).norm(dim=-1) + d.amax(-1).clamp_max(0)


def _axis_colour(normals: torch.Tensor, table: dict) -> torch.Tensor:
    """Colour of the dominant signed axis of each normal [P, 3] -> [P, 3]."""
    names = ["+x", "-x", "+y", "-y", "+z", "-z"]
    palette = torch.tensor([table[n] for n in names], dtype=normals.dtype)
    k = normals.abs().argmax(-1)
    sign = torch.gather(normals, 1, k[:, None])[:, 0] < 0
    return palette[2 * k + sign.long()]


# --- the three objects ---------------------------------------------------------------------------------------------
def _block_sdf(p):
    body = _box(p, (0.0, 0.0, 0.0), (0.34, 0.26, 0.22))
    handle = _box(p, (0.12, 0.33, 0.08), (0.08, 0.08, 0.08))  # on the left (+Y), front (+X), upper (+Z) part
    return torch.minimum(body, handle)


def _block_colour(p, n):
    colour = _axis_colour(n, BLOCK_COLOURS)
    on_handle = p[:, 1] > 0.26 + 1e-3
    return torch.where(on_handle[:, None], torch.tensor(BLOCK_COLOURS["handle"], dtype=p.dtype), colour)


def _plate_sdf(p):
    slab = _box(p, (0.0, 0.0, 0.0), (0.42, 0.42, PLATE_THICKNESS / 2))
    hole = _cylinder_z(p, (0.16, 0.14, 0.0), 0.11, 1.0)
    return torch.maximum(slab, -hole)


def _plate_colour(p, n):
    top = torch.tensor((0.95, 0.60, 0.20), dtype=p.dtype)
    bottom = torch.tensor((0.20, 0.35, 0.85), dtype=p.dtype)
    rim = torch.tensor((0.30, 0.75, 0.30), dtype=p.dtype)
    colour = torch.where((n[:, 2] > 0)[:, None], top, bottom)
    colour = torch.where((n[:, 2].abs() < 0.7)[:, None], rim, colour)
    # A red stripe along the front (+X) edge of the top, so that front/back and up/down show in colour too.
    stripe = (p[:, 0] > 0.30) & (n[:, 2] > 0.7)
    return torch.where(stripe[:, None], torch.tensor((0.85, 0.10, 0.10), dtype=p.dtype), colour)


def _cup_sdf(p):
    outer = _cylinder_z(p, (0.0, 0.0, 0.0), 0.30, 0.30)
    cavity = _cylinder_z(p, (0.0, 0.0, 0.36), 0.22, 0.50)  # open at the top, floor at z = -0.14
    return torch.maximum(outer, -cavity)


def _cup_colour(p, n):
    outside = torch.tensor((0.15, 0.55, 0.75), dtype=p.dtype)
    inside = torch.tensor((0.95, 0.65, 0.20), dtype=p.dtype)
    radius = p[:, :2].norm(dim=-1)
    colour = torch.where(((radius < 0.26) & (p[:, 2] > -0.14 - 1e-3))[:, None], inside, outside)
    front = (p[:, 0] > 0.2) & (p[:, 1].abs() < 0.08) & (radius > 0.26)  # a red band on the front (+X)
    return torch.where(front[:, None], torch.tensor((0.85, 0.10, 0.10), dtype=p.dtype), colour)


@dataclass
class KnownObject:
    """A known object. ``vertices`` [3F, 3] / ``faces`` [F, 3] (each face its own three corners, so normals and
    colours are flat per face, as the analytic object has them), ``face_colors`` [F, 3] in 0..1."""

    name: str
    sdf: Callable[[torch.Tensor], torch.Tensor]  # world points [P, 3] -> [P], negative inside
    colour: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (points [P, 3], normals [P, 3]) -> [P, 3]
    vertices: torch.Tensor
    faces: torch.Tensor
    face_colors: torch.Tensor

    @property
    def face_normals(self) -> torch.Tensor:
        """[F, 3] outward unit normals (faces are counter-clockwise seen from outside)."""
        a, b, c = (self.vertices[self.faces[:, k]] for k in range(3))
        return F.normalize(torch.linalg.cross(b - a, c - a, dim=-1), dim=-1)

    @property
    def diagonal(self) -> float:
        """The length of the diagonal of the object's bounding box (the unit of the Chamfer distance and F-score)."""
        return float((self.vertices.amax(0) - self.vertices.amin(0)).norm())

    def sample_surface(self, count: int, seed: int = 0):
        """Area-uniform points [count, 3] on the mesh, their face normals [count, 3] and colours [count, 3]."""
        colours = self.face_colors.repeat_interleave(3, dim=0)  # each face has its own three corners
        return sample_textured(TexturedMesh(self.vertices, self.faces, vertex_colors=colours), count, seed)


OBJECTS = {"block": (_block_sdf, _block_colour), "plate": (_plate_sdf, _plate_colour), "cup": (_cup_sdf, _cup_colour)}


def sdf_normals(sdf, points: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Unit SDF gradients [P, 3] by central differences."""
    offsets = eps * torch.eye(3, dtype=points.dtype)
    grad = torch.stack([sdf(points + o) - sdf(points - o) for o in offsets], dim=-1)
    return F.normalize(grad, dim=-1)


def make_object(name: str, resolution: int = 96) -> KnownObject:
    """The object ``name`` (one of OBJECTS) meshed by marching cubes on a ``resolution``^3 grid over [-0.6, 0.6]^3.
    Faces face outwards (counter-clockwise seen from outside); colours are the analytic ones at face centres.
    ValueError for an unknown name."""
    from skimage.measure import marching_cubes

    if name not in OBJECTS:
        raise ValueError(f"GeoDream: unknown known object {name!r}; expected one of {sorted(OBJECTS)}")
    sdf, colour = OBJECTS[name]
    axis = torch.linspace(-0.6, 0.6, resolution, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    values = sdf(grid).reshape(resolution, resolution, resolution).numpy()
    spacing = float(axis[1] - axis[0])
    verts, faces, _, _ = marching_cubes(values, 0.0, spacing=(spacing,) * 3)
    verts = torch.from_numpy(verts.copy()) - 0.6
    faces = torch.from_numpy(faces.astype(np.int64))
    corners = verts[faces]  # [F, 3, 3]
    normal = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0], dim=-1)
    centre = corners.mean(1)
    keep = normal.norm(dim=-1) > 1e-12
    corners, normal, centre = corners[keep], normal[keep], centre[keep]
    # skimage's winding depends on the axis order; make every face agree with the SDF's outward gradient.
    outward = sdf_normals(sdf, centre)
    inward = (normal * outward).sum(-1) < 0
    corners[inward] = corners[inward].flip(1)
    face_colors = colour(centre, outward).clamp(0, 1)
    count = corners.shape[0]
    return KnownObject(name, lambda p: sdf(p.double()).to(p.dtype), colour,
                       corners.reshape(-1, 3).float(), torch.arange(3 * count).reshape(count, 3),
                       face_colors.float())


# --- ground-truth renders ------------------------------------------------------------------------------------------
@torch.no_grad()
def render_truth(obj: KnownObject, cameras: Cameras, size: int, background=(1.0, 1.0, 1.0),
                 rasterizer: Rasterizer | None = None) -> dict:
    """The object seen by ``cameras`` at ``size`` x ``size``: ``rgb`` [N, H, W, 3] over ``background`` (RGB in 0..1),
    ``mask`` [N, H, W] (1 on the object), ``normal`` [N, H, W, 3] world normals (0 off the object), ``depth``
    [N, H, W] (distance along the view axis, 0 off the object)."""
    rasterizer = rasterizer or Rasterizer(obj.vertices.device)
    clip = clip_positions(obj.vertices, cameras.to(obj.vertices.device), size, size)
    rast = rasterizer.rasterize(clip, obj.faces, size, size)
    face = (rast[..., 3].long() - 1).clamp_min(0)
    mask = (rast[..., 3] > 0).float()
    rgb = torch.lerp(torch.tensor(background, dtype=torch.float32).expand_as(rast[..., :3]),
                     obj.face_colors[face], mask[..., None])
    normal = obj.face_normals[face] * mask[..., None]
    points = rasterizer.interpolate(obj.vertices, rast, obj.faces)
    depth = (points - cameras.position[:, None, None]).mul(-cameras.c2w[:, None, None, :3, 2]).sum(-1) * mask
    return {"rgb": rgb, "mask": mask, "normal": normal, "depth": depth}


def normal_image(obj: KnownObject, cameras: Cameras, size: int, renderer: MeshRenderer | None = None) -> torch.Tensor:
    """[N, 3, H, W]: the object's flat normals as the DMTet geometry pass draws a mesh's (MeshRenderer.normals:
    release-frame colours over black); its corners are per face, so its vertex normals are the face normals."""
    renderer = renderer or MeshRenderer(obj.vertices.device)
    with torch.no_grad():
        return renderer.normals(obj.vertices, obj.faces, cameras, size)


def view_cameras(recipe: str) -> Cameras:
    """The cameras of a multi-view recipe: 'mvdream-4view', 'zero123plus-v1.2', 'zero123plus-v1.1' (cameras.RIGS) or
    'release-14' (the release's 14 views: MVDream's 4 at the pose table's elevation 0 and the 10 Zero123++ v1.1 tiles
    it keeps, multiview/view_recipe.py). ValueError for another name."""
    from .cameras import RIGS, mvdream_rig
    from .multiview.view_recipe import RECIPES, expanded_cameras, release_source_cameras, tile_selection

    if recipe == "release-14":
        source = release_source_cameras(mvdream_rig())
        return expanded_cameras(source, tile_selection(RECIPES[0], len(source)))
    if recipe not in RIGS:
        raise ValueError(f"GeoDream: unknown view recipe {recipe!r}; expected release-14 or one of {sorted(RIGS)}")
    return RIGS[recipe](15.0)


VIEW_RECIPES = ("mvdream-4view", "zero123plus-v1.2", "zero123plus-v1.1", "release-14")


def held_out_cameras(count: int = 6, distance: float = 1.6, fovy_deg: float = 45.0) -> Cameras:
    """Cameras no stage trains at: azimuths offset by 20 deg from the recipes' and alternating elevations 25/-10."""
    azimuths = [20.0 + 360.0 * k / count for k in range(count)]
    elevations = [25.0 if k % 2 == 0 else -10.0 for k in range(count)]
    return Cameras.from_spherical(elevations, azimuths, distance, fovy_deg, "held-out")


def posed_views(obj: KnownObject, cameras: Cameras, size: int) -> torch.Tensor:
    """IMAGE [N, size, size, 3]: the object on white, as Build Cost Volume and the start volume take views."""
    return render_truth(obj, cameras, size)["rgb"]
