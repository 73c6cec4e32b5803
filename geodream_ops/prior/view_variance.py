"""The cost of the 3D prior: per voxel, the variance and the mean of the 2D features over the views that see it.

A voxel's cost depends only on the set of features of the views that see it: averages (not sums) make it
independent of how many views there are and of their order, and views that do not see the voxel are left out
(the release summed every view's sample but divided by the seeing views' count)."""
from __future__ import annotations

import torch


def variance_and_mean(features: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """features [N, P, C] sampled in N views, seen [N, P] bool -> [P, 2C]: population variance, then mean,
    over the views that see each voxel (as SparseNeuS's "variance_mean" cost). Voxels seen by no view get 0."""
    weight = seen.to(features.dtype).unsqueeze(-1)
    count = weight.sum(0).clamp_min(1.0)
    mean = (features * weight).sum(0) / count
    # Centred second moment rather than E[x^2] - E[x]^2: no cancellation when the views agree.
    variance = (weight * (features - mean) ** 2).sum(0) / count
    return torch.cat([variance, mean], dim=-1)
