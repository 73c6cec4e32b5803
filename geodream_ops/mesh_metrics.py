"""How close a reconstructed mesh is to a known one (bench/known_shape.py, tests/test_known_shape.py).

On area-uniform surface samples of both meshes (points, normals, colours):
- Chamfer-L1: the mean of the two directions' mean nearest-neighbour distances, in % of ``diagonal`` (the truth's
  bounding-box diagonal);
- F-score at tau (Tatarchenko et al. 2019): 2PR / (P + R) with P the share of the result's samples within tau of the
  truth and R the share of the truth's within tau of the result, tau in % of the diagonal;
- normal consistency: the mean cosine between each sample's normal and its nearest neighbour's, both directions
  averaged -- signed, so faces that point inwards lower it (the usual absolute value would not see them);
- colour error: the mean absolute RGB difference between each result sample and its nearest truth sample;
- the frame check: the result is nearer (Chamfer + colour error) to the truth than to the truth mirrored along any
  axis or turned the ways frames get confused (90 deg about x: Z up read as Y up; 180 deg about the up axis: front
  and back), among those variants that differ from the truth itself (a symmetric object cannot tell).
Held-out PSNR: ``render_textured`` draws a UV-textured mesh (as a GLB holds it) with the pack's rasteriser."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .cameras import Cameras
from .mesh.rasterizer import Rasterizer, clip_positions
from .mesh.textured_mesh import TexturedMesh
from .uni3d.point_sampling import sample_faces, sample_texture

# Variants of a frame the check tells apart: (name, 3x3 matrix applied to points in the frame the samples are in).
# Written for glTF's frame (Y up, front +Z): "turn-up" is a Z-up / Y-up confusion, "turn-front" front/back.
FRAME_VARIANTS = {
    "mirror-x": np.diag([-1.0, 1.0, 1.0]), "mirror-y": np.diag([1.0, -1.0, 1.0]), "mirror-z": np.diag([1.0, 1.0, -1.0]),
    "turn-up": np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]]), "turn-front": np.diag([-1.0, 1.0, -1.0]),
}
SYMMETRY_MARGIN = 0.5  # a variant counts when it is at least this far (in % of the diagonal, + colour) from the truth


def sample_textured(mesh: TexturedMesh, count: int, seed: int = 0):
    """Area-uniform samples of a TexturedMesh: points [count, 3], face normals [count, 3], colours [count, 3] (the
    texture bilinearly at the interpolated UV, times vertex colours where both exist; grey without either), drawn as
    uni3d/point_sampling.py draws faces and reads textures."""
    generator = torch.Generator().manual_seed(seed)
    v, f = mesh.vertices.double(), mesh.faces.long()
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    cross = torch.linalg.cross(b - a, c - a, dim=-1)
    face = sample_faces(0.5 * cross.norm(dim=-1), count, generator)
    r1, r2 = torch.rand(2, count, 1, generator=generator, dtype=torch.float64)
    root = r1.sqrt()
    bary = torch.cat([1 - root, root * (1 - r2), root * r2], dim=-1)  # uniform over each triangle

    def interpolate(per_vertex):
        return (bary[..., None] * per_vertex.double()[f[face]]).sum(1)

    points, normals = interpolate(v), F.normalize(cross[face], dim=-1)
    colours = torch.full((count, 3), 0.5, dtype=torch.float64)
    if mesh.texture is not None and mesh.uvs is not None:
        colours = sample_texture(mesh.texture, interpolate(mesh.uvs)).double()
    if mesh.vertex_colors is not None:
        vertex = interpolate(mesh.vertex_colors)
        colours = colours * vertex if mesh.texture is not None else vertex
    return points.float(), normals.float(), colours.float()


def _nearest(query: np.ndarray, data: np.ndarray):
    from scipy.spatial import cKDTree

    distance, index = cKDTree(data).query(query, k=1)
    return distance, index


def compare(result, truth, diagonal: float, taus=(1.0, 2.0)) -> dict:
    """Metrics (module doc) between two sample sets, each (points [P, 3], normals [P, 3], colours [P, 3])."""
    rp, rn, rc = (np.asarray(x, dtype=np.float64) for x in result)
    tp, tn, tc = (np.asarray(x, dtype=np.float64) for x in truth)
    d_rt, i_rt = _nearest(rp, tp)  # result -> truth
    d_tr, i_tr = _nearest(tp, rp)
    out = {"chamfer_l1_pct": 100 * 0.5 * (d_rt.mean() + d_tr.mean()) / diagonal}
    for tau in taus:
        precision = (d_rt <= tau / 100 * diagonal).mean()
        recall = (d_tr <= tau / 100 * diagonal).mean()
        out[f"fscore_{tau:g}pct"] = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    out["normal_consistency"] = 0.5 * ((rn * tn[i_rt]).sum(-1).mean() + (tn * rn[i_tr]).sum(-1).mean())
    out["colour_error"] = np.abs(rc - tc[i_rt]).mean()
    return out


def frame_check(result, truth, diagonal: float) -> dict:
    """{'passed': bool, 'distance': d(result, truth), variant name: d(result, variant)} with d = Chamfer-L1 (% of the
    diagonal) + 100 x colour error; only variants the truth is not symmetric under are listed and checked."""
    def distance(a, b):
        m = compare(a, b, diagonal, taus=())
        return m["chamfer_l1_pct"] + 100 * m["colour_error"]

    tp, tn, tc = (np.asarray(x, dtype=np.float64) for x in truth)
    own = distance(result, truth)
    out = {"distance": own}
    for name, matrix in FRAME_VARIANTS.items():
        variant = (tp @ matrix.T, tn @ matrix.T, tc)
        if distance(truth, variant) < SYMMETRY_MARGIN:
            continue
        out[name] = distance(result, variant)
    out["passed"] = all(own < v for k, v in out.items() if k != "distance")
    return out


def psnr(image: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR in dB of images in 0..1 (any equal shapes)."""
    mse = float(((image.float() - reference.float()) ** 2).mean())
    return math.inf if mse == 0 else -10 * math.log10(mse)


@torch.no_grad()
def render_textured(mesh: TexturedMesh, cameras: Cameras, size: int, background=(1.0, 1.0, 1.0),
                    rasterizer: Rasterizer | None = None) -> torch.Tensor:
    """[N, H, W, 3] of a TexturedMesh (our frame) seen by ``cameras``: its texture at the interpolated UVs (vertex
    colours without a texture, grey without either) over ``background``."""
    rasterizer = rasterizer or Rasterizer(mesh.vertices.device)
    faces = mesh.faces.long()
    clip = clip_positions(mesh.vertices.float(), cameras.to(mesh.vertices.device), size, size)
    rast = rasterizer.rasterize(clip, faces, size, size)
    hit = (rast[..., 3] > 0)[..., None].float()
    if mesh.texture is not None and mesh.uvs is not None:
        uv = rasterizer.interpolate(mesh.uvs.float(), rast, faces)
        colour = sample_texture(mesh.texture, uv.reshape(-1, 2)).reshape(*uv.shape[:-1], 3)
    elif mesh.vertex_colors is not None:
        colour = rasterizer.interpolate(mesh.vertex_colors.float(), rast, faces)
    else:
        colour = torch.full_like(rast[..., :3], 0.5)
    return torch.lerp(torch.tensor(background).expand_as(colour), colour, hit)
