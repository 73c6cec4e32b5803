"""Start volumes that need no weights: a cost volume V over the prior's box whose SDF is a sphere or the visual hull
of posed views, for runs that refine without the SparseNeuS prior (the known-object demo, bench/known_shape.py).

Two decoders read it (CostVolume's decoder contract: (points [P, 3], V(x) [P, C]) -> (sdf [P], feature)):
- ``PlainDecoder``: s(x) = V_0(x), the volume's first channel is the signed distance itself (world units);
- the release's f_g (geometry_decoder.GeometryDecoder, any weights, frozen): ``fit_volume`` finds a 16-channel V
  for which f_g(E(x), V(x)) approximates a given SDF, as the refinement then optimises V through the frozen f_g.

The visual hull uses Build Cost Volume's camera handling (voxel_projection.project_voxels / sample_views on views
matted on white), so a camera that is read in another frame than the renderer's gives a wrong hull, not a quiet one."""
from __future__ import annotations

import torch
from torch import nn

from ..cameras import Cameras
from . import release_frame
from .cost_volume import CostVolume
from .voxel_projection import project_voxels, sample_views

HULL_THRESHOLD = 0.98  # a view's pixel belongs to the object where its darkest channel is below this (white = 1)
DEFAULT_INV_S = 64.0  # NeuS's sharpness for a weight-free start (1/s = 1.6 cm in a 1 m object); no release value


class PlainDecoder(nn.Module):
    """s(x) = V_0(x) (world units); the feature is the rest of V(x), [P, C - 1]. Has no weights."""

    def forward(self, points: torch.Tensor, features: torch.Tensor):
        """points [P, 3] (unused), V(x) [P, C] -> (s [P], feature [P, C - 1])."""
        return features[:, 0], features[:, 1:]


def grid_points(bbox: torch.Tensor, resolution: int) -> torch.Tensor:
    """[R, R, R, 3] world points of the volume's voxels, laid out [z, y, x] (CostVolume's layout, corners on the box's
    faces as grid_sample's align_corners=True reads them)."""
    lo, hi = bbox[0].float(), bbox[1].float()
    axes = [torch.linspace(float(lo[k]), float(hi[k]), resolution) for k in (2, 1, 0)]
    z, y, x = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def plain_cost_volume(sdf: torch.Tensor, bbox: torch.Tensor, inv_s: float = DEFAULT_INV_S) -> CostVolume:
    """A cost volume with the plain decoder from SDF samples [R, R, R] on ``grid_points``."""
    return CostVolume(sdf.float()[None, None].contiguous(), PlainDecoder(), bbox.float(), inv_s)


def sphere_sdf(bbox: torch.Tensor, resolution: int, radius: float) -> torch.Tensor:
    """[R, R, R] signed distance to a sphere of ``radius`` (world units) around the origin."""
    return grid_points(bbox, resolution).norm(dim=-1) - radius


@torch.no_grad()
def hull_sdf(views: torch.Tensor, cameras: Cameras, bbox: torch.Tensor, resolution: int) -> torch.Tensor:
    """[R, R, R] signed distance to the visual hull of ``views`` [N, H, W, 3] (on white) seen by ``cameras``: a voxel
    is inside where every view sees the object there. ValueError when nothing is inside."""
    from scipy.ndimage import distance_transform_edt

    points = grid_points(bbox, resolution).reshape(-1, 3)
    _, height, width, _ = views.shape
    masks = (views[..., :3].amin(-1) < HULL_THRESHOLD).float()[:, None]  # [N, 1, H, W]
    pixels, seen = project_voxels(points, cameras, height, width)
    on_object = sample_views(masks, pixels, seen)[..., 0] > 0.5  # [N, P]
    # Every view must see the voxel on the object: one outside a view's frame is carved too (the object is in every
    # view), else the rays through one silhouette would keep their whole length wherever the other views end.
    inside = (on_object & seen).all(0)
    if not inside.any():
        raise ValueError("GeoDream: the views' silhouettes share no voxel of the box: the cameras do not match the "
                         "views (or the views are blank); give each view the camera it was made with.")
    occupied = inside.reshape(resolution, resolution, resolution).numpy()
    voxel = ((bbox[1] - bbox[0]) / (resolution - 1)).flip(0).numpy()  # spacing along z, y, x
    outside_distance = distance_transform_edt(~occupied, sampling=voxel)
    inside_distance = distance_transform_edt(occupied, sampling=voxel)
    return torch.from_numpy(outside_distance - inside_distance).float()


def fit_volume(decoder: nn.Module, target: CostVolume, channels: int = 16, steps: int = 200, lr: float = 0.02,
               points_per_step: int = 1 << 13, seed: int = 0) -> CostVolume:
    """V [1, channels, R, R, R] (R: the target's) for which ``decoder`` (frozen) gives the target's SDF: Adam on an
    L1 loss at random points of the box, half of them within 0.1 of the target's surface. The decoder is frozen."""
    decoder = decoder.requires_grad_(False)
    resolution = target.volume.shape[-1]
    generator = torch.Generator().manual_seed(seed)
    volume = nn.Parameter(torch.zeros(1, channels, resolution, resolution, resolution))
    optimizer = torch.optim.Adam([volume], lr=lr)
    fitted = CostVolume(volume, decoder, target.bbox, target.inv_s)
    lo, hi = target.bbox[0], target.bbox[1]
    for _ in range(steps):
        points = lo + (hi - lo) * torch.rand(points_per_step, 3, generator=generator)
        with torch.no_grad():
            goal = target.sdf(points)[0]
        near = goal.abs() < 0.1
        weight = torch.where(near, 1.0 / near.float().mean().clamp_min(1e-3), 1.0)
        loss = (weight * (fitted.sdf(points)[0] - goal).abs()).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return CostVolume(volume.detach(), decoder, target.bbox, target.inv_s)


def release_box() -> torch.Tensor:
    """[2, 3] the prior's box in our frame (release_frame.BBOX): start volumes cover what a prior would."""
    return release_frame.BBOX.clone()
