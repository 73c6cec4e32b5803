"""Voxel centres seen from the views: projection with cameras.py, bilinear sampling of per-view feature maps.

Sampling follows the released SparseNeuS (ops/back_project.py), whose weights were trained with it: the projected
pixel coordinate u (pixel j's centre at j + 0.5, cameras.py's convention) is read at feature-map index u with
align_corners=True, and a sample counts as seen when 0 <= u <= W - 1, 0 <= v <= H - 1 and it lies in front of
the camera. Samples outside the image are masked, never clamped to the border."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..cameras import Cameras


def project_voxels(points: torch.Tensor, cameras: Cameras, height: int, width: int):
    """World points [P, 3] -> pixel coordinates [N, P, 2] and a seen mask [N, P]."""
    pixels, depth = cameras.project(points, height, width)
    inside = (pixels[..., 0] >= 0) & (pixels[..., 0] <= width - 1) & (pixels[..., 1] >= 0) & (pixels[..., 1] <= height - 1)
    return pixels, inside & (depth > 0)


def sample_views(feature_maps: torch.Tensor, pixels: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """Feature maps [N, C, H, W] at pixels [N, P, 2] -> [N, P, C]; unseen samples are zero."""
    _, _, height, width = feature_maps.shape
    scale = torch.tensor([2.0 / (width - 1), 2.0 / (height - 1)], device=pixels.device, dtype=pixels.dtype)
    grid = (pixels * scale - 1).unsqueeze(1).to(feature_maps.dtype)
    sampled = F.grid_sample(feature_maps, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return sampled[:, :, 0].transpose(1, 2) * seen.unsqueeze(-1)
