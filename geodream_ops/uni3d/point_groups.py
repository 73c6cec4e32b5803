"""Local patches of a point cloud, as Uni3D (after Point-BERT) cuts them: farthest point sampling picks the patch
centres, the k nearest points around each centre form the patch. Plain PyTorch, so no pointnet2 CUDA extension is
needed; FPS follows pointnet2's rule (each new centre is the point farthest from all centres chosen so far)."""
from __future__ import annotations

import torch


def farthest_point_sample(xyz: torch.Tensor, count: int) -> torch.Tensor:
    """Indices [B, count] of ``count`` centres picked from ``xyz`` [B, N, 3].

    pointnet2 starts from point 0, which makes the choice depend on the order of the points; we start from the point
    farthest from the centroid instead, so the same cloud in any order gives the same centres (in the same order)."""
    batch, num_points, _ = xyz.shape
    if not 0 < count <= num_points:
        raise ValueError(f"cannot pick {count} centres from {num_points} points")
    xyz = xyz.float()
    rows = torch.arange(batch, device=xyz.device)
    chosen = torch.empty(batch, count, dtype=torch.long, device=xyz.device)
    nearest = torch.full((batch, num_points), float("inf"), device=xyz.device)
    farthest = (xyz - xyz.mean(dim=1, keepdim=True)).square().sum(-1).argmax(-1)
    for step in range(count):
        chosen[:, step] = farthest
        centre = xyz[rows, farthest]
        nearest = torch.minimum(nearest, (xyz - centre[:, None]).square().sum(-1))
        farthest = nearest.argmax(-1)
    return chosen


def gather(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values`` [B, N, C] at ``index`` [B, ...] -> [B, ..., C]."""
    rows = torch.arange(values.shape[0], device=values.device).view(-1, *([1] * (index.ndim - 1)))
    return values[rows, index]


def knn(xyz: torch.Tensor, centres: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [B, G, k] of the ``k`` points of ``xyz`` [B, N, 3] nearest to each of ``centres`` [B, G, 3]."""
    if k > xyz.shape[1]:
        raise ValueError(f"cannot take {k} neighbours from {xyz.shape[1]} points")
    distance = torch.cdist(centres.float(), xyz.float(), compute_mode="donot_use_mm_for_euclid_dist")
    return distance.topk(k, dim=-1, largest=False).indices
